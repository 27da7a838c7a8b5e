"""The application: YAML bots, the processor registry, serving calls, the CLI, schema and docs."""
