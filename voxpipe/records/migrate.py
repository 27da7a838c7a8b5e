"""Applying the call records' migrations (Alembic, shipped in ``voxpipe/records/migrations``).

``run-pipeline db upgrade`` and a bot with ``call_records.migrate: true`` call ``upgrade``;
the version is kept in the ``voxpipe_schema_version`` table, so the records can share a
database with another application's own Alembic history.
"""

from __future__ import annotations

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from voxpipe.records.models import VERSION_TABLE

SCRIPTS = "voxpipe.records:migrations"
# The advisory lock taken while migrating or making partitions (any number unique to voxpipe).
LOCK_KEY = 0x766F7870


def alembic_config(connection: Connection | None = None) -> Config:
    """Alembic's configuration for the packaged migrations, on ``connection``."""
    config = Config()
    config.set_main_option("script_location", SCRIPTS)
    config.attributes["connection"] = connection
    return config


def head() -> str:
    """The newest revision the package ships."""
    revision = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert revision is not None
    return revision


async def upgrade(engine: AsyncEngine, revision: str = "head") -> None:
    """Bring the database up to ``revision`` (the newest by default).

    On PostgreSQL an advisory lock makes workers starting together migrate one at a time.
    """
    async with engine.begin() as conn:
        await lock(conn)
        await conn.run_sync(lambda c: command.upgrade(alembic_config(c), revision))


async def lock(conn: AsyncConnection) -> None:
    """PostgreSQL: hold the records' schema lock until ``conn``'s transaction ends."""
    if conn.dialect.name == "postgresql":
        await conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": LOCK_KEY})


async def downgrade(engine: AsyncEngine, revision: str = "base") -> None:
    """Take the database back to ``revision`` (``base``: no call records tables at all)."""
    async with engine.begin() as conn:
        await conn.run_sync(lambda c: command.downgrade(alembic_config(c), revision))


async def current(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda c: MigrationContext.configure(
                c, opts={"version_table": VERSION_TABLE}
            ).get_current_revision()
        )
