"""Where call state lives between frames and across workers: memory or Redis."""
