"""Call records: every call, its transcript and tool calls kept in a database, post-call hooks."""
