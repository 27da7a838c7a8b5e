"""A local fake of Asterisk's ARI: REST over HTTP and the events WebSocket on one port.

Resources and events have the JSON shapes of Asterisk's ``rest-api/api-docs`` (Channel, Bridge,
StasisStart, StasisEnd, ChannelStateChange, ChannelDestroyed; errors as ``{"message": ...}``) and
the status codes it documents (404 unknown channel or bridge, 409/422 channel not in Stasis, 400
bad parameters). Every REST request is recorded; a request can be made to stall or to fail; the
WebSocket can be dropped.

An externalMedia channel goes through the steps Asterisk 22's ``res/ari/resource_channels.c``
and ``channels/chan_audiosocket.c`` take: the TCP connection to ``external_host`` is opened
before the REST reply (a bot that is not listening is a 500), the channel is created ``Down``
and outside Stasis, and only the dial thread, started just before the reply, sends the UUID
message, answers the channel and runs ``Stasis(<app>,<data>)``: a StasisStart whose ``args`` are
``[data]``. Until then ``addChannel`` answers 422 "Channel not in Stasis application".
``media_start`` picks when that StasisStart comes relative to the reply: ``before_reply``,
``after_reply`` (``media_delay_s`` later), ``never``, or ``dial_fails`` (the channel is
destroyed without entering Stasis). Hanging the channel up closes its socket, and a socket the
bot closes hangs the channel up, as Asterisk does.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route, WebSocketRoute
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxpipe.testing import until
from voxpipe.transports.audiosocket.protocol import (
    KIND_OF_RATE,
    RATE_OF_KIND,
    Kind,
    ProtocolError,
    encode,
    read_message,
)

ASTERISK_ID = "02:42:ac:11:00:02"
# The slin formats an externalMedia AudioSocket channel may speak, by ARI format name.
SLIN_RATES = {"slin": 8000, "slin12": 12000, "slin16": 16000, "slin24": 24000, "slin48": 48000}

MediaStart = Literal["before_reply", "after_reply", "never", "dial_fails"]


@dataclass(frozen=True)
class Recorded:
    """One REST request the fake received."""

    method: str
    path: str
    params: dict[str, str]


@dataclass
class FakeChannel:
    """A channel as the fake knows it; ``json()`` is ARI's Channel model."""

    id: str
    name: str
    number: str = ""
    state: str = "Ring"
    in_stasis: bool = True
    context: str = "voxpipe-ari"
    exten: str = "200"
    priority: int = 2
    created: str = ""
    app_data: str = "voxpipe"
    caller_name: str = ""
    channelvars: dict[str, str] | None = None

    def json(self) -> dict[str, Any]:
        found: dict[str, Any] = {
            "id": self.id,
            "name": self.name,
            "state": self.state,
            "protocol_id": "",
            "caller": {"name": self.caller_name, "number": self.number},
            "connected": {"name": "", "number": ""},
            "accountcode": "",
            "dialplan": {
                "context": self.context,
                "exten": self.exten,
                "priority": self.priority,
                "app_name": "Stasis" if self.in_stasis else "",
                "app_data": self.app_data if self.in_stasis else "",
            },
            "creationtime": self.created,
            "language": "en",
        }
        if self.channelvars is not None:  # ari.conf's channelvars, when it lists some
            found["channelvars"] = dict(self.channelvars)
        return found


@dataclass
class FakeBridge:
    """A bridge; ``json()`` is ARI's Bridge model."""

    id: str
    name: str
    bridge_type: str
    channels: list[str] = field(default_factory=list)
    created: str = ""

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "technology": "simple_bridge",
            "bridge_type": self.bridge_type,
            "bridge_class": "stasis",
            "creator": "Stasis",
            "name": self.name,
            "channels": list(self.channels),
            "creationtime": self.created,
            "video_mode": "talker",
        }


