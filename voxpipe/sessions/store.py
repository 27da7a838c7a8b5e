"""Session stores: each call's state (conversation state, history, ctx, times) for every worker.

``MemorySessionStore`` keeps records in this process. ``RedisSessionStore`` keeps the same records
in memory and writes them as JSON at ``call_session:<uuid>`` with a TTL refreshed on every write,
from one background writer per bot: a frame never waits on Redis. When Redis is down (at start or
mid-call) calls go on with the in-memory records, the outage is logged once, the store reports
``status() == "degraded"``, and the writer retries with backoff; when Redis answers again every
live call's record is written anew.

Writes happen on state and history changes (the conversation tracker calls ``save``), not per
frame. One store is created per bot and kept in ``bot.shared["session_store"]``. When a call
ends, its Redis record is deleted, or replaced for ``outcome_ttl_s`` by one without the dialogue
that keeps the call's outcome (``voxpipe.sessions.outcomes``) for the dialplan to ask any worker.

Each record names the process that carries the call (``worker``, ``host:pid``). A process that
dies without ending its calls (SIGKILL, the OOM killer) cannot delete them; the ``serve
--workers`` supervisor, which sees it die, ends them with ``end_worker_calls``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import time
from typing import TYPE_CHECKING, Any, Literal

from voxpipe.conversation.state import state_of
from voxpipe.sessions.outcomes import ERROR, RETENTION_S, outcome_of

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext

log = logging.getLogger("voxpipe.sessions")

KEY_PREFIX = "call_session:"
SHARED_KEY = "session_store"


def worker_id(pid: int | None = None) -> str:
    """``host:pid`` of a process on this host (this one by default), as call records name it."""
    return f"{socket.gethostname()}:{os.getpid() if pid is None else pid}"


WORKER = worker_id()

Status = Literal["ok", "degraded"]


def snapshot(call: Call) -> dict[str, Any]:
    """The record stored for a call: plain JSON-ready data."""
    now = time.time()
    return {
        "call_id": call.call_id,
        "bot": call.bot,
        "state": state_of(call).value,
        "history": [dict(message) for message in call.history],
        "started": round(now - call.duration_s, 3),
        "updated": round(now, 3),
        "worker": WORKER,
        "outcome": outcome_of(call),
    }


class MemorySessionStore:
    """Call records in this process only (the default, and Redis's fallback)."""

    def __init__(self) -> None:
        self._calls: dict[str, dict[str, Any]] = {}

    async def start(self) -> None:
        """Get ready before the bot takes calls."""

    async def close(self) -> None:
        """Release connections (the bot is shutting down)."""

    def status(self) -> Status:
        """``ok``, or ``degraded`` while the backing store is unreachable."""
        return "ok"

    def save(self, call: Call) -> None:
        """Record the call's current state and history (never blocks)."""
        self._calls[call.call_id] = snapshot(call)

    def end(self, call: Call, *, keep: bool = False) -> None:
        """The call is over: forget it, or with ``keep`` leave its last record to expire."""
        self._calls.pop(call.call_id, None)

    def get(self, call_id: str) -> dict[str, Any] | None:
        """This process's record of a call."""
        return self._calls.get(call_id)

    async def fetch(self, call_id: str) -> dict[str, Any] | None:
        """The record of a call, live or recently ended, as every worker sees it."""
        return self.get(call_id)

    async def list_calls(self) -> list[dict[str, Any]]:
        """Records of every live call this store can see."""
        return list(self._calls.values())


class RedisSessionStore(MemorySessionStore):
    """Call records in Redis (shared by every worker), with memory as the fallback."""

    def __init__(
        self,
        url: str,
        ttl_s: int,
        *,
        timeout_s: float = 1.0,
        max_backoff_s: float = 5.0,
    ) -> None:
        super().__init__()
        from redis.asyncio import Redis
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

        # No client-side retries: the writer retries on its own schedule, never on a frame.
        self._client = Redis.from_url(
            url,
            socket_timeout=timeout_s,
            socket_connect_timeout=timeout_s,
            retry=Retry(NoBackoff(), 0),
        )
        self.ttl_s = ttl_s
        self.timeout_s = timeout_s
        self.max_backoff_s = max_backoff_s
        # Per call: the JSON record and its TTL in seconds, or None to delete it.
        self._pending: dict[str, tuple[str, int] | None] = {}
        self.outcome_ttl_s = int(RETENTION_S)
        self._wake = asyncio.Event()
        self._writer: asyncio.Task[None] | None = None
        self._degraded = False
        self.writes = 0

    async def start(self) -> None:
        """Check Redis once; if it is down, the bot still starts (degraded)."""
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                await self._client.ping()
        except Exception as exc:
            self._degrade(exc)
        self._ensure_writer()

    async def close(self) -> None:
        """Write what is still pending (briefly, if Redis is up), then stop the writer."""
        if self._pending and not self._degraded:
            batch, self._pending = self._pending, {}
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    await self._write(batch)
            except Exception as exc:
                log.warning("session store: %d writes lost at shutdown (%s)", len(batch), exc)
        if self._writer is not None:
            self._writer.cancel()
            await asyncio.gather(self._writer, return_exceptions=True)
            self._writer = None
        await self._client.aclose()

    def status(self) -> Status:
        return "degraded" if self._degraded else "ok"

    def save(self, call: Call) -> None:
        super().save(call)
        self._queue(call.call_id, json.dumps(self._calls[call.call_id]))

    def end(self, call: Call, *, keep: bool = False) -> None:
        """As in memory; a call with an outcome leaves a record of it (without its history)
        for ``outcome_ttl_s``, so that any worker can tell the dialplan how it ended."""
        if keep:
            super().save(call)
            self._queue(call.call_id, json.dumps(self._calls[call.call_id]))
        elif outcome_of(call) is not None:
            record = {k: v for k, v in snapshot(call).items() if k != "history"}
            self._queue(call.call_id, json.dumps(record), self.outcome_ttl_s)
        else:
            self._queue(call.call_id, None)
        super().end(call)

    async def fetch(self, call_id: str) -> dict[str, Any] | None:
        """The call's record in Redis (this process's while Redis is down)."""
        if self._degraded:
            return self.get(call_id)
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                value = await self._client.get(KEY_PREFIX + call_id)
        except Exception as exc:
            self._degrade(exc)
            return self.get(call_id)
        record: dict[str, Any] | None = json.loads(value) if value is not None else None
        return record

    async def list_calls(self) -> list[dict[str, Any]]:
        """Every live call in Redis (all workers); this process's calls while Redis is down.

        The records failed calls leave behind (state ``ended``, until their TTL) are skipped.
        """
        if self._degraded:
            return await super().list_calls()
        try:
            async with asyncio.timeout(self.timeout_s * 2):
                keys = [key async for key in self._client.scan_iter(f"{KEY_PREFIX}*", 500)]
                values = await self._client.mget(keys) if keys else []
        except Exception as exc:
            self._degrade(exc)
            return await super().list_calls()
        records = [json.loads(value) for value in values if value is not None]
        return [record for record in records if record.get("state") != "ended"]

    # --- the background writer ---------------------------------------------------------------

    def _queue(self, call_id: str, payload: str | None, ttl_s: int | None = None) -> None:
        self._pending[call_id] = None if payload is None else (payload, ttl_s or self.ttl_s)
        self._wake.set()
        self._ensure_writer()

    def _ensure_writer(self) -> None:
        if self._writer is None or self._writer.done():
            self._writer = asyncio.get_running_loop().create_task(
                self._write_loop(), name="session-store-writer"
            )

    async def _write_loop(self) -> None:
        backoff = 0.1
        while True:
            if not self._pending and not self._degraded:
                self._wake.clear()
                await self._wake.wait()
                continue
            batch, self._pending = self._pending, {}
            try:
                async with asyncio.timeout(self.timeout_s * 2):
                    await self._write(batch)
            except Exception as exc:
                for call_id, payload in batch.items():
                    self._pending.setdefault(call_id, payload)
                self._degrade(exc)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, self.max_backoff_s)
                continue
            backoff = 0.1
            if self._degraded:
                self._recover()

    async def _write(self, batch: dict[str, tuple[str, int] | None]) -> None:
        """Write (or delete) each record; with nothing to write, just check Redis is back."""
        if not batch:
            await self._client.ping()
            return
        async with self._client.pipeline(transaction=False) as pipe:
            for call_id, entry in batch.items():
                if entry is None:
                    pipe.delete(KEY_PREFIX + call_id)
                else:
                    pipe.set(KEY_PREFIX + call_id, entry[0], ex=entry[1])
            await pipe.execute()
        self.writes += len(batch)

    def _degrade(self, exc: BaseException) -> None:
        if not self._degraded:
            self._degraded = True
            log.warning(
                "session store: Redis unavailable (%s); calls go on with in-memory state",
                exc or type(exc).__name__,
            )

    def _recover(self) -> None:
        self._degraded = False
        log.warning("session store: Redis is back; writing %d live calls", len(self._calls))
        for call_id, record in self._calls.items():
            self._pending.setdefault(call_id, (json.dumps(record), self.ttl_s))
        if self._pending:
            self._wake.set()


