"""Every built-in processor type."""
