"""The AudioSocket server: Asterisk connects, and each connection becomes one call of the bot.

Per connection: check the client's address (``allow_from``) and the call limit (``max_calls``),
read the UUID message, build the bot's pipeline between an ``AudioSocketInput`` and an
``AudioSocketOutput``, and run it until either side hangs up or the call outlives
``max_call_s``. A malformed stream ends its own call, never the server.

A call the bot cannot take (it is full, or draining) is refused the way Asterisk understands:
the bot closes its side at once (FIN), reads and drops what Asterisk had already sent (the
UUID), and closes. Asterisk reads the end of the stream as a hang-up: ``AudioSocket()``
returns and the dialplan goes on; ``Dial(AudioSocket/...)`` sees its channel answered and hung
up. Closing with the UUID unread would reset the connection instead, and Asterisk would fail
the application and hang up the caller. With ``max_calls: auto`` the limit comes from
measuring the bot's models when the server starts (``voxpipe.models.capacity``).
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxpipe import events
from voxpipe.frames import HangupFrame
from voxpipe.transports.audiosocket.protocol import Kind, ProtocolError, read_message
from voxpipe.transports.audiosocket.settings import AudioSocketSettings
from voxpipe.transports.audiosocket.transport import AudioSocketTransport, Connection

if TYPE_CHECKING:
    from voxpipe.models.capacity import Capacity
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import CallHost
    from voxpipe.pipelines.task import PipelineTask

log = logging.getLogger("voxpipe.audiosocket")

# After ``max_call_s`` the bot hangs up politely (queued audio plays out); this long after
# that, the call is cut.
HANGUP_GRACE_S = 10.0
# How long a closed connection may take to deliver its last bytes before it is cut.
CLOSE_GRACE_S = 5.0
# How long a refused caller's connection is read (and dropped) before it is closed.
REFUSE_DRAIN_S = 2.0

CallHook = Callable[["Call"], Awaitable[None]]


@dataclass(eq=False)
class ActiveCall:
    """A call in progress on this server."""

    call: Call
    task: PipelineTask
    connection: Connection
    started_at: float = field(default_factory=time.time)
    peer: str = ""

    @property
    def rate(self) -> int | None:
        """The caller's audio rate, once their first audio message has arrived."""
        return self.connection.caller_rate