def end_worker_calls(url: str, worker: str, ttl_s: int, *, timeout_s: float = 1.0) -> list[str]:
    """End the calls a dead ``worker`` (``host:pid``) left in Redis as live; return their ids.

    Each becomes what a failed call leaves (state ``ended``, outcome ``error`` unless one was
    settled, the dialogue kept for ``ttl_s``): ``/calls`` no longer lists it, and the dialplan
    asking for its outcome gets ``error`` at once. Blocking (the supervisor has no event loop);
    raises ``redis.RedisError`` when Redis does not answer within ``timeout_s``.
    """
    from redis import Redis

    client = Redis.from_url(url, socket_timeout=timeout_s, socket_connect_timeout=timeout_s)
    try:
        keys = list(client.scan_iter(f"{KEY_PREFIX}*", 500))
        values = client.mget(keys) if keys else []
        ended: list[str] = []
        pipe = client.pipeline(transaction=False)
        for key, value in zip(keys, values, strict=True):
            record = json.loads(value) if value is not None else None
            if not record or record.get("worker") != worker or record.get("state") == "ended":
                continue
            record.update(state="ended", outcome=record.get("outcome") or ERROR)
            record["updated"] = round(time.time(), 3)
            pipe.set(key, json.dumps(record), ex=ttl_s, xx=True)  # xx: never revive an expired one
            ended.append(str(record.get("call_id")))
        if ended:
            pipe.execute()
        return ended
    finally:
        client.close()


SessionStore = MemorySessionStore


def session_store(ctx: BotContext) -> SessionStore:
    """The bot's session store (the bot opens it from ``session_store:``, ``open_store``)."""
    store = ctx.shared.get(SHARED_KEY)
    if not isinstance(store, MemorySessionStore):
        raise RuntimeError(f"bot {ctx.name!r} has no session store open")
    return store


def open_store(ctx: BotContext, redis_url: str | None = None, ttl_s: int = 1800) -> SessionStore:
    """The bot's session store, opened on first use: in Redis at ``redis_url`` (keys living
    ``ttl_s``), else in this process."""
    store = ctx.shared.get(SHARED_KEY)
    if store is None:
        store = RedisSessionStore(redis_url, ttl_s) if redis_url else MemorySessionStore()
        ctx.shared[SHARED_KEY] = store
    assert isinstance(store, MemorySessionStore)
    return store