class MediaLeg:
    """The AudioSocket connection of one externalMedia channel, run as chan_audiosocket does.

    Once dialled it sends the UUID message, then one 20 ms frame of what the bridge gives it
    (``audio``, then silence) at real time, and keeps what the bot sends in ``received``.
    """

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        rate: int,
        on_bot_hangup: Callable[[], Awaitable[None]],
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.rate = rate
        self.received = bytearray()
        self.closed_by_bot = False
        self.hung_up = False
        self._on_bot_hangup = on_bot_hangup
        self._tasks: list[asyncio.Task[None]] = []

    def dial(self, call_uuid: str, audio: bytes) -> None:
        """``audiosocket_call``: send the UUID, then start the audio both ways."""
        self.writer.write(encode(Kind.UUID, uuid.UUID(call_uuid).bytes))
        self._tasks = [asyncio.create_task(self._send(audio)), asyncio.create_task(self._read())]

    def send_dtmf(self, digit: str) -> None:
        if not self.writer.is_closing():
            self.writer.write(encode(Kind.DTMF, digit.encode("ascii")))

    def close(self) -> None:
        """``audiosocket_hangup``: close the socket."""
        self.hung_up = True
        for task in self._tasks:
            if task is not asyncio.current_task():
                task.cancel()
        self.writer.close()

    async def _send(self, audio: bytes) -> None:
        loop = asyncio.get_running_loop()
        size = self.rate // 50 * 2
        kind = KIND_OF_RATE[self.rate]
        slot = loop.time()
        position = 0
        while not self.writer.is_closing():
            frame = audio[position : position + size].ljust(size, b"\0")
            position += size
            self.writer.write(encode(kind, frame))
            slot += 0.02
            await asyncio.sleep(max(0.0, slot - loop.time()))

    async def _read(self) -> None:
        try:
            while True:
                message = await read_message(self.reader, 30.0)
                if message.kind in RATE_OF_KIND:
                    self.received += message.payload
                elif message.kind is Kind.HANGUP:
                    break
        except (EOFError, ConnectionError, ProtocolError, TimeoutError):
            pass
        if self.hung_up:
            return  # Asterisk hung the channel up itself
        self.closed_by_bot = True
        self.close()
        await self._on_bot_hangup()


