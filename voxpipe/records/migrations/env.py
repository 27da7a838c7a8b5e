"""Alembic's environment for the call records: run on a connection the bot hands over.

``voxpipe.records.migrate`` runs the migrations on an open (async engine's) connection through
``config.attributes["connection"]``. Run by the ``alembic`` command instead (to write a new
revision), it connects to ``sqlalchemy.url`` itself.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection
from sqlalchemy.ext.asyncio import create_async_engine

from voxpipe.records.models import VERSION_TABLE, Base


def run_migrations(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )
    with context.begin_transaction():
        context.run_migrations()


async def run_connected(url: str) -> None:
    engine = create_async_engine(url)
    try:
        async with engine.begin() as connection:
            await connection.run_sync(run_migrations)
    finally:
        await engine.dispose()


if context.is_offline_mode():
    raise SystemExit("the call records' migrations run on a database connection only")
given = context.config.attributes.get("connection")
if given is not None:
    run_migrations(given)
else:
    asyncio.run(run_connected(context.config.get_main_option("sqlalchemy.url") or ""))
