"""Bridges between voxpipe and other voice frameworks (``pipecat``: Pipecat transports)."""