class AudioSocketServer:
    """Accepts Asterisk's AudioSocket connections and runs the bot for each call."""

    def __init__(self, bot: CallHost, settings: AudioSocketSettings) -> None:
        self.bot = bot
        self.settings = settings
        self.calls: dict[str, ActiveCall] = {}
        self.on_call_start: list[CallHook] = []
        self.draining = False
        # The call limit: the configured figure, or (``auto``) the one measured at start.
        self.max_calls = self.settings.max_calls if self.settings.max_calls != "auto" else 0
        self.capacity: Capacity | None = None
        self._networks = [ipaddress.ip_network(n, strict=False) for n in self.settings.allow_from]
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._connections = 0

    @property
    def port(self) -> int:
        """The TCP port actually bound (useful with port 0)."""
        if self._server is None or not self._server.sockets:
            raise RuntimeError("the server is not listening")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def listening(self) -> bool:
        """Whether the server was started (a bot may serve other transports only)."""
        return self._server is not None

    @property
    def host(self) -> str:
        """The address bound."""
        return self.settings.host

    def load(self) -> dict[str, Any]:
        """Calls in progress against the limit (for ``/health``), and the model workers'."""
        load: dict[str, Any] = {
            "max_calls": self.max_calls,
            "active_calls": self._connections,
            "load": round(self._connections / self.max_calls, 3) if self.max_calls else 0.0,
            "full": self._connections >= self.max_calls,
        }
        if "models" in self.bot.shared:
            from voxpipe.models.shared import pool_started

            pool = pool_started(self.bot)
            if pool is not None:
                load["models"] = pool.stats()
        return load

    async def start(self) -> None:
        """Size the call limit (``max_calls: auto``: measure the bot's models), then bind and
        start accepting calls."""
        from voxpipe.worker_env import shares_port

        if self.settings.max_calls == "auto":
            from voxpipe.models.capacity import calibrate

            self.capacity = await calibrate(self.bot, self.bot.speech_stop_s)
            self.max_calls = self.capacity.max_calls

        self._server = await asyncio.start_server(
            self._on_connection,
            self.settings.host,
            self.settings.port,
            backlog=512,
            reuse_port=shares_port(),  # serve --workers: the kernel spreads calls over workers
        )

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting; let running calls go on for up to ``drain_s``; hang up the rest."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        if self._handlers and drain_s > 0:
            await asyncio.wait(set(self._handlers), timeout=drain_s)
        for active in list(self.calls.values()):
            active.call.log.info("hanging up: server shutting down")
            active.task.cancel("server shutting down")
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5.0)
        for handler in list(self._handlers):
            handler.cancel()
        if self._server is not None:
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

    def _refusal(self, host: str) -> str:
        """Why a connection from ``host`` may not become a call now ("" if it may)."""
        if self.draining:
            return "draining"
        if not self._allowed(host):
            return "allow_from"
        if self._connections >= self.max_calls:
            return "max_calls"
        return ""

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        peername = writer.get_extra_info("peername")
        if not peername:  # reset before it could be served: no caller left to refuse
            log.debug("a connection was reset before it was served")
            writer.close()
            return
        host = str(peername[0]) if peername else ""
        peer = f"{host}:{peername[1]}" if peername else "?"
        refusal = self._refusal(host)
        if refusal:
            log.warning("refused a connection from %s: %s", peer, refusal)
            events.emit.call_rejected(refusal)
            if refusal == "allow_from":
                writer.close()
            else:
                await _refuse(reader, writer)
            return
        sock: socket.socket | None = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._connections += 1
        if handler is not None:
            self._handlers.add(handler)
        try:
            await self._serve_call(reader, writer, peer)
        finally:
            self._connections -= 1
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()
            # A peer that never reads would keep a gracefully closing socket open forever.
            asyncio.get_running_loop().call_later(CLOSE_GRACE_S, writer.transport.abort)

    async def _read_uuid(self, reader: asyncio.StreamReader) -> str:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.uuid_timeout_s):
                message = await read_message(reader, settings.read_timeout_s)
        except TimeoutError:
            raise ProtocolError(f"no UUID within {settings.uuid_timeout_s:g} s") from None
        if message.kind is not Kind.UUID:
            raise ProtocolError(f"first message is 0x{message.kind:02x}, not the UUID")
        return message.call_id

    async def _serve_call(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, peer: str
    ) -> None:
        try:
            call_id = await self._read_uuid(reader)
        except EOFError:
            # Connected and closed without sending a byte: a load balancer's health check.
            log.debug("connection from %s closed without a message", peer)
            return
        except (ProtocolError, ConnectionError) as exc:
            log.warning("connection from %s dropped: %s", peer, exc)
            events.emit.error(None, "protocol")
            events.emit.call_rejected("bad first message")
            return
        if call_id in self.calls:
            log.warning("connection from %s dropped: call %s is already running", peer, call_id)
            events.emit.call_rejected("duplicate call id")
            return
        call = self.bot.new_call(call_id)
        for hook in [*self.on_call_start, self.bot.start_call]:
            try:
                await hook(call)
            except Exception:
                call.log.exception("call start hook failed; hanging up")
                events.emit.error(call, "call_start")
                return
        connection = Connection(reader, writer)
        transport = AudioSocketTransport(connection, self.settings)
        task = self.bot.create_pipeline(call, head=[transport.input()], tail=[transport.output()])
        self.calls[call_id] = ActiveCall(call, task, connection, peer=peer)
        loop = asyncio.get_running_loop()
        max_s = self.settings.max_call_s
        timers = [
            loop.call_later(max_s, task.queue_frame, HangupFrame(reason="max_call_s")),
            loop.call_later(max_s + HANGUP_GRACE_S, task.cancel, "max_call_s"),
        ]
        call.log.info("call from %s started", peer)
        events.emit.call_started(call)
        reason = "error"
        try:
            reason = await task.run()
        finally:
            for timer in timers:
                timer.cancel()
            del self.calls[call_id]
            call.log.info("call ended after %.1f s: %s", call.duration_s, reason)
            events.emit.call_ended(call, reason)


async def _refuse(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Refuse a call cleanly: end our side at once, drop what the caller sent, then close."""
    try:
        writer.write_eof()
        async with asyncio.timeout(REFUSE_DRAIN_S):
            while await reader.read(65536):
                pass
    except (TimeoutError, ConnectionError, OSError):
        pass
    finally:
        writer.close()
