"""Call records: calls, call_turns, call_tool_calls (monthly partitions on PostgreSQL), customers.

Revision ID: 0001
Revises:
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from voxpipe.records.models import Document, UTCDateTime
from voxpipe.records.partitions import create_ahead

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "calls",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("bot", sa.String(200), nullable=False),
        sa.Column("way_in", sa.String(20), nullable=False),
        sa.Column("caller_number", sa.String(80)),
        sa.Column("caller_name", sa.String(200)),
        sa.Column("ended_at", UTCDateTime()),
        sa.Column("duration_s", sa.Float()),
        sa.Column("outcome", sa.String(20)),
        sa.Column("transfer_target", sa.String(200)),
        sa.Column("trace_id", sa.String(32)),
        sa.Column("error", sa.Text()),
        sa.Column("recording", sa.Text()),
        sa.Column("context", Document),
        sa.PrimaryKeyConstraint("id", "started_at", name="pk_calls"),
        postgresql_partition_by="RANGE (started_at)",
    )
    op.create_index("idx_calls_caller_id", "calls", ["caller_number", "started_at"])
    op.create_index("idx_calls_started_at", "calls", ["started_at"])
    op.create_table(
        "call_turns",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("speaker", sa.String(10), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("heard_text", sa.Text()),
        sa.Column("latency_ms", sa.Float()),
        sa.PrimaryKeyConstraint("call_id", "turn_index", "started_at", name="pk_call_turns"),
        postgresql_partition_by="RANGE (started_at)",
    )
    op.create_index("idx_call_turns_call_id", "call_turns", ["call_id"])
    op.create_table(
        "call_tool_calls",
        sa.Column("call_id", sa.String(36), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("turn_index", sa.Integer(), nullable=False),
        sa.Column("tool", sa.String(200), nullable=False),
        sa.Column("arguments", Document, nullable=False),
        sa.Column("result", sa.Text(), nullable=False),
        sa.Column("duration_ms", sa.Float(), nullable=False),
        sa.Column("error", sa.Text()),
        sa.PrimaryKeyConstraint("call_id", "seq", "created_at", name="pk_call_tool_calls"),
        postgresql_partition_by="RANGE (created_at)",
    )
    op.create_index("idx_call_tool_calls_call_id", "call_tool_calls", ["call_id"])
    op.create_table(
        "customers",
        sa.Column("id", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("phone", sa.String(80), nullable=False),
        sa.Column("name", sa.String(200), nullable=False, server_default=""),
        sa.Column("data", Document, nullable=False, server_default=sa.text("'{}'")),
        sa.Column("created_at", UTCDateTime()),
        sa.Column("updated_at", UTCDateTime()),
    )
    op.create_index("idx_customers_phone", "customers", ["phone"], unique=True)
    bind = op.get_bind()
    if bind.dialect.name == "postgresql":
        create_ahead(bind, datetime.now(UTC).date(), months_ahead=2)


def downgrade() -> None:
    op.drop_index("idx_customers_phone", "customers")
    op.drop_table("customers")
    op.drop_index("idx_call_tool_calls_call_id", "call_tool_calls")
    op.drop_table("call_tool_calls")
    op.drop_index("idx_call_turns_call_id", "call_turns")
    op.drop_table("call_turns")
    op.drop_index("idx_calls_started_at", "calls")
    op.drop_index("idx_calls_caller_id", "calls")
    op.drop_table("calls")
