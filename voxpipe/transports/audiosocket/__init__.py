"""The AudioSocket transport: Asterisk calls in over TCP, one connection per call."""
