"""One bot's call records: the database, the writer, the post-call hook and partition upkeep.

``Bot.prepare`` starts a ``CallRecords`` when the bot file has ``call_records:`` or a
``hooks.call_ended``, and keeps it in ``bot.shared["call_records"]`` (``records_of(ctx)``).
It is a ``voxpipe.events`` observer: it learns what happens in the bot's calls from the events
(a call started, a turn ended, a tool was called, the call ended with its outcome), never by
reaching into processors, and hands rows to the ``RecordWriter`` (a bounded queue, written in
batches) and the ended call's record to the ``HookSender``. Calls are told apart by bot name.

When the bot starts, the database is brought up to date (``migrate: true``) or checked: tables
missing or out of date stop the bot with a clear message, while a database that does not
answer lets it start degraded (records wait in memory; the upkeep task keeps trying). Every hour
the upkeep makes partitions ahead and drops (or deletes) what is past ``keep_days``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import event, select
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from voxpipe import events
from voxpipe.caller_context import Customer
from voxpipe.events import ToolUse, Turn
from voxpipe.logs import trace_of
from voxpipe.pipelines.settings import ProviderError
from voxpipe.records import migrate, queries
from voxpipe.records.audio import CallAudioRecorder
from voxpipe.records.hooks import HookSender
from voxpipe.records.models import CustomerRow
from voxpipe.records.partitions import upkeep
from voxpipe.records.writer import RecordWriter
from voxpipe.sessions.outcomes import ERROR, outcome_of

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.records.settings import CallRecordsSettings, HooksSettings

log = logging.getLogger("voxpipe.records")

SHARED_KEY = "call_records"
UPKEEP_EVERY_S = 3600.0
RETRY_EVERY_S = 30.0
DRAIN_S = 10.0


class SchemaError(Exception):
    """The database answers, but its tables are missing or out of date."""


def make_engine(url: str, timeout_s: float = 5.0) -> AsyncEngine:
    """An async engine for a records URL (SQLite files in WAL mode, so readers never block)."""
    if url.startswith("postgresql"):
        connect_args: dict[str, Any] = {
            "timeout": timeout_s,
            "command_timeout": timeout_s,
            "server_settings": {"application_name": "voxpipe"},
        }
    else:
        connect_args = {"timeout": timeout_s}
    engine = create_async_engine(url, connect_args=connect_args, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine.sync_engine, "connect")
        def _wal(dbapi_connection: Any, record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.close()

    return engine


def _when(unix: float) -> datetime:
    return datetime.fromtimestamp(unix, UTC)


@dataclass(eq=False)
class _CallLog:
    """What is gathered about one call while it lasts."""

    started_at: datetime
    recording: str | None = None
    speech_at: float | None = None
    turns: list[dict[str, Any]] = field(default_factory=list)
    tools: list[dict[str, Any]] = field(default_factory=list)


class CallRecords(events.Observer):
    """Records one bot's calls and sends its post-call hook."""

    def __init__(
        self, bot_name: str, settings: CallRecordsSettings | None, hooks: HooksSettings
    ) -> None:
        self.bot_name = bot_name
        self.settings = settings
        self.engine: AsyncEngine | None = None
        self.writer: RecordWriter | None = None
        self.hook = HookSender(hooks.call_ended) if hooks.call_ended is not None else None
        self.ready = False
        self._calls: dict[str, _CallLog] = {}
        self._recordings: dict[str, str] = {}
        self._audio: concurrent.futures.ThreadPoolExecutor | None = None
        self._upkeep: asyncio.Task[None] | None = None
        if settings is not None:
            self.engine = make_engine(settings.url.get_secret_value(), settings.timeout_s)
            self.writer = RecordWriter(
                self.engine,
                queue_size=settings.queue_size,
                batch_size=settings.batch_size,
                flush_interval_s=settings.flush_interval_s,
                timeout_s=settings.timeout_s,
            )
            if settings.audio is not None:
                self._audio = concurrent.futures.ThreadPoolExecutor(
                    1, thread_name_prefix="call-recordings"
                )

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Check (or migrate) the database, start writing, subscribe to the call events.

        Raises ``ProviderError`` when the database answers but lacks the tables.
        """
        if self.engine is not None and self.writer is not None:
            try:
                await self._prepare_database()
            except SchemaError as exc:
                await self.engine.dispose()
                raise ProviderError(f"call records: {exc}") from None
            except Exception as exc:
                log.warning(
                    "call records: the database does not answer (%s); calls are recorded "
                    "in memory until it does",
                    _short(exc),
                )
            self.writer.start()
            self._upkeep = asyncio.get_running_loop().create_task(
                self._upkeep_loop(), name="call-records-upkeep"
            )
        events.subscribe(self)

    async def aclose(self) -> None:
        """Write every record still queued (up to ``DRAIN_S``), finish the hooks, close."""
        events.unsubscribe(self)
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
        if self._audio is not None:
            await asyncio.to_thread(self._audio.shutdown, True)
        if self.writer is not None:
            await self.writer.close(DRAIN_S)
        if self.hook is not None:
            await self.hook.close()
        if self.engine is not None:
            await self.engine.dispose()

    def status(self) -> str:
        """``ok``, or ``degraded: <why>`` while records cannot be written."""
        return self.writer.status() if self.writer is not None else "ok"

    async def _prepare_database(self) -> None:
        assert self.engine is not None and self.settings is not None
        async with asyncio.timeout(max(self.settings.timeout_s * 6, 30.0)):
            if self.settings.migrate:
                await migrate.upgrade(self.engine)
            found, wanted = await migrate.current(self.engine), migrate.head()
            if found != wanted:
                state = "has no call records tables" if found is None else f"is at {found}"
                raise SchemaError(
                    f"the database {state}, this version needs {wanted}: run "
                    "`run-pipeline db upgrade BOT.yaml`, or set call_records.migrate: true"
                )
            await self.run_upkeep()
        self.ready = True

    async def run_upkeep(self, now: datetime | None = None) -> None:
        """One round of partition upkeep and retention (see ``voxpipe.records.partitions``)."""
        assert self.engine is not None and self.settings is not None
        settings = self.settings
        when = now or datetime.now(UTC)
        async with self.engine.begin() as conn:
            await migrate.lock(conn)  # workers starting together take turns
            await conn.run_sync(upkeep, when, settings.keep_days, settings.months_ahead)

    async def _upkeep_loop(self) -> None:
        """Every hour, upkeep (``start`` did the first); until the database is ready, every
        ``RETRY_EVERY_S``, try to get it ready."""
        while True:
            await asyncio.sleep(UPKEEP_EVERY_S if self.ready else RETRY_EVERY_S)
            try:
                if self.ready:
                    await self.run_upkeep()
                else:
                    await self._prepare_database()
                    log.warning("call records: the database answers; records are written")
            except SchemaError as exc:
                log.error("call records: %s", exc)
            except Exception as exc:
                log.warning("call records upkeep failed (%s); retrying", _short(exc))

    # --- what the bot asks for -----------------------------------------------------------------

    async def find_customer(self, number: str, call: Call) -> Customer | None:
        """The customer whose phone is ``number`` (``None`` after ``lookup_timeout_s``)."""
        if self.engine is None or self.settings is None:
            return None
        query = select(CustomerRow.phone, CustomerRow.name, CustomerRow.data).where(
            CustomerRow.phone == number
        )
        try:
            async with asyncio.timeout(self.settings.lookup_timeout_s):
                async with self.engine.connect() as conn:
                    row = (await conn.execute(query)).first()
        except Exception as exc:
            call.log.warning("customer lookup failed, going on without: %s", _short(exc))
            return None
        if row is None:
            return None
        data = row.data if isinstance(row.data, dict) else {}
        return Customer(row.phone, row.name or "", data)

    def recorder(self, call: Call) -> CallAudioRecorder | None:
        """The audio recorder of ``call`` when the bot records audio."""
        if self._audio is None or self.settings is None or self.settings.audio is None:
            return None
        day = datetime.now(UTC).date().isoformat()
        path = Path(self.settings.audio.dir).resolve() / day / f"{call.call_id}.wav"
        self._recordings[call.call_id] = str(path)
        return CallAudioRecorder(path, call.sample_rate, self._audio)

    async def list_calls(self, **filters: Any) -> list[dict[str, Any]]:
        """Recorded calls, newest first (see ``queries.list_calls``)."""
        if self.engine is None:
            return []
        return await queries.list_calls(self.engine, **filters)

    async def get_call(self, call_id: str) -> dict[str, Any] | None:
        """One recorded call with its transcript (``None`` if unknown)."""
        if self.engine is None:
            return None
        return await queries.get_call(self.engine, call_id)

    # --- events --------------------------------------------------------------------------------

    def call_started(self, call: Call) -> None:
        if call.bot != self.bot_name:
            return
        entry = _CallLog(_when(time.time() - call.duration_s))
        entry.recording = self._recordings.pop(call.call_id, None)
        self._calls[call.call_id] = entry
        if self.writer is not None:
            self.writer.put("call", self._call_row(call, entry))

    def caller_started_speaking(self, call: Call) -> None:
        entry = self._calls.get(call.call_id)
        if entry is not None and entry.speech_at is None:
            entry.speech_at = time.time()

    def turn(self, call: Call, turn: Turn) -> None:
        entry = self._calls.get(call.call_id)
        if entry is None:
            return
        started = turn.started_at
        if turn.speaker == "caller":
            started = started or entry.speech_at
            entry.speech_at = None
        row = {
            "call_id": call.call_id,
            "turn_index": len(entry.turns),
            "started_at": _when(started or time.time()),
            "speaker": turn.speaker,
            "text": turn.text,
            "heard_text": turn.heard,
            "latency_ms": turn.latency_ms,
        }
        entry.turns.append(row)
        if self.writer is not None:
            self.writer.put("turn", row)

    def tool_call(self, call: Call, use: ToolUse) -> None:
        entry = self._calls.get(call.call_id)
        if entry is None:
            return
        row = {
            "call_id": call.call_id,
            "seq": len(entry.tools),
            "created_at": _when(use.at or time.time()),
            "turn_index": len(entry.turns),
            "tool": use.name,
            "arguments": use.arguments,
            "result": use.result,
            "duration_ms": round(use.duration_ms, 1),
            "error": use.result if use.error else None,
        }
        entry.tools.append(row)
        if self.writer is not None:
            self.writer.put("tool", row)

    def call_ended(self, call: Call, reason: str) -> None:
        entry = self._calls.pop(call.call_id, None)
        if entry is None:
            return
        row = self._call_row(call, entry, reason)
        if self.writer is not None:
            self.writer.put("end", row)
        if self.hook is not None:
            document = {"event": "call_ended", **queries.call_document(row)}
            document["turns"] = [queries.turn_document(t) for t in entry.turns]
            document["tool_calls"] = [queries.tool_document(t) for t in entry.tools]
            self.hook.send(document)

    def _call_row(self, call: Call, entry: _CallLog, reason: str | None = None) -> dict[str, Any]:
        caller = call.caller
        row: dict[str, Any] = {
            "id": call.call_id,
            "started_at": entry.started_at,
            "bot": call.bot,
            "way_in": caller.way_in if caller is not None else "audiosocket",
            "caller_number": (caller.number or None) if caller is not None else None,
            "caller_name": (caller.name or None) if caller is not None else None,
            "trace_id": call.data.get("trace_id") or trace_of(call.call_id),
            "recording": entry.recording,
            "context": _context(call),
        }
        if reason is not None:
            outcome = outcome_of(call) or ERROR
            kind, _, target = outcome.partition(",")
            row.update(
                ended_at=_when(time.time()),
                duration_s=round(call.duration_s, 3),
                outcome=kind,
                transfer_target=target or None,
                error=reason if kind == ERROR else None,
            )
        return row


def _context(call: Call) -> dict[str, Any] | None:
    caller = call.caller
    if caller is None or not (caller.variables or caller.customer):
        return None
    context: dict[str, Any] = {"variables": dict(caller.variables)}
    if caller.customer is not None:
        context["customer"] = {"phone": caller.customer.phone, "name": caller.customer.name}
    return context


def _short(exc: BaseException) -> str:
    return (f"{type(exc).__name__}: {exc}".splitlines() or [""])[0][:200]


def records_of(ctx: BotContext) -> CallRecords | None:
    """The bot's call records service, once ``prepare`` started it."""
    records = ctx.shared.get(SHARED_KEY)
    return records if isinstance(records, CallRecords) else None


async def start_records(
    ctx: BotContext, records: CallRecordsSettings | None, hooks: HooksSettings
) -> None:
    """Start the bot's call records and hooks, when its file asks for either."""
    if (records is None and hooks.call_ended is None) or records_of(ctx):
        return
    service = CallRecords(ctx.name, records, hooks)
    await service.start()
    ctx.shared[SHARED_KEY] = service
