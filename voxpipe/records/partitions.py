"""Keeping the records' tables the right size: monthly partitions ahead, old calls gone.

On PostgreSQL ``calls``, ``call_turns`` and ``call_tool_calls`` are partitioned by month:
``calls_y2026m11`` holds November 2026 (UTC). The bot makes the partitions of the current month
and ``months_ahead`` more itself (when it starts, then every hour), so rows always have a
home, and drops those whose whole month is older than ``keep_days``: no pg_partman, no cron.
On SQLite the rows older than ``keep_days`` are deleted instead.

These functions take a synchronous connection (``await conn.run_sync(upkeep, ...)``), so that
the migrations can use them too.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

from sqlalchemy import Connection, text

from voxpipe.records.models import PARTITIONED

log = logging.getLogger("voxpipe.records")

_NAME = re.compile(r"^(?P<table>[a-z_]+)_y(?P<year>\d{4})m(?P<month>\d{2})$")


@dataclass(frozen=True)
class Upkeep:
    """What one round of upkeep did."""

    created: list[str]
    dropped: list[str]
    deleted: int = 0


def month_start(day: date) -> date:
    """The first day of ``day``'s month."""
    return day.replace(day=1)


def next_month(first: date) -> date:
    """The first day of the month after ``first``'s."""
    return (first.replace(day=28) + timedelta(days=4)).replace(day=1)


def partition_name(table: str, first: date) -> str:
    """``calls_y2026m11``: the partition of ``table`` for the month starting ``first``."""
    return f"{table}_y{first.year:04d}m{first.month:02d}"


def partitions(conn: Connection) -> dict[str, list[str]]:
    """The monthly partitions of each partitioned table, by table, oldest first."""
    rows = conn.execute(
        text(
            "SELECT parent.relname, child.relname FROM pg_inherits "
            "JOIN pg_class parent ON parent.oid = pg_inherits.inhparent "
            "JOIN pg_class child ON child.oid = pg_inherits.inhrelid "
            "JOIN pg_namespace ns ON ns.oid = child.relnamespace "
            "WHERE ns.nspname = current_schema() AND parent.relname = ANY(:tables)"
        ),
        {"tables": list(PARTITIONED)},
    ).all()
    found: dict[str, list[str]] = {table: [] for table in PARTITIONED}
    for parent, child in rows:
        found[parent].append(child)
    return {table: sorted(names) for table, names in found.items()}


def create_ahead(conn: Connection, today: date, months_ahead: int) -> list[str]:
    """Make the partitions of ``today``'s month and ``months_ahead`` more; the new ones' names."""
    existing = {name for names in partitions(conn).values() for name in names}
    created: list[str] = []
    first = month_start(today)
    for _ in range(months_ahead + 1):
        following = next_month(first)
        for table in PARTITIONED:
            name = partition_name(table, first)
            if name in existing:
                continue
            conn.execute(
                text(
                    f'CREATE TABLE IF NOT EXISTS "{name}" PARTITION OF "{table}" '
                    f"FOR VALUES FROM ('{first.isoformat()} 00:00:00+00') "
                    f"TO ('{following.isoformat()} 00:00:00+00')"
                )
            )
            created.append(name)
        first = following
    return created


def drop_expired(conn: Connection, today: date, keep_days: int) -> list[str]:
    """Drop the partitions whose whole month ended more than ``keep_days`` before ``today``."""
    cutoff = today - timedelta(days=keep_days)
    dropped: list[str] = []
    for names in partitions(conn).values():
        for name in names:
            match = _NAME.match(name)
            if match is None:
                continue  # not one of ours (a partition made by hand)
            first = date(int(match["year"]), int(match["month"]), 1)
            if next_month(first) <= cutoff:
                conn.execute(text(f'DROP TABLE IF EXISTS "{name}"'))
                dropped.append(name)
    return dropped


def delete_expired(conn: Connection, now: datetime, keep_days: int) -> int:
    """SQLite: delete the calls (and their turns and tool calls) older than ``keep_days``."""
    cutoff = (now - timedelta(days=keep_days)).astimezone(UTC).replace(tzinfo=None)
    old = "(SELECT id FROM calls WHERE started_at < :cutoff)"
    conn.execute(text(f"DELETE FROM call_turns WHERE call_id IN {old}"), {"cutoff": cutoff})
    conn.execute(text(f"DELETE FROM call_tool_calls WHERE call_id IN {old}"), {"cutoff": cutoff})
    deleted = conn.execute(text("DELETE FROM calls WHERE started_at < :cutoff"), {"cutoff": cutoff})
    return int(deleted.rowcount or 0)


def upkeep(conn: Connection, now: datetime, keep_days: int, months_ahead: int) -> Upkeep:
    """One round: partitions ahead and expired ones dropped (PostgreSQL), or old rows deleted."""
    today = now.astimezone(UTC).date()
    if conn.dialect.name == "postgresql":
        done = Upkeep(create_ahead(conn, today, months_ahead), drop_expired(conn, today, keep_days))
    else:
        done = Upkeep([], [], delete_expired(conn, now, keep_days))
    if done.created or done.dropped or done.deleted:
        log.info(
            "call records upkeep: partitions made %s, dropped %s; %d old calls deleted",
            done.created or "none",
            done.dropped or "none",
            done.deleted,
        )
    return done
