"""A fake Asterisk WebSocket channel (chan_websocket), written from Asterisk's own text.

It does what ``channels/chan_websocket.c`` does for one channel, in either direction:
``dial(uri)`` connects to the bot as a ``websocket_client.conf`` connection would (subprotocol
``media``, Dial's ``v()`` parameters in the query); ``FakeAsterisk.serve()`` listens on
``/media/<connection id>`` for the bot to connect (404 for an unknown id, one connection per id).
Then it sends ``MEDIA_START`` (plain-text or JSON), and:

- plays its queue: every 20 ms one queued frame leaves for ``heard`` (or silence when empty);
  control frames queued by ``MARK_MEDIA``/``STOP_MEDIA_BUFFERING`` go out as
  ``MEDIA_MARK_PROCESSED``/``MEDIA_BUFFERING_COMPLETED`` when playout reaches them;
- cuts each binary message into ``optimal_frame_size`` frames; outside buffering drops a short
  remainder, inside keeps it for the next message; ``STOP_MEDIA_BUFFERING`` queues it;
- ``MEDIA_XOFF`` when ``xoff_level`` frames are queued, ``MEDIA_XON`` under ``xon_level``;
  beyond ``max_level`` frames a binary message is dropped (``dropped`` counts them);
- ``FLUSH_MEDIA`` empties the queue (marks too), ``HANGUP`` closes, ``ANSWER`` answers;
  ``PAUSE_MEDIA``/``CONTINUE_MEDIA`` stop and resume playout;
- the caller's side: ``say(pcm)`` sends 20 ms binary frames at real time, ``dtmf(d)`` a
  ``DTMF_END``; the caller's audio is silence otherwise.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

from websockets.asyncio.client import connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

from voxpipe.transports import g711

FORMATS = {"slin": (8000, 2), "slin16": (16000, 2), "slin48": (48000, 2), "ulaw": (8000, 1)}
FORMATS["alaw"] = (8000, 1)


@dataclass
class Played:
    """Media the fake played to the caller: when, and the PCM16 of it."""

    at: float
    pcm: bytes


@dataclass
class Channel:
    """One WebSocket channel as chan_websocket runs it."""

    format: str = "slin16"
    json: bool = False
    channel_id: str = "1732900000.42"
    connection_id: str = "voxpipe"
    variables: dict[str, str] = field(default_factory=dict)
    xoff_level: int = 900
    xon_level: int = 800
    max_level: int = 1000
    send_silence: bool = True
    # what happened
    heard: list[Played] = field(default_factory=list)
    commands: list[tuple[float, str]] = field(default_factory=list)
    events_sent: list[str] = field(default_factory=list)
    answered: bool = False
    hung_up: bool = False
    dropped: int = 0
    max_queued: int = 0
    closed: asyncio.Event = field(default_factory=asyncio.Event)
    close_code: int | None = None

    def __post_init__(self) -> None:
        rate, width = FORMATS[self.format]
        self.rate = rate
        self.width = width
        self.frame_bytes = rate // 50 * width
        self.queue: collections.deque[bytes | str] = collections.deque()
        self.queued_media = 0
        self.leftover = b""
        self.buffering = False
        self.paused = False
        self.full = False
        self.socket: Any = None
        self._say: collections.deque[bytes] = collections.deque()

    # --- the caller ----------------------------------------------------------------------------

    def say(self, pcm: bytes) -> None:
        """The caller speaks ``pcm`` (PCM16 at the channel's rate), 20 ms per frame."""
        size = self.rate // 50 * 2
        for start in range(0, len(pcm) - size + 1, size):
            self._say.append(pcm[start : start + size])

    @property
    def speaking(self) -> bool:
        return bool(self._say)

    async def dtmf(self, digit: str) -> None:
        await self._event("DTMF_END", digit=digit)

    async def hang_up(self) -> None:
        """The caller hangs up: Asterisk closes the WebSocket."""
        if self.socket is not None:
            await self.socket.close(1000)

    # --- helpers for tests ---------------------------------------------------------------------

    def named(self, name: str) -> list[str]:
        """The bot's commands called ``name`` (either form)."""
        return [text for _, text in self.commands if _is(text, name)]

    def named_at(self, name: str) -> float:
        """When the first ``name`` command arrived."""
        return next(t for t, text in self.commands if _is(text, name))

    def voiced(self, after: float = 0.0) -> list[Played]:
        return [p for p in self.heard if p.at > after and any(p.pcm)]

    async def wait_for(self, predicate: Any, timeout_s: float = 20.0) -> None:
        async with asyncio.timeout(timeout_s):
            while True:
                if predicate():
                    return
                await asyncio.sleep(0.02)

    async def quiet(self, for_s: float = 1.2, timeout_s: float = 30.0) -> None:
        """Wait until the bot has been silent for ``for_s`` (it finished speaking)."""
        async with asyncio.timeout(timeout_s):
            while True:
                await asyncio.sleep(0.1)
                last = self.voiced()
                if last and time.monotonic() - last[-1].at >= for_s and not self.queued_media:
                    return

    # --- the channel ----------------------------------------------------------------------------

    def media_start(self) -> str:
        if self.json:
            return json.dumps(
                {
                    "event": "MEDIA_START",
                    "connection_id": self.connection_id,
                    "channel": f"WebSocket/{self.connection_id}-00000001",
                    "channel_id": self.channel_id,
                    "format": self.format,
                    "optimal_frame_size": self.frame_bytes,
                    "ptime": 20,
                    "channel_variables": self.variables,
                }
            )
        return (
            f"MEDIA_START connection_id:{self.connection_id} "
            f"channel:WebSocket/{self.connection_id}-00000001 channel_id:{self.channel_id} "
            f"format:{self.format} optimal_frame_size:{self.frame_bytes} ptime:20"
        )

    async def _event(self, name: str, **fields: str) -> None:
        if self.json:
            text = json.dumps({"event": name, "channel_id": self.channel_id, **fields})
        elif name == "DTMF_END":
            text = f"DTMF_END digit:{fields['digit']} channel_id:{self.channel_id}"
        elif "correlation_id" in fields:
            text = f"{name} {fields['correlation_id']}".strip()
        else:
            text = name
        self.events_sent.append(text)
        if self.socket is not None:
            with contextlib.suppress(ConnectionClosed):
                await self.socket.send(text)

    async def run(self, socket: Any) -> None:
        """The channel's life on ``socket``: MEDIA_START, then read, play and speak."""
        self.socket = socket
        await socket.send(self.media_start())
        self.answered = True  # auto-answer at connection (no 'n' option)
        player = asyncio.create_task(self._play())
        try:
            async for message in socket:
                if isinstance(message, bytes):
                    self._media(message)
                else:
                    await self._command(message)
        except ConnectionClosed:
            pass
        finally:
            player.cancel()
            self.close_code = socket.close_code
            self.closed.set()

    def _queue_frame(self, frame: bytes) -> None:
        self.queue.append(frame)
        self.queued_media += 1
        self.max_queued = max(self.max_queued, self.queued_media)

    def _media(self, data: bytes) -> None:
        if self.queued_media >= self.max_level:
            self.dropped += 1
            return
        size = self.frame_bytes
        if self.buffering and self.leftover:
            need = size - len(self.leftover)
            self.leftover += data[:need]
            data = data[need:]
            if len(self.leftover) < size:
                return
            self._queue_frame(self.leftover)
            self.leftover = b""
        if not self.buffering:
            self.leftover = b""
        whole = len(data) - len(data) % size
        for start in range(0, whole, size):
            self._queue_frame(data[start : start + size])
        if self.buffering and whole < len(data):
            self.leftover = data[whole:]
        if not self.full and self.queued_media >= self.xoff_level:
            self.full = True
            asyncio.get_running_loop().create_task(self._event("MEDIA_XOFF"))

    async def _command(self, text: str) -> None:
        self.commands.append((time.monotonic(), text))
        if self.json:
            data = json.loads(text)
            name, argument = data["command"], data.get("correlation_id", "")
        else:
            name, _, argument = text.strip().partition(" ")
        if name == "ANSWER":
            self.answered = True
        elif name == "HANGUP":
            self.hung_up = True
            assert self.socket is not None
            await self.socket.close(1000)
        elif name == "START_MEDIA_BUFFERING":
            self.buffering = True
        elif name == "STOP_MEDIA_BUFFERING":
            self.buffering = False
            if self.leftover:
                self._queue_frame(self.leftover)
                self.leftover = b""
            self.queue.append(f"MEDIA_BUFFERING_COMPLETED {argument}")
        elif name == "MARK_MEDIA":
            self.queue.append(f"MEDIA_MARK_PROCESSED {argument}")
        elif name == "FLUSH_MEDIA":
            self.queue.clear()
            self.queued_media = 0
            self.buffering = False
            self.leftover = b""
        elif name == "PAUSE_MEDIA":
            self.paused = True
        elif name == "CONTINUE_MEDIA":
            self.paused = False
        else:
            raise AssertionError(f"the bot sent an unknown command {text!r}")

    async def _play(self) -> None:
        """Every 20 ms: play one queued frame (control frames on the way go out at once) and
        send one frame of the caller's audio."""
        law = self.format if self.width == 1 else ""
        # silence in the channel's format (G.711's zero codes are 0xFF and 0xD5, not 0x00)
        silence = {"ulaw": b"\xff", "alaw": b"\xd5"}.get(law, b"\x00") * self.frame_bytes
        quiet_caller = silence
        slot = time.monotonic()
        while True:
            slot += 0.02
            await asyncio.sleep(max(0.0, slot - time.monotonic()))
            now = time.monotonic()
            frame: bytes | None = None
            if not self.paused:
                if self.full and self.queued_media < self.xon_level:
                    self.full = False
                    await self._event("MEDIA_XON")
                while self.queue and isinstance(self.queue[0], str):
                    name, _, argument = str(self.queue.popleft()).partition(" ")
                    await self._event(name, correlation_id=argument)
                if self.queue:
                    frame = bytes(self.queue.popleft())
                    self.queued_media -= 1
            pcm = frame if frame is not None else silence
            if law:
                pcm = g711.decode(pcm, law)
            self.heard.append(Played(now, pcm))
            said = self._say.popleft() if self._say else None
            if said is not None or self.send_silence:
                out = said if said is not None else None
                if out is not None and law:
                    out = g711.encode(out, law)
                assert self.socket is not None
                with contextlib.suppress(ConnectionClosed):
                    await self.socket.send(out if out is not None else quiet_caller)


def _is(text: str, name: str) -> bool:
    return text.split(" ")[0] == name or f'"{name}"' in text


async def dial(uri: str, channel: Channel) -> Channel:
    """Asterisk dials the bot (a websocket_client.conf connection) and runs the channel."""
    async with connect(uri, subprotocols=["media"], compression=None, proxy=None) as socket:  # type: ignore[list-item]
        await channel.run(socket)
    return channel


class FakeAsterisk:
    """Asterisk's HTTP server with chan_websocket's ``/media/<connection id>`` (incoming)."""

    def __init__(self) -> None:
        self.channels: dict[str, Channel] = {}
        self.connected: set[str] = set()
        self.port = 0
        self._server: Any = None

    def create(self, connection_id: str, **options: Any) -> Channel:
        """``Dial(WebSocket/INCOMING)``: a channel waiting for the app on its connection id."""
        channel = Channel(connection_id=connection_id, **options)
        self.channels[connection_id] = channel
        return channel

    async def __aenter__(self) -> FakeAsterisk:
        from http import HTTPStatus

        def check(connection: ServerConnection, request: Any) -> Any:
            path = request.path.split("?")[0]
            found = path.removeprefix("/media/")
            if not path.startswith("/media/") or found not in self.channels:
                return connection.respond(HTTPStatus.NOT_FOUND, "WebSocket instance not found\n")
            if found in self.connected:
                return connection.respond(HTTPStatus.CONFLICT, "already connected\n")
            self.connected.add(found)
            return None

        async def handler(socket: ServerConnection) -> None:
            found = socket.request.path.split("?")[0].removeprefix("/media/")  # type: ignore[union-attr]
            await self.channels[found].run(socket)

        self._server = await serve(
            handler,
            "127.0.0.1",
            0,
            subprotocols=["media"],  # type: ignore[list-item]
            process_request=check,
            compression=None,
        )
        self.port = next(iter(self._server.sockets)).getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        self._server.close()
        await self._server.wait_closed()


class StarletteSocket:
    """A Starlette WebSocket with the face of a ``websockets`` connection, for ``Channel.run``."""

    def __init__(self, socket: Any) -> None:
        self._socket = socket
        self.close_code: int | None = None

    def __aiter__(self) -> StarletteSocket:
        return self

    async def __anext__(self) -> str | bytes:
        from starlette.websockets import WebSocketDisconnect

        try:
            message = await self._socket.receive()
        except (WebSocketDisconnect, RuntimeError):
            raise StopAsyncIteration from None
        if message["type"] == "websocket.disconnect":
            self.close_code = message.get("code", 1000)
            raise StopAsyncIteration
        if message.get("bytes") is not None:
            return bytes(message["bytes"])
        return str(message.get("text", ""))

    async def send(self, message: str | bytes) -> None:
        try:
            if isinstance(message, bytes):
                await self._socket.send_bytes(message)
            else:
                await self._socket.send_text(message)
        except Exception as exc:  # closed
            raise ConnectionClosed(None, None) from exc

    async def close(self, code: int = 1000) -> None:
        self.close_code = code
        with contextlib.suppress(Exception):
            await self._socket.close(code=code)
