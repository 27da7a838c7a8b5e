"""What the HTTP API reports: this process's calls, its health, and the shared session store.

``CallTracker`` is an ``Observer`` that keeps the calls in progress in this process with their
conversation state. ``ServiceState`` joins it with the draining flag, the providers' health and,
when calls are kept in a shared store (Redis), the store's view of every worker's calls.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from voxpipe.events import Observer

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

CallList = list[dict[str, Any]]


class CallTracker(Observer):
    """The calls in progress in this process, each with its latest conversation state."""

    def __init__(self) -> None:
        self.calls: dict[str, tuple[Call, str]] = {}

    def call_started(self, call: Call) -> None:
        self.calls[call.call_id] = (call, "started")

    def call_state(self, call: Call, state: str) -> None:
        if call.call_id in self.calls:
            self.calls[call.call_id] = (call, state)

    def call_ended(self, call: Call, reason: str) -> None:
        self.calls.pop(call.call_id, None)

    def snapshot(self) -> CallList:
        """One entry per call: uuid, bot, state, duration and the worker that carries it."""
        worker = worker_name()
        return [
            {
                "uuid": call.call_id,
                "bot": call.bot,
                "state": state,
                "duration_s": round(call.duration_s, 3),
                "worker": worker,
            }
            for call, state in self.calls.values()
        ]


def worker_name() -> str:
    """``host:pid``: which process carries a call, as shown by ``/calls`` and ``/health``."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ServiceState:
    """The live facts behind ``/health`` and ``/calls``.

    ``shared_calls`` lists every worker's calls from the session store (Redis), so any worker
    can answer for all of them; without it, ``/calls`` shows this process's calls.
    ``store_status`` reports the session store (``"ok"``, ``"memory"``, or the outage);
    ``records_status`` the call records (``"ok"``, or ``"degraded: ..."`` while the database
    cannot be written).
    ``capacity``, once the AudioSocket server runs, tells its calls against its limit (and the
    model workers' queue); a full bot answers 503 ``full``, so a balancer sends calls elsewhere.
    """

    def __init__(
        self,
        bots: list[str],
        tracker: CallTracker,
        *,
        shared_calls: Callable[[], Awaitable[CallList]] | None = None,
        store_status: Callable[[], Awaitable[str]] | None = None,
        records_status: Callable[[], str] | None = None,
    ) -> None:
        self.bots = bots
        self.tracker = tracker
        self.shared_calls = shared_calls
        self.store_status = store_status
        self.records_status = records_status
        self.started_at = time.monotonic()
        self.draining = False
        self.providers: dict[str, str] = {}
        self.capacity: Callable[[], dict[str, Any]] | None = None

    def provider_down(self, name: str, problem: str) -> None:
        """A required provider stopped working: ``/health`` answers 503 until it is back."""
        self.providers[name] = problem

    def provider_up(self, name: str) -> None:
        """A provider works again."""
        self.providers.pop(name, None)

    async def health(self) -> tuple[int, dict[str, Any]]:
        """The HTTP status and body of ``/health``."""
        store = await self._store()
        records = self.records_status() if self.records_status is not None else "off"
        capacity = self.capacity() if self.capacity is not None else None
        if self.draining:
            status = "draining"
        elif self.providers:
            status = "down"
        elif capacity is not None and capacity.get("full"):
            status = "full"
        elif store not in ("ok", "memory") or records not in ("ok", "off"):
            status = "degraded"
        else:
            status = "ok"
        body = {
            "status": status,
            "worker": worker_name(),
            "bots": self.bots,
            "active_calls": len(self.tracker.calls),
            "session_store": store,
            "call_records": records,
            "providers_down": dict(self.providers),
            "uptime_s": round(time.monotonic() - self.started_at, 3),
        }
        if capacity is not None:
            body["capacity"] = capacity
        return (503 if status in ("draining", "down", "full") else 200), body

    async def calls(self) -> CallList:
        """The calls in progress: the shared store's (every worker's) plus local ones it lacks.

        Without a shared store, or while it cannot answer, this process's calls.
        """
        local = self.tracker.snapshot()
        if self.shared_calls is None:
            return local
        try:
            shared = await self.shared_calls()
        except Exception:
            return local
        known = {entry["uuid"] for entry in shared}
        return shared + [entry for entry in local if entry["uuid"] not in known]

    async def _store(self) -> str:
        if self.store_status is None:
            return "memory"
        try:
            return await self.store_status()
        except Exception as exc:
            return f"down: {exc}"


class ProviderWatch(Observer):
    """Marks the providers down after ``threshold`` provider errors in a row, up on a success.

    Provider errors (``events.error(call, "provider")``) do not name the provider, so this
    watches them together: a first byte from any provider (``provider_ttfb``) clears it.
    """

    NAME = "providers"

    def __init__(self, state: ServiceState, threshold: int = 3) -> None:
        self.state = state
        self.threshold = threshold
        self.failures = 0

    def error(self, call: Call | None, kind: str) -> None:
        if kind != "provider":
            return
        self.failures += 1
        if self.failures >= self.threshold:
            self.state.provider_down(
                self.NAME, f"{self.failures} provider errors in a row, no reply since"
            )

    def provider_ttfb(self, call: Call, kind: str, provider: str, seconds: float) -> None:
        self.failures = 0
        self.state.provider_up(self.NAME)
