"""The chan_websocket server: each WebSocket from (or to) Asterisk becomes one call of the bot.

Asterisk connects (a ``websocket_client.conf`` connection dialled with ``Dial(WebSocket/...)``
or ARI externalMedia ``transport=websocket``), or the bot connects to Asterisk's
``/media/<connection id>`` (``connect``: ``Dial(WebSocket/INCOMING)``, externalMedia with
``connection_type=server``). Either way: read ``MEDIA_START`` (``start_timeout_s``), take the
call's id (the URI's ``call`` parameter, from Dial's ``v(call=${VOXPIPE_ID})``; else the id of
an ARI media channel this bot created; else Asterisk's channel id), its caller context (the
JSON form's channel variables and the URI's other parameters), build the bot's chain between
the transport's two ends, and run it until either side hangs up or it outlives
``max_call_s``. A connection refused (``allow_from``, ``max_calls``, draining) gets HTTP 403 or
503 before the upgrade: ``Dial`` fails (``CHANUNAVAIL``) and the dialplan goes on. A malformed
message ends its own call, never the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import re
import time
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxpipe import events
from voxpipe.frames import HangupFrame
from voxpipe.transports.asterisk_websocket.protocol import (
    SUBPROTOCOL,
    MediaStart,
    ProtocolError,
    parse_media_start,
)
from voxpipe.transports.asterisk_websocket.settings import AsteriskWebSocketSettings
from voxpipe.transports.asterisk_websocket.transport import (
    INVALID_DATA,
    AsteriskWebSocketTransport,
    MediaConnection,
    MediaSocket,
)
from voxpipe.transports.audiosocket.server import CallHook

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import CallHost
    from voxpipe.pipelines.task import PipelineTask

log = logging.getLogger("voxpipe.asterisk_websocket")

HANGUP_GRACE_S = 10.0
CLOSE_GRACE_S = 5.0
# The ARI controller names the media channels it creates ``<prefix><call uuid>``.
MEDIA_ID_PREFIX = "voxpipe-media-"
_CALL_ID = re.compile(r"[0-9A-Za-z._:-]{1,64}")


@dataclass(eq=False)
class ActiveCall:
    """A call in progress over chan_websocket."""

    call: Call
    task: PipelineTask
    connection: MediaConnection
    started_at: float = field(default_factory=time.time)
    peer: str = ""


def call_id_of(start: MediaStart, query: dict[str, str]) -> str:
    """The call's id: ``call`` from the URI, an ARI media channel's UUID, or the channel id."""
    given = query.get("call", "")
    if given and _CALL_ID.fullmatch(given):
        return given
    if start.channel_id.startswith(MEDIA_ID_PREFIX):
        return start.channel_id[len(MEDIA_ID_PREFIX) :]
    return start.channel_id


class MediaListener:
    """What every chan_websocket server does before a call runs: accept Asterisk's connections
    (and make them, ``connect``), refuse before the upgrade, read ``MEDIA_START``, find the
    call's id. ``_run_call`` runs the call: a voxpipe bot's chain (``AsteriskWebSocketServer``)
    or a Pipecat pipeline (``voxpipe.interop.pipecat.ChanWebSocketListener``)."""

    def __init__(self, settings: AsteriskWebSocketSettings) -> None:
        self.settings = settings
        self.draining = False
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_from]
        self._server: Any = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._taken = 0

    def _running(self, call_id: str) -> bool:
        """Whether call ``call_id`` is in progress (a second connection for it is refused)."""
        raise NotImplementedError

    async def _hang_up_all(self, reason: str) -> None:
        """Hang up every call in progress."""
        raise NotImplementedError

    async def _run_call(
        self,
        socket: MediaSocket,
        start: MediaStart,
        call_id: str,
        peer: str,
        query: dict[str, str],
    ) -> None:
        """Run one call until either side hangs up."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        if self._server is None:
            raise RuntimeError("the server is not listening")
        port: int = next(iter(self._server.sockets)).getsockname()[1]
        return port

    @property
    def host(self) -> str:
        """The address bound."""
        return self.settings.host

    async def start(self) -> None:
        """Bind and start accepting Asterisk's connections."""
        from websockets.asyncio.server import serve

        from voxpipe.worker_env import shares_port

        self._server = await serve(
            self._on_connection,
            self.settings.host,
            self.settings.port,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            select_subprotocol=_select_subprotocol,
            process_request=self._check,
            compression=None,
            max_size=self.settings.max_message_bytes,
            max_queue=None,
            server_header=None,
            reuse_port=shares_port(),  # serve --workers: the kernel spreads calls over workers
        )

    async def connect(self, url: str, headers: dict[str, str] | None = None) -> None:
        """Connect to Asterisk's ``/media/<connection id>`` and serve the call it carries."""
        from websockets.asyncio.client import connect

        async with connect(
            url,
            subprotocols=[SUBPROTOCOL],  # type: ignore[list-item]
            additional_headers=headers,
            compression=None,
            max_size=self.settings.max_message_bytes,
            max_queue=None,
            open_timeout=self.settings.start_timeout_s,
            proxy=None,
        ) as socket:
            await self.serve(socket, peer=url, query=_query(url))

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting; let running calls go on for up to ``drain_s``; hang up the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close(close_connections=False)
        if self._handlers and drain_s > 0:
            await asyncio.wait(set(self._handlers), timeout=drain_s)
        await self._hang_up_all("server shutting down")
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=CLOSE_GRACE_S + 1)
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()

    # --- one connection ----------------------------------------------------------------------

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in net for net in self._networks)

    def _check(self, connection: Any, request: Any) -> Any:
        """Refuse before the upgrade: 403 for an address not allowed, 503 when full."""
        from http import HTTPStatus

        peer = connection.remote_address
        host = str(peer[0]) if peer else ""
        refusal = ""
        if not self._allowed(host):
            refusal, status = "allow_from", HTTPStatus.FORBIDDEN
        elif self.draining:
            refusal, status = "draining", HTTPStatus.SERVICE_UNAVAILABLE
        elif self._taken >= self.settings.max_calls:
            refusal, status = "max_calls", HTTPStatus.SERVICE_UNAVAILABLE
        if not refusal:
            return None
        log.warning("refused a chan_websocket connection from %s: %s", host, refusal)
        events.emit.call_rejected(refusal)
        return connection.respond(status, f"{refusal}\n")

    async def _on_connection(self, socket: Any) -> None:
        peer = socket.remote_address
        where = f"{peer[0]}:{peer[1]}" if peer else "?"
        await self.serve(socket, peer=where, query=_query(socket.request.path))

    async def serve(self, socket: MediaSocket, *, peer: str, query: dict[str, str]) -> None:
        """Serve one WebSocket until its call is over."""
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        self._taken += 1
        try:
            await self._serve(socket, peer, query)
        finally:
            self._taken -= 1
            if handler is not None:
                self._handlers.discard(handler)

    async def _media_start(self, socket: MediaSocket) -> MediaStart:
        from websockets.exceptions import ConnectionClosed

        timeout_s = self.settings.start_timeout_s
        try:
            async with asyncio.timeout(timeout_s):
                first = await socket.recv()
        except TimeoutError:
            raise ProtocolError(f"no MEDIA_START within {timeout_s:g} s") from None
        except ConnectionClosed:
            raise EOFError from None
        if not isinstance(first, str):
            raise ProtocolError("the first message is media, not MEDIA_START")
        return parse_media_start(first)

    async def _serve(self, socket: MediaSocket, peer: str, query: dict[str, str]) -> None:
        try:
            start = await self._media_start(socket)
        except EOFError:
            log.debug("chan_websocket connection from %s closed before MEDIA_START", peer)
            return
        except ProtocolError as exc:
            log.warning("chan_websocket connection from %s dropped: %s", peer, exc)
            events.emit.error(None, "protocol")
            events.emit.call_rejected("bad first message")
            await _close(socket, INVALID_DATA, str(exc))
            return
        call_id = call_id_of(start, query)
        if self._running(call_id):
            log.warning("chan_websocket from %s dropped: call %s is running", peer, call_id)
            events.emit.call_rejected("duplicate call id")
            await _close(socket, INVALID_DATA, "duplicate call id")
            return
        await self._run_call(socket, start, call_id, peer, query)


