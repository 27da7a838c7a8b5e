"""The engine: frames through processors, per-call tasks, the call, step settings."""
