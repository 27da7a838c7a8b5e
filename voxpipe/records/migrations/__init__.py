"""Alembic migrations of the call records' tables, shipped with the package."""
