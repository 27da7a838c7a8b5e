"""The engine: frames through processors, per-call tasks, YAML bots, the registry and the CLI."""
