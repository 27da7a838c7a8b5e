"""Transports that carry calls in and out of a pipeline."""
