"""The records writer: rows go into a bounded in-process queue and reach the database in batches.

Nothing on a call's path ever waits for the database: ``put`` appends to a deque and returns.
One background task takes up to ``batch_size`` rows (waiting at most ``flush_interval_s`` for
more) and writes them in one transaction. Rows are upserts keyed by their primary keys, so a
batch written twice (its commit went through, the answer was lost) changes nothing.

When the database is slow or down, the batch is kept and retried with backoff (up to 5 s
apart) while new rows queue behind it; ``status`` is ``degraded`` meanwhile, and the outage is
logged once. Once ``queue_size`` rows wait, further rows are dropped: each one is counted
(``dropped``, ``events.records_dropped`` -> ``voxpipe_records_dropped_total``) and the drops
are logged (the first at once, then a running count every 10 s). ``close`` writes whatever is
left before it returns, for up to ``drain_s``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import time
from typing import Any, Literal

from sqlalchemy import Table
from sqlalchemy.ext.asyncio import AsyncEngine

from voxpipe import events
from voxpipe.records.models import CallRow, ToolCallRow, TurnRow

log = logging.getLogger("voxpipe.records")

Kind = Literal["call", "end", "turn", "tool"]
# Within a batch rows are written kind by kind, in this order: a call's first row before its
# final one, so that the final one wins.
ORDER: tuple[Kind, ...] = ("call", "end", "turn", "tool")
_TABLES: dict[Kind, Table] = {
    "call": CallRow.__table__,  # type: ignore[dict-item]
    "end": CallRow.__table__,  # type: ignore[dict-item]
    "turn": TurnRow.__table__,  # type: ignore[dict-item]
    "tool": ToolCallRow.__table__,  # type: ignore[dict-item]
}
MAX_BACKOFF_S = 5.0
DROP_LOG_EVERY_S = 10.0


class RecordWriter:
    """Writes rows to the records' tables in the background, in batches."""

    def __init__(
        self,
        engine: AsyncEngine,
        *,
        queue_size: int = 20000,
        batch_size: int = 500,
        flush_interval_s: float = 0.5,
        timeout_s: float = 5.0,
    ) -> None:
        self.engine = engine
        self.queue_size = queue_size
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.timeout_s = timeout_s
        self._queue: collections.deque[tuple[Kind, dict[str, Any]]] = collections.deque()
        self._batch: list[tuple[Kind, dict[str, Any]]] = []
        self._wake = asyncio.Event()
        self._hurry = asyncio.Event()  # closing: stop waiting for batches to fill
        self._idle = asyncio.Event()
        self._idle.set()
        self._task: asyncio.Task[None] | None = None
        self._problem = ""
        self._dropped_since_log = 0
        self._drop_logged_at = 0.0
        self.written = 0
        self.dropped = 0

    # --- the call side -----------------------------------------------------------------------

    def put(self, kind: Kind, row: dict[str, Any]) -> bool:
        """Queue one row (never waits); ``False`` when the queue is full and it was dropped."""
        if len(self._queue) + len(self._batch) >= self.queue_size:
            self._drop(1)
            return False
        self._queue.append((kind, row))
        self._idle.clear()
        self._wake.set()
        return True

    @property
    def pending(self) -> int:
        """Rows not written yet."""
        return len(self._queue) + len(self._batch)

    def status(self) -> str:
        """``ok``, or ``degraded: <why>`` while writes fail."""
        return f"degraded: {self._problem}" if self._problem else "ok"

    # --- lifecycle ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the background task."""
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(
                self._run(), name="call-records-writer"
            )

    async def flushed(self, timeout_s: float) -> bool:
        """Wait until every queued row is written; ``False`` if that took over ``timeout_s``."""
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            return False
        return True

    async def close(self, drain_s: float = 10.0) -> None:
        """Write what is queued (for up to ``drain_s``), then stop; what is left is counted
        as dropped."""
        self._hurry.set()
        if self._task is not None and self.pending:
            await self.flushed(drain_s)
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
            self._task = None
        left = self.pending
        if left:
            self._queue.clear()
            self._batch = []
            self._drop(left, at_close=True)

    # --- the background task -----------------------------------------------------------------

    async def _run(self) -> None:
        backoff = 0.2
        while True:
            if not self._batch:
                if not self._queue:
                    self._idle.set()
                    self._wake.clear()
                    await self._wake.wait()
                if len(self._queue) < self.batch_size:
                    await self._pause(self.flush_interval_s)  # let a batch gather
                while self._queue and len(self._batch) < self.batch_size:
                    self._batch.append(self._queue.popleft())
            try:
                async with asyncio.timeout(self.timeout_s):
                    await self._write(self._batch)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed(exc)
                await self._pause(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF_S)
                continue
            self.written += len(self._batch)
            self._batch = []
            backoff = 0.2
            if self._problem:
                log.warning(
                    "call records: the database is back; %d records waiting", len(self._queue)
                )
                self._problem = ""

    async def _pause(self, seconds: float) -> None:
        """Sleep ``seconds``, or less once ``close`` is in a hurry."""
        if self._hurry.is_set():
            await asyncio.sleep(min(seconds, 0.2))
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(seconds):
                await self._hurry.wait()

    async def _write(self, batch: list[tuple[Kind, dict[str, Any]]]) -> None:
        groups: dict[Kind, list[dict[str, Any]]] = {kind: [] for kind in ORDER}
        for kind, row in batch:
            groups[kind].append(row)
        async with self.engine.begin() as conn:
            for kind in ORDER:
                if groups[kind]:
                    await conn.execute(self._statement(kind, groups[kind][0]), groups[kind])

    def _statement(self, kind: Kind, sample: dict[str, Any]) -> Any:
        table = _TABLES[kind]
        from sqlalchemy.dialects import postgresql, sqlite

        dialect = postgresql if self.engine.dialect.name == "postgresql" else sqlite
        statement: Any = dialect.insert(table)
        keys = [column.name for column in table.primary_key.columns]
        if kind == "end":  # a call's final row: every column it has replaces the first row's
            changes = {name: statement.excluded[name] for name in sample if name not in keys}
            return statement.on_conflict_do_update(index_elements=keys, set_=changes)
        return statement.on_conflict_do_nothing(index_elements=keys)

    def _failed(self, exc: BaseException) -> None:
        problem = f"{type(exc).__name__}: {exc}".splitlines()[0][:200]
        if not self._problem:
            log.warning(
                "call records: the database cannot be written (%s); %d records wait in memory "
                "(at most %d)",
                problem,
                self.pending,
                self.queue_size,
            )
            events.emit.error(None, "records")
        self._problem = problem

    def _drop(self, count: int, *, at_close: bool = False) -> None:
        self.dropped += count
        self._dropped_since_log += count
        events.emit.records_dropped(count)
        now = time.monotonic()
        if (
            at_close
            or self._drop_logged_at == 0.0
            or now - self._drop_logged_at >= DROP_LOG_EVERY_S
        ):
            log.error(
                "call records: %d records dropped%s (%d in all): %s",
                self._dropped_since_log,
                " at shutdown" if at_close else "",
                self.dropped,
                "the database did not come back in time"
                if at_close
                else f"the database is away and {self.queue_size} records already wait",
            )
            self._dropped_since_log = 0
            self._drop_logged_at = now
