"""Reading call records back: the list of calls, and one call with its transcript.

``run-pipeline calls list|show`` and the HTTP API (``GET /calls/history``, ``GET /calls/{uuid}``)
use these; each gives plain JSON-ready data (times as ISO 8601 strings in UTC).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from voxpipe.records.models import CallRow, ToolCallRow, TurnRow

CALL_FIELDS = (
    "id",
    "bot",
    "way_in",
    "caller_number",
    "caller_name",
    "started_at",
    "ended_at",
    "duration_s",
    "outcome",
    "transfer_target",
    "trace_id",
    "error",
    "recording",
    "context",
)


def _plain(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def call_document(row: dict[str, Any]) -> dict[str, Any]:
    """A ``calls`` row as JSON-ready data, with ``uuid`` for its id."""
    document = {name: _plain(row.get(name)) for name in CALL_FIELDS}
    document["uuid"] = document.pop("id")
    return document


def turn_document(row: dict[str, Any]) -> dict[str, Any]:
    """A ``call_turns`` row as JSON-ready data."""
    return {
        "index": row["turn_index"],
        "speaker": row["speaker"],
        "text": row["text"],
        "heard_text": row.get("heard_text"),
        "started_at": _plain(row["started_at"]),
        "latency_ms": row.get("latency_ms"),
    }


def tool_document(row: dict[str, Any]) -> dict[str, Any]:
    """A ``call_tool_calls`` row as JSON-ready data."""
    return {
        "turn": row["turn_index"],
        "tool": row["tool"],
        "arguments": row["arguments"],
        "result": row["result"],
        "duration_ms": row["duration_ms"],
        "error": row.get("error"),
        "created_at": _plain(row["created_at"]),
    }


async def list_calls(
    engine: AsyncEngine,
    *,
    since: datetime | None = None,
    caller: str | None = None,
    outcome: str | None = None,
    limit: int = 100,
) -> list[dict[str, Any]]:
    """The newest calls first, filtered by start time, caller number and outcome."""
    query = select(CallRow.__table__).order_by(CallRow.started_at.desc()).limit(limit)
    if since is not None:
        query = query.where(CallRow.started_at >= since)
    if caller:
        query = query.where(CallRow.caller_number == caller)
    if outcome:
        query = query.where(CallRow.outcome == outcome)
    async with engine.connect() as conn:
        rows = (await conn.execute(query)).mappings().all()
    return [call_document(dict(row)) for row in rows]


async def get_call(engine: AsyncEngine, call_id: str) -> dict[str, Any] | None:
    """One call with its ``turns`` and ``tool_calls``, in order; ``None`` if unknown."""
    async with engine.connect() as conn:
        found = (
            (await conn.execute(select(CallRow.__table__).where(CallRow.id == call_id)))
            .mappings()
            .first()
        )
        if found is None:
            return None
        turns = (
            await conn.execute(
                select(TurnRow.__table__)
                .where(TurnRow.call_id == call_id)
                .order_by(TurnRow.started_at, TurnRow.turn_index)
            )
        ).mappings()
        tools = (
            await conn.execute(
                select(ToolCallRow.__table__)
                .where(ToolCallRow.call_id == call_id)
                .order_by(ToolCallRow.created_at, ToolCallRow.seq)
            )
        ).mappings()
        document = call_document(dict(found))
        document["turns"] = [turn_document(dict(row)) for row in turns]
        document["tool_calls"] = [tool_document(dict(row)) for row in tools]
    return document


def parse_since(text: str, now: datetime | None = None) -> datetime:
    """``--since``/``?since=``: an ISO date or time (UTC unless it says), or an age such as
    ``30m``, ``12h``, ``7d``; raises ``ValueError`` with what is accepted."""
    from datetime import UTC, timedelta

    text = text.strip()
    units = {"m": 60, "h": 3600, "d": 86400}
    if len(text) > 1 and text[-1] in units and text[:-1].isdigit():
        return (now or datetime.now(UTC)) - timedelta(seconds=int(text[:-1]) * units[text[-1]])
    try:
        when = datetime.fromisoformat(text)
    except ValueError:
        raise ValueError(
            f"{text!r} is not a time: give an ISO date or time (2026-11-25, "
            "2026-11-25T10:00) or an age (30m, 12h, 7d)"
        ) from None
    return when if when.tzinfo is not None else when.replace(tzinfo=UTC)
