"""Runs the HTTP API with uvicorn inside the bot's own event loop, as one more task.

The socket is bound here (so a busy port fails loudly at start, and port 0 picks a free one) and
uvicorn's own signal handling is switched off: ``serve`` owns SIGTERM and decides when the API
stops (after the calls have drained, so ``/health`` says 503 while they do).
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Generator
from typing import Any

import uvicorn

from voxpipe.transports.websocket.settings import SERVER_MAX_MESSAGE_BYTES


class _EmbeddedServer(uvicorn.Server):
    """A uvicorn server that leaves signal handling to its host."""

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield


def bind(listen: str) -> socket.socket:
    """A listening TCP socket for ``host:port`` (IPv4 or IPv6, port 0 for any free port).

    The protocol is named (``IPPROTO_TCP``, not the default 0) because accepted connections
    inherit it, and asyncio turns Nagle's algorithm off (``TCP_NODELAY``) only on sockets that
    say they are TCP. Without it, uvicorn's two writes per response (headers, then body) meet
    the client's delayed ACK: about 40 ms per request on a keep-alive connection.
    """
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "127.0.0.1"
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:  # say which listener failed: serve also binds the AudioSocket port
        sock.close()
        raise OSError(exc.errno, f"the HTTP API cannot listen on {listen}: {exc.strerror}") from exc
    sock.listen(128)
    sock.setblocking(False)
    return sock


class HttpServer:
    """The API's uvicorn server on ``listen``: ``await start()``, later ``await stop()``."""

    def __init__(self, app: Any, listen: str) -> None:
        self.app = app
        self.listen = listen
        self.port = 0
        self._sock: socket.socket | None = None
        self._server: _EmbeddedServer | None = None
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Bind and serve; returns once requests are being accepted (raises ``OSError``)."""
        self._sock = bind(self.listen)
        self.port = self._sock.getsockname()[1]
        config = uvicorn.Config(
            self.app,
            log_config=None,
            access_log=False,
            lifespan="off",
            log_level="warning",
            # The call API's WebSockets: audio does not compress, and the call API checks a
            # message's size itself (transport.websocket.max_message_bytes) up to this.
            http="httptools",
            ws="websockets-sansio",
            ws_max_size=SERVER_MAX_MESSAGE_BYTES,
            ws_per_message_deflate=False,
        )
        self._server = _EmbeddedServer(config)
        self._task = asyncio.create_task(self._server.serve([self._sock]), name="http-api")
        while not self._server.started:
            if self._task.done():
                self._task.result()
                raise OSError(f"the HTTP API on {self.listen} stopped at start")
            await asyncio.sleep(0.01)

    async def stop(self) -> None:
        """Finish the requests in flight and close the socket."""
        if self._server is not None and self._task is not None:
            self._server.should_exit = True
            await self._task
        if self._sock is not None:
            self._sock.close()
