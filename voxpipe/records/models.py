"""The tables of call records, as SQLAlchemy 2 models (the migrations create them).

``calls`` has a row per call (its UUID, from Asterisk), ``call_turns`` a row per turn of its
dialogue, ``call_tool_calls`` a row per tool the LLM called, and ``customers`` the callers the
bot may recognise by their number. On PostgreSQL the first three are partitioned by month
(RANGE on ``started_at``, ``created_at``): their primary keys hold that column, and rows point
at their call by its UUID (no foreign key across partitions, so old months drop cleanly).
Times are stored in UTC.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import JSON, DateTime, Dialect, Float, Index, Integer, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import TypeDecorator

VERSION_TABLE = "voxpipe_schema_version"


class UTCDateTime(TypeDecorator[datetime]):
    """A timestamp in UTC, timezone-aware in Python on every database (SQLite keeps none)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


Document = JSON().with_variant(JSONB(), "postgresql")


class Base(DeclarativeBase):
    """The call records' tables."""


class CallRow(Base):
    """One call: who, when, how it came and how it ended."""

    __tablename__ = "calls"
    __table_args__ = (
        Index("idx_calls_caller_id", "caller_number", "started_at"),
        Index("idx_calls_started_at", "started_at"),
        {"postgresql_partition_by": "RANGE (started_at)"},
    )

    id: Mapped[str] = mapped_column(String(36), primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    bot: Mapped[str] = mapped_column(String(200))
    way_in: Mapped[str] = mapped_column(String(20))
    caller_number: Mapped[str | None] = mapped_column(String(80))
    caller_name: Mapped[str | None] = mapped_column(String(200))
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    duration_s: Mapped[float | None] = mapped_column(Float)
    outcome: Mapped[str | None] = mapped_column(String(20))
    transfer_target: Mapped[str | None] = mapped_column(String(200))
    trace_id: Mapped[str | None] = mapped_column(String(32))
    error: Mapped[str | None] = mapped_column(Text)
    recording: Mapped[str | None] = mapped_column(Text)
    context: Mapped[dict[str, Any] | None] = mapped_column(Document)


class TurnRow(Base):
    """One turn of a call's dialogue (``speaker``: caller, bot or dtmf)."""

    __tablename__ = "call_turns"
    __table_args__ = (
        Index("idx_call_turns_call_id", "call_id"),
        {"postgresql_partition_by": "RANGE (started_at)"},
    )

    call_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    turn_index: Mapped[int] = mapped_column(Integer, primary_key=True)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    speaker: Mapped[str] = mapped_column(String(10))
    text: Mapped[str] = mapped_column(Text)
    heard_text: Mapped[str | None] = mapped_column(Text)
    latency_ms: Mapped[float | None] = mapped_column(Float)


class ToolCallRow(Base):
    """One tool the LLM called during a call (``turn_index``: the turn it belongs to)."""

    __tablename__ = "call_tool_calls"
    __table_args__ = (
        Index("idx_call_tool_calls_call_id", "call_id"),
        {"postgresql_partition_by": "RANGE (created_at)"},
    )

    call_id: Mapped[str] = mapped_column(String(36), primary_key=True)
    seq: Mapped[int] = mapped_column(Integer, primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, primary_key=True)
    turn_index: Mapped[int] = mapped_column(Integer)
    tool: Mapped[str] = mapped_column(String(200))
    arguments: Mapped[dict[str, Any]] = mapped_column(Document)
    result: Mapped[str] = mapped_column(Text)
    duration_ms: Mapped[float] = mapped_column(Float)
    error: Mapped[str | None] = mapped_column(Text)


class CustomerRow(Base):
    """A caller the bot knows by phone number: a name and free-form data."""

    __tablename__ = "customers"
    __table_args__ = (Index("idx_customers_phone", "phone", unique=True),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    phone: Mapped[str] = mapped_column(String(80))
    name: Mapped[str] = mapped_column(String(200), default="")
    data: Mapped[dict[str, Any]] = mapped_column(Document, default=dict)
    created_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    updated_at: Mapped[datetime | None] = mapped_column(UTCDateTime)


PARTITIONED = {"calls": "started_at", "call_turns": "started_at", "call_tool_calls": "created_at"}
