"""voxpipe: telephone voice bots on Asterisk, declared in YAML."""

__version__ = "0.1.0"
