"""The operations API of a running bot: health, Prometheus metrics and the calls in progress.

``serve`` starts it when the bot file has an ``http:`` block::

    api = OperationsApi(config.http, bots=[bot.name])
    await api.start()            # subscribes the metrics and call tracker to voxpipe.events
    api.state.draining = True    # on SIGTERM: /health answers 503 while calls drain
    await api.stop()
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from voxpipe import events
from voxpipe.http.app import create_app
from voxpipe.http.metrics import Metrics
from voxpipe.http.server import HttpServer
from voxpipe.http.state import CallList, CallTracker, ServiceState
from voxpipe.pipelines.config import HttpSettings

__all__ = ["CallTracker", "HttpServer", "Metrics", "OperationsApi", "ServiceState", "create_app"]


class OperationsApi:
    """Metrics, call tracking and the HTTP server of one process, started and stopped together."""

    def __init__(
        self,
        settings: HttpSettings,
        bots: list[str],
        *,
        shared_calls: Callable[[], Awaitable[CallList]] | None = None,
        store_status: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.metrics = Metrics()
        self.tracker = CallTracker()
        self.state = ServiceState(
            bots, self.tracker, shared_calls=shared_calls, store_status=store_status
        )
        token = settings.token.get_secret_value() if settings.token else None
        self.app = create_app(self.state, self.metrics, token)
        self.server = HttpServer(self.app, settings.listen)

    @property
    def port(self) -> int:
        """The port the API listens on (useful with ``listen: 127.0.0.1:0``)."""
        return self.server.port

    async def start(self) -> None:
        """Subscribe to call events and start serving (raises ``OSError`` if the port is busy)."""
        events.subscribe(self.metrics)
        events.subscribe(self.tracker)
        try:
            await self.server.start()
        except BaseException:
            self._unsubscribe()
            raise

    async def stop(self) -> None:
        """Stop serving and unsubscribe."""
        try:
            await self.server.stop()
        finally:
            self._unsubscribe()

    def _unsubscribe(self) -> None:
        events.unsubscribe(self.metrics)
        events.unsubscribe(self.tracker)