def _now() -> str:
    """ARI's timestamp format, e.g. ``2026-11-25T18:55:00.123+0000``."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "+0000"


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"message": message}, status_code=status)


class FakeAri:
    """The fake server. ``await start()``, use ``url``, then ``await stop()``."""

    def __init__(self, username: str = "voxpipe", password: str = "secret") -> None:
        self.username = username
        self.password = password
        self.requests: list[Recorded] = []
        self.channels: dict[str, FakeChannel] = {}
        self.bridges: dict[str, FakeBridge] = {}
        self.sockets: list[WebSocket] = []
        self.connections = 0
        self.rejected = 0
        self.stalls: list[tuple[str, str]] = []
        self.failures: list[tuple[str, str, int, str, Callable[[dict[str, str]], bool]]] = []
        self.media_start: MediaStart = "before_reply"
        self.media_delay_s = 0.2
        self.connect_media = False
        # chan_websocket: websocket_client.conf's connections (id -> uri) and the channels
        # of externalMedia transport=websocket, by channel id
        self.websocket_clients: dict[str, str] = {}
        self.ws_channels: dict[str, Any] = {}
        self._ws_waiting: dict[str, Any] = {}
        self.media_audio = b""
        self.media_legs: dict[str, MediaLeg] = {}  # by channel id, hung up ones included
        self._ids = itertools.count(1)
        self._release = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: uvicorn.Server | None = None
        self._serving: asyncio.Task[None] | None = None
        self.port = 0

    # --- running ---------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        app = Starlette(
            routes=[
                WebSocketRoute("/ari/events", self._events),
                WebSocketRoute("/media/{connection_id}", self._media),
                Route("/ari/{path:path}", self._rest, methods=["GET", "POST", "DELETE"]),
            ]
        )
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # accepted sockets inherit it
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", lifespan="off", timeout_graceful_shutdown=1
        )
        self._server = uvicorn.Server(config)
        self._serving = asyncio.create_task(self._server.serve(sockets=[sock]))
        server = self._server
        await until(lambda: server.started)

    async def stop(self) -> None:
        self._release.set()
        for leg in self.media_legs.values():
            leg.close()
        await self.drop_events()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None and self._serving is not None:
            self._server.should_exit = True
            await self._serving

    # --- what tests drive ------------------------------------------------------------------

    async def place_call(
        self,
        number: str = "1001",
        exten: str = "200",
        *,
        name: str = "",
        channelvars: dict[str, str] | None = None,
    ) -> str:
        """A caller reaches ``Stasis(voxpipe)``: a new channel and its StasisStart."""
        n = next(self._ids)
        channel = FakeChannel(
            id=f"{int(time.time())}.{n}",
            name=f"PJSIP/caller{number}-{n:08x}",
            number=number,
            exten=exten,
            created=_now(),
            caller_name=name,
            channelvars=channelvars,
        )
        self.channels[channel.id] = channel
        await self.emit({"type": "StasisStart", "args": [], "channel": channel.json()})
        return channel.id

    async def caller_hangs_up(self, channel_id: str) -> None:
        """The caller hangs up: StasisEnd, then ChannelDestroyed."""
        await self._destroy(self.channels[channel_id], cause=16, cause_txt="Normal Clearing")

    async def drop_events(self) -> None:
        """Close every events WebSocket from the server side."""
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.close(code=1001)
        self.sockets.clear()

    def stall(self, method: str, path_suffix: str) -> None:
        """Make matching requests hang until the fake stops."""
        self.stalls.append((method, path_suffix))

    def fail(
        self,
        method: str,
        path_suffix: str,
        status: int,
        message: str,
        when: Callable[[dict[str, str]], bool] = lambda params: True,
    ) -> None:
        """Answer the next matching request (``when`` its parameters) with an error."""
        self.failures.append((method, path_suffix, status, message, when))

    async def press(self, caller_id: str, digits: str) -> None:
        """The caller presses keys: the bridge passes each digit to the bot's leg."""
        bridge = self.bridge_of(caller_id)
        others = bridge.channels if bridge is not None else []
        legs = [self.media_legs[c] for c in others if c in self.media_legs]
        for digit in digits:
            for leg in legs:
                leg.send_dtmf(digit)
            await asyncio.sleep(0.1)

    async def emit(self, event: dict[str, Any]) -> None:
        """Send an event (with ARI's common fields) to every connected WebSocket."""
        message = json.dumps(
            {**event, "timestamp": _now(), "application": "voxpipe", "asterisk_id": ASTERISK_ID}
        )
        for ws in list(self.sockets):
            with contextlib.suppress(Exception):
                await ws.send_text(message)

    def made(self, method: str, path: str) -> list[Recorded]:
        """The recorded requests with this method and path."""
        return [r for r in self.requests if r.method == method and r.path == path]

    def bridge_of(self, channel_id: str) -> FakeBridge | None:
        return next((b for b in self.bridges.values() if channel_id in b.channels), None)

    # --- the WebSocket ---------------------------------------------------------------------

    def _authorized(self, headers: Any, query: Any) -> bool:
        expected = f"{self.username}:{self.password}"
        if query.get("api_key") == expected:
            return True
        header = headers.get("authorization", "")
        if header.startswith("Basic "):
            return base64.b64decode(header[6:]).decode() == expected
        return False

    async def _events(self, ws: WebSocket) -> None:
        if not self._authorized(ws.headers, ws.query_params) or not ws.query_params.get("app"):
            self.rejected += 1
            await ws.close(code=1008)
            return
        await ws.accept()
        self.connections += 1
        self.sockets.append(ws)
        try:
            while True:
                await ws.receive_text()
        except (WebSocketDisconnect, RuntimeError):
            pass
        finally:
            if ws in self.sockets:
                self.sockets.remove(ws)

    # --- REST ------------------------------------------------------------------------------

    async def _rest(self, request: Request) -> Response:
        if not self._authorized(request.headers, request.query_params):
            return _error(401, "Authentication required")
        path = "/" + request.path_params["path"]
        params = dict(request.query_params)
        self.requests.append(Recorded(request.method, path, params))
        if any(request.method == m and path.endswith(s) for m, s in self.stalls):
            await self._release.wait()
            return _error(503, "stalled")
        for failure in self.failures:
            method, suffix, status, message, when = failure
            if request.method == method and path.endswith(suffix) and when(params):
                self.failures.remove(failure)
                return _error(status, message)
        parts = path.strip("/").split("/")
        route = (request.method, parts[0], len(parts), parts[-1] if len(parts) == 3 else "")
        handlers: dict[tuple[str, str, int, str], Callable[..., Awaitable[Response]]] = {
            ("GET", "channels", 2, ""): self._channel_get,
            ("POST", "channels", 2, ""): self._channel_create,
            ("DELETE", "channels", 2, ""): self._channel_hangup,
            ("POST", "channels", 3, "answer"): self._channel_answer,
            ("POST", "channels", 3, "continue"): self._channel_continue,
            ("POST", "bridges", 1, ""): self._bridge_create,
            ("DELETE", "bridges", 2, ""): self._bridge_delete,
            ("POST", "bridges", 3, "addChannel"): self._bridge_add,
            ("POST", "bridges", 3, "removeChannel"): self._bridge_remove,
        }
        handler = handlers.get(route)
        if handler is None:
            return _error(404, "Resource not found")
        return await handler(parts, params)

    async def _channel_create(self, parts: list[str], params: dict[str, str]) -> Response:
        if parts[1] != "externalMedia":
            return _error(404, "Resource not found")
        if params.get("transport") == "websocket":
            return await self._websocket_media(params)
        for name in ("app", "external_host", "format"):
            if not params.get(name):
                return _error(400, f"{name} is required")
        if params.get("encapsulation") == "audiosocket":
            if params.get("transport") != "tcp":
                return _error(400, "AudioSocket requires transport tcp")
            if not params.get("data"):
                return _error(400, "AudioSocket requires a UUID in data")
        channel_id = params.get("channelId") or f"{int(time.time())}.{next(self._ids)}"
        if channel_id in self.channels:
            return _error(409, "Channel with given unique ID already exists")
        host = params["external_host"]
        data = params.get("data", "")
        channel = FakeChannel(
            id=channel_id,
            name=f"AudioSocket/{host}-{data}",
            state="Down",
            in_stasis=False,
            context="default",
            exten="s",
            priority=1,
            created=_now(),
            app_data=f"{params['app']},{data}",
        )
        leg = None
        if self.connect_media:  # audiosocket_request connects before the channel exists
            address, _, port = host.rpartition(":")
            try:
                reader, writer = await asyncio.open_connection(address, int(port))
            except OSError:
                return _error(500, "Allocation failed")
            rate = SLIN_RATES.get(params["format"], 8000)
            leg = MediaLeg(reader, writer, rate, lambda: self._bot_hung_up(channel))
            self.media_legs[channel_id] = leg
        self.channels[channel_id] = channel
        snapshot = channel.json()  # taken before the dial thread starts
        mode = self.media_start
        if mode == "before_reply":
            await self._dial(channel, leg, data, mode)
            return JSONResponse(snapshot)
        # The dial thread runs on its own: let it start once the reply is on its way.
        later = self._dial_later(channel, leg, data, mode)
        return JSONResponse(snapshot, background=BackgroundTask(self._start, later))

    async def _websocket_media(self, params: dict[str, str]) -> Response:
        """externalMedia over chan_websocket (``external_media_websocket`` and
        ``webchan_request``): Asterisk dials the websocket_client connection in its dial thread,
        or, with ``connection_type=server``, waits on ``/media/<MEDIA_WEBSOCKET_CONNECTION_ID>``.
        Either way the channel enters Stasis once it is up; the WebSocket closing hangs it up."""
        from fakes.chan_websocket import Channel, dial

        if params.get("encapsulation") != "none":
            return _error(400, "encapsulation must be 'none' for websocket transport")
        for name in ("app", "format"):
            if not params.get(name):
                return _error(400, f"{name} is required")
        server = params.get("connection_type", "client") == "server"
        host = params.get("external_host", "")
        if not server and host not in self.websocket_clients:
            return _error(400, "external_host must be a valid websocket_client connection id.")
        channel_id = params.get("channelId") or f"{int(time.time())}.{next(self._ids)}"
        if channel_id in self.channels:
            return _error(409, "Channel with given unique ID already exists")
        connection_id = str(uuid.uuid4()) if server else host
        media = Channel(format=params["format"], channel_id=channel_id, connection_id=connection_id)
        data = params.get("data", "")
        channel = FakeChannel(
            id=channel_id,
            name=f"WebSocket/{connection_id}/0x{next(self._ids):x}",
            state="Down",
            in_stasis=False,
            context="default",
            exten="s",
            priority=1,
            created=_now(),
            app_data=f"{params['app']},{data}",
            channelvars={
                "MEDIA_WEBSOCKET_OPTIMAL_FRAME_SIZE": str(media.frame_bytes),
                "MEDIA_WEBSOCKET_CONNECTION_ID": connection_id,
            },
        )
        self.channels[channel_id] = channel
        self.ws_channels[channel_id] = media
        snapshot = channel.json()

        async def up() -> None:
            channel.state = "Up"
            channel.in_stasis = True
            await self.emit({"type": "StasisStart", "args": [data], "channel": channel.json()})

        async def call() -> None:  # the dial thread: webchan_call connects, then Stasis
            task = asyncio.create_task(dial(self.websocket_clients[host], media))
            await until(lambda: media.socket is not None or task.done())
            if task.done():
                await self._destroy(channel, cause=3, cause_txt="No route to destination")
                return
            await up()
            await task
            await self._bot_hung_up(channel)

        if server:
            self._ws_waiting[connection_id] = (media, channel)
            return JSONResponse(snapshot, background=BackgroundTask(self._start, up()))
        return JSONResponse(snapshot, background=BackgroundTask(self._start, call()))

    async def _media(self, socket: WebSocket) -> None:
        """chan_websocket's ``/media/<connection id>``: 404 for an unknown id, one connection."""
        from fakes.chan_websocket import StarletteSocket

        found = self._ws_waiting.pop(socket.path_params["connection_id"], None)
        if found is None:
            await socket.close(code=1008)
            return
        media, channel = found
        await socket.accept(subprotocol="media")
        await media.run(StarletteSocket(socket))
        await self._bot_hung_up(channel)

    async def _start(self, coro: Awaitable[None]) -> None:
        self._spawn(coro)

    async def _dial_later(
        self, channel: FakeChannel, leg: MediaLeg | None, data: str, mode: MediaStart
    ) -> None:
        await asyncio.sleep(self.media_delay_s)
        await self._dial(channel, leg, data, mode)

    async def _dial(
        self, channel: FakeChannel, leg: MediaLeg | None, data: str, mode: MediaStart
    ) -> None:
        """The dial thread: ``audiosocket_call`` (the UUID), answer, ``Stasis(app,data)``."""
        if self.channels.get(channel.id) is not channel:
            return  # hung up before it was dialled
        if mode == "dial_fails":
            await self._destroy(channel, cause=0, cause_txt="Unknown")
            return
        if leg is not None:
            leg.dial(data, self.media_audio)
        if mode == "never":
            return
        channel.state = "Up"
        await self.emit({"type": "ChannelStateChange", "channel": channel.json()})
        channel.in_stasis = True
        await self.emit({"type": "StasisStart", "args": [data], "channel": channel.json()})

    async def _bot_hung_up(self, channel: FakeChannel) -> None:
        """The bot closed the leg's socket: Asterisk hangs the channel up."""
        if self.channels.get(channel.id) is channel:
            await self._destroy(channel, cause=16, cause_txt="Normal Clearing")

    async def _channel_get(self, parts: list[str], params: dict[str, str]) -> Response:
        channel = self.channels.get(parts[1])
        if channel is None:
            return _error(404, "Channel not found")
        return JSONResponse(channel.json())

    async def _channel_hangup(self, parts: list[str], params: dict[str, str]) -> Response:
        channel = self.channels.get(parts[1])
        if channel is None:
            return _error(404, "Channel not found")
        await self._destroy(channel, cause=16, cause_txt="Normal Clearing")
        return Response(status_code=204)

    async def _channel_answer(self, parts: list[str], params: dict[str, str]) -> Response:
        channel = self.channels.get(parts[1])
        if channel is None:
            return _error(404, "Channel not found")
        if not channel.in_stasis:
            return _error(409, "Channel not in Stasis application")
        channel.state = "Up"
        return Response(status_code=204)

    async def _channel_continue(self, parts: list[str], params: dict[str, str]) -> Response:
        channel = self.channels.get(parts[1])
        if channel is None:
            return _error(404, "Channel not found")
        if not channel.in_stasis:
            return _error(409, "Channel not in Stasis application")
        channel.in_stasis = False
        channel.context = params.get("context", channel.context)
        channel.exten = params.get("extension", channel.exten)
        channel.priority = int(params.get("priority", "1"))
        self._leave_bridges(channel.id)
        await self.emit({"type": "StasisEnd", "channel": channel.json()})
        return Response(status_code=204)

    async def _bridge_create(self, parts: list[str], params: dict[str, str]) -> Response:
        bridge_id = params.get("bridgeId") or f"bridge-{next(self._ids)}"
        if bridge_id in self.bridges:
            return _error(409, "Bridge with given unique ID already exists")
        bridge = FakeBridge(
            id=bridge_id,
            name=params.get("name", ""),
            bridge_type=params.get("type", "mixing"),
            created=_now(),
        )
        self.bridges[bridge_id] = bridge
        return JSONResponse(bridge.json())

    async def _bridge_delete(self, parts: list[str], params: dict[str, str]) -> Response:
        if self.bridges.pop(parts[1], None) is None:
            return _error(404, "Bridge not found")
        return Response(status_code=204)

    async def _bridge_add(self, parts: list[str], params: dict[str, str]) -> Response:
        bridge = self.bridges.get(parts[1])
        if bridge is None:
            return _error(404, "Bridge not found")
        for channel_id in params.get("channel", "").split(","):
            channel = self.channels.get(channel_id)
            if channel is None:
                return _error(400, "Channel not found")
            if not channel.in_stasis:
                return _error(422, "Channel not in Stasis application")
            self._leave_bridges(channel_id)
            bridge.channels.append(channel_id)
        return Response(status_code=204)

    async def _bridge_remove(self, parts: list[str], params: dict[str, str]) -> Response:
        bridge = self.bridges.get(parts[1])
        if bridge is None:
            return _error(404, "Bridge not found")
        for channel_id in params.get("channel", "").split(","):
            if channel_id not in self.channels:
                return _error(400, "Channel not found")
            if channel_id not in bridge.channels:
                return _error(422, "Channel not in this bridge")
            bridge.channels.remove(channel_id)
        return Response(status_code=204)

    # --- helpers ---------------------------------------------------------------------------

    async def _destroy(self, channel: FakeChannel, cause: int, cause_txt: str) -> None:
        self.channels.pop(channel.id, None)
        leg = self.media_legs.get(channel.id)  # kept: tests read what the leg heard
        if leg is not None:
            leg.close()
        self._leave_bridges(channel.id)
        if channel.in_stasis:
            await self.emit({"type": "StasisEnd", "channel": channel.json()})
        await self.emit(
            {
                "type": "ChannelDestroyed",
                "cause": cause,
                "cause_txt": cause_txt,
                "channel": channel.json(),
            }
        )

    def _leave_bridges(self, channel_id: str) -> None:
        for bridge in self.bridges.values():
            if channel_id in bridge.channels:
                bridge.channels.remove(channel_id)

    def _spawn(self, coro: Awaitable[None]) -> None:
        async def run() -> None:
            await coro

        task = asyncio.create_task(run())
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