class AsteriskWebSocketServer(MediaListener):
    """Accepts chan_websocket connections (and makes them, ``connect``) and runs the bot."""

    def __init__(self, bot: CallHost, settings: AsteriskWebSocketSettings) -> None:
        super().__init__(settings)
        self.bot = bot
        self.calls: dict[str, ActiveCall] = {}
        self.on_call_start: list[CallHook] = []

    def _running(self, call_id: str) -> bool:
        return call_id in self.calls

    async def _hang_up_all(self, reason: str) -> None:
        for active in list(self.calls.values()):
            active.call.log.info("hanging up: %s", reason)
            active.task.cancel(reason)

    async def _run_call(
        self,
        socket: MediaSocket,
        start: MediaStart,
        call_id: str,
        peer: str,
        query: dict[str, str],
    ) -> None:
        from voxpipe.records.context import context_from_form

        bot, settings = self.bot, self.settings
        call = bot.new_call(call_id)
        call.data["asterisk_channel"] = start.channel_id
        given = {**start.variables, **{k: v for k, v in query.items() if k != "call"}}
        if given:
            call.caller = context_from_form(given, way_in="chan_websocket")
        for hook in [*self.on_call_start, bot.start_call]:
            try:
                await hook(call)
            except Exception:
                call.log.exception("call start hook failed; hanging up")
                events.emit.error(call, "call_start")
                await _close(socket, 1011, "call start failed")
                return
        connection = MediaConnection(socket, call, start)
        transport = AsteriskWebSocketTransport(connection, settings)
        task = bot.create_pipeline(call, head=[transport.input()], tail=[transport.output()])
        self.calls[call_id] = ActiveCall(call, task, connection, peer=peer)
        writer = asyncio.create_task(connection.run_writer(), name=f"{call_id}:chan-ws-writer")
        loop = asyncio.get_running_loop()
        timers = [
            loop.call_later(settings.max_call_s, task.queue_frame, HangupFrame("max_call_s")),
            loop.call_later(settings.max_call_s + HANGUP_GRACE_S, task.cancel, "max_call_s"),
        ]
        call.log.info(
            "chan_websocket call from %s started (channel %s, %s, %s control)",
            peer,
            start.channel or start.channel_id,
            start.format,
            "JSON" if start.json else "plain-text",
        )
        events.emit.call_started(call)
        reason = "error"
        try:
            reason = await task.run()
        finally:
            for timer in timers:
                timer.cancel()
            del self.calls[call_id]
            await connection.drained(CLOSE_GRACE_S, writer)
            call.log.info("call ended after %.1f s: %s", call.duration_s, reason)
            events.emit.call_ended(call, reason)


def _select_subprotocol(connection: Any, offered: Sequence[str]) -> Any:
    """``media`` when Asterisk offers it (``protocols = media``), else none: both work."""
    return SUBPROTOCOL if SUBPROTOCOL in offered else None


def _query(path_or_url: str) -> dict[str, str]:
    """The URI's query parameters (Dial's ``v(...)``), the last of each name."""
    query = urllib.parse.urlsplit(path_or_url).query
    return {k: v for k, v in urllib.parse.parse_qsl(query) if k.isidentifier()}


async def _close(socket: MediaSocket, code: int, reason: str) -> None:
    with contextlib.suppress(Exception):  # already gone
        await socket.close(code, reason[:120])
