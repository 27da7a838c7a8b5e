"""Tools an LLM may call: built-ins (hangup, transfer), HTTP requests and Python plugins."""
