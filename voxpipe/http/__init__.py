"""The operations API of a running bot: health, Prometheus metrics and the calls in progress.

``serve`` starts it when the bot file has an ``http:`` block::

    api = OperationsApi.for_bot(bot)   # None when the bot has no http: block
    await api.start()            # subscribes the metrics and call tracker to voxpipe.events
    api.state.draining = True    # on SIGTERM: /health answers 503 while calls drain
    await api.stop()

With ``transport.websocket`` in the bot file it also serves the call API (``api.call_api``,
``voxpipe.http.call_api``), and with ``http.web`` the page that talks to it.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.bots.config import HttpSettings
from voxpipe.http.app import create_app
from voxpipe.http.metrics import Metrics
from voxpipe.http.outcomes import OutcomeLookup, RecordFetcher
from voxpipe.http.records import RecordsRoutes
from voxpipe.http.server import HttpServer
from voxpipe.http.state import CallList, CallTracker, ProviderWatch, ServiceState
from voxpipe.sessions.outcomes import RETENTION_S, OutcomeLog

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.transports.websocket.server import CallApi

__all__ = [
    "CallTracker",
    "HttpServer",
    "Metrics",
    "OperationsApi",
    "ProviderWatch",
    "ServiceState",
    "create_app",
]


class OperationsApi:
    """Metrics, call tracking and the HTTP server of one process, started and stopped together."""

    def __init__(
        self,
        settings: HttpSettings,
        bots: list[str],
        *,
        shared_calls: Callable[[], Awaitable[CallList]] | None = None,
        store_status: Callable[[], Awaitable[str]] | None = None,
        shared_record: RecordFetcher | None = None,
        outcome_retention_s: float = RETENTION_S,
        records: RecordsRoutes | None = None,
        call_api: CallApi | None = None,
    ) -> None:
        self.metrics = Metrics()
        self.tracker = CallTracker()
        self.outcomes = OutcomeLog(outcome_retention_s)
        service = records.records if records is not None else None
        self.state = ServiceState(
            bots,
            self.tracker,
            shared_calls=shared_calls,
            store_status=store_status,
            records_status=service.status if service is not None else None,
        )
        self.watch = ProviderWatch(self.state)
        token = settings.token.get_secret_value() if settings.token else None
        lookup = OutcomeLookup(self.outcomes, self.tracker, shared_record=shared_record)
        self.app = create_app(self.state, self.metrics, token, lookup, records)
        self.call_api = call_api
        if call_api is not None:
            from voxpipe.http.call_api import add_call_api

            add_call_api(self.app, call_api, token, web=settings.web)
        self.server = HttpServer(self.app, settings.listen)

    @classmethod
    def for_bot(cls, bot: Bot) -> OperationsApi | None:
        """The API a ``serve`` of ``bot`` runs (``None`` without an ``http:`` block).

        Call it after ``bot.prepare()``. With a Redis session store, ``/calls`` lists every
        worker's calls and ``/health`` reports the store; worker ``i`` of ``serve --workers``
        listens on the configured port plus ``i``.
        """
        settings = bot.config.http
        if settings is None:
            return None
        from voxpipe.bots.workers import worker_listen
        from voxpipe.sessions.store import RedisSessionStore

        store = bot.session_store()
        settings = settings.model_copy(update={"listen": worker_listen(settings.listen)})
        records = RecordsRoutes.for_bot(bot)
        call_api = None
        if bot.config.transport.websocket is not None:
            from voxpipe.transports.websocket.server import CallApi

            call_api = CallApi(bot, bot.config.transport.websocket)
        if not isinstance(store, RedisSessionStore):
            return cls(settings, [bot.name], records=records, call_api=call_api)

        async def shared_calls() -> CallList:
            now = time.time()
            return [
                {
                    "uuid": record["call_id"],
                    "bot": record["bot"],
                    "state": record["state"],
                    "duration_s": round(now - record["started"], 3),
                    "worker": record["worker"],
                }
                for record in await store.list_calls()
                if record.get("state") != "ended"  # a failed call's record, kept for inspection
            ]

        async def store_status() -> str:
            return store.status()

        return cls(
            settings,
            [bot.name],
            shared_calls=shared_calls,
            store_status=store_status,
            shared_record=store.fetch,
            records=records,
            call_api=call_api,
        )

    @property
    def port(self) -> int:
        """The port the API listens on (useful with ``listen: 127.0.0.1:0``)."""
        return self.server.port

    async def start(self) -> None:
        """Subscribe to call events and start serving (raises ``OSError`` if the port is busy)."""
        for observer in self._observers():
            events.subscribe(observer)
        try:
            await self.server.start()
        except BaseException:
            self._unsubscribe()
            raise

    async def stop(self) -> None:
        """End the call API's calls (if any are left), stop serving and unsubscribe."""
        try:
            if self.call_api is not None:
                await self.call_api.stop()
            await self.server.stop()
        finally:
            self._unsubscribe()

    def _observers(self) -> list[events.Observer]:
        observers: list[events.Observer] = [self.metrics, self.tracker, self.watch, self.outcomes]
        if self.call_api is not None:
            observers.append(self.call_api)
        return observers

    def _unsubscribe(self) -> None:
        for observer in self._observers():
            events.unsubscribe(observer)
