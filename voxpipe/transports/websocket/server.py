"""The call API's calls: each WebSocket that sends ``call_start`` becomes a call of the bot.

Per connection: wait for ``call_start`` (``start_timeout_s``), refuse it while draining or at
``max_calls`` (``call_failed``), settle the caller context from ``initial_vars``, build the
bot's chain between the transport's input and output, and run it until either side ends it or
it outlives ``max_call_s``. Until every processor has started the client hears nothing; if one
fails, the client gets ``call_failed`` with the reason. A malformed message ends its own call
with an ``error`` event, never the server. Calls report the same events as AudioSocket calls
(``/calls``, metrics, call records).
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.frames import HangupFrame
from voxpipe.logs import trace_of
from voxpipe.transports.audiosocket.server import CallHook
from voxpipe.transports.websocket.protocol import (
    INTERNAL_ERROR,
    POLICY,
    TOO_BIG,
    TRY_AGAIN_LATER,
    CallStart,
    ProtocolError,
    error_event,
    event,
    parse_call_start,
    trace_id_of,
)
from voxpipe.transports.websocket.transport import (
    CallConnection,
    MessageSocket,
    WebSocketTransport,
)

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import CallHost
    from voxpipe.pipelines.task import PipelineTask
    from voxpipe.transports.websocket.settings import WebSocketSettings

log = logging.getLogger("voxpipe.websocket")

# After ``max_call_s`` the bot hangs up politely (queued audio plays out); this long after
# that, the call is cut.
HANGUP_GRACE_S = 10.0
# How long the last messages of a call may take to leave before the connection is dropped.
CLOSE_GRACE_S = 5.0


@dataclass(eq=False)
class ActiveCall:
    """A call in progress over the call API."""

    call: Call
    task: PipelineTask
    connection: CallConnection
    started_at: float = field(default_factory=time.time)
    peer: str = ""


class CallApi(events.Observer):
    """Runs the bot for each call API connection; subscribe it to ``voxpipe.events`` so that
    clients get each turn's latency (``turn_latency``)."""

    def __init__(self, bot: CallHost, settings: WebSocketSettings) -> None:
        self.bot = bot
        self.settings = settings
        self.calls: dict[str, ActiveCall] = {}
        self.on_call_start: list[CallHook] = []
        self.draining = False
        self._handlers: set[asyncio.Task[None]] = set()
        self._taken = 0  # calls starting or running

    # --- events ----------------------------------------------------------------------------------

    def turn_latency(self, call: Call, seconds: float) -> None:
        active = self.calls.get(call.call_id)
        if active is not None and active.call is call:
            active.connection.event(event("turn_latency", ms=round(seconds * 1000)))

    # --- one connection --------------------------------------------------------------------------

    async def serve(self, socket: MessageSocket, *, trace_header: str | None, peer: str) -> None:
        """Serve one accepted WebSocket until its call is over (or it is turned away)."""
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            await self._serve(socket, trace_header, peer)
        finally:
            if handler is not None:
                self._handlers.discard(handler)

    async def _serve(self, socket: MessageSocket, trace_header: str | None, peer: str) -> None:
        try:
            start = await self._call_start(socket)
        except EOFError:
            log.debug("call API connection from %s closed before call_start", peer)
            return
        except ProtocolError as exc:
            log.warning("call API connection from %s refused: %s", peer, exc.message)
            events.emit.error(None, "protocol")
            events.emit.call_rejected("bad first message")
            await _close_with(socket, error_event(exc), exc.code, exc.reason)
            return
        refusal = self._refusal(start)
        if refusal:
            reason, message = refusal
            log.warning("call API call %s from %s refused: %s", start.call_id, peer, message)
            events.emit.call_rejected(reason)
            code = TRY_AGAIN_LATER if reason in ("draining", "max_calls") else POLICY
            await _close_with(socket, event("call_failed", reason=reason, message=message), code)
            return
        self._taken += 1
        try:
            await self._run_call(socket, start, trace_header, peer)
        finally:
            self._taken -= 1

    async def _call_start(self, socket: MessageSocket) -> CallStart:
        settings = self.settings
        try:
            async with asyncio.timeout(settings.start_timeout_s):
                first = await socket.receive()
        except TimeoutError:
            raise ProtocolError(
                "no_call_start", f"no call_start within {settings.start_timeout_s:g} s"
            ) from None
        if len(first) > settings.max_message_bytes:
            raise ProtocolError(
                "too_large",
                f"a message is at most {settings.max_message_bytes} bytes; this one has "
                f"{len(first)}",
                TOO_BIG,
            )
        return parse_call_start(first, settings.sample_rate)

    def _refusal(self, start: CallStart) -> tuple[str, str] | None:
        """Why ``start`` may not become a call now (reason, message), or ``None``."""
        if self.draining:
            return "draining", "the bot is shutting down; call again"
        if self._taken >= self.settings.max_calls:
            return "max_calls", f"the bot is busy ({self.settings.max_calls} calls); call again"
        if start.call_id in self.calls:
            return "duplicate_call_id", f"call {start.call_id} is already in progress"
        return None

    async def _run_call(
        self, socket: MessageSocket, start: CallStart, trace_header: str | None, peer: str
    ) -> None:
        from voxpipe.records.context import context_from_form

        bot, settings = self.bot, self.settings
        call = bot.new_call(start.call_id)
        call.data["trace_id"] = (
            start.trace_id or _header_trace(trace_header) or trace_of(call.call_id)
        )
        call.caller = context_from_form(start.initial_vars, way_in="websocket")
        for hook in [*self.on_call_start, bot.start_call]:
            try:
                await hook(call)
            except Exception as exc:
                call.log.exception("call start hook failed; refusing the call")
                events.emit.error(call, "call_start")
                failed = event("call_failed", reason="start_failed", message=str(exc))
                await _close_with(socket, failed, INTERNAL_ERROR, "start_failed")
                return
        accepted = event(
            "call_accepted",
            call_id=call.call_id,
            trace_id=call.data["trace_id"],
            sample_rate=start.sample_rate,
        )
        connection = CallConnection(socket, call, accepted)
        transport = WebSocketTransport(connection, settings, start.sample_rate)
        task = bot.create_pipeline(call, head=[transport.input()], tail=[transport.output()])
        self.calls[call.call_id] = ActiveCall(call, task, connection, peer=peer)
        writer = asyncio.create_task(connection.run_writer(), name=f"{call.call_id}:ws-writer")
        loop = asyncio.get_running_loop()
        timers = [
            loop.call_later(settings.max_call_s, task.queue_frame, HangupFrame("max_call_s")),
            loop.call_later(settings.max_call_s + HANGUP_GRACE_S, task.cancel, "max_call_s"),
        ]
        call.log.info("call API call from %s started (%d Hz)", peer, start.sample_rate)
        events.emit.call_started(call)
        reason = "error"
        try:
            reason = await task.run()
        finally:
            for timer in timers:
                timer.cancel()
            del self.calls[call.call_id]
            await connection.drained(CLOSE_GRACE_S, writer)
            if not connection.accepted:
                why = task.error or reason
                call.log.warning("call API call refused: it did not start: %s", why)
                failed = event("call_failed", reason="start_failed", message=why)
                await _close_with(socket, failed, INTERNAL_ERROR, "start_failed")
            call.log.info("call ended after %.1f s: %s", call.duration_s, reason)
            events.emit.call_ended(call, reason)

    # --- draining --------------------------------------------------------------------------------

    async def stop(self, drain_s: float = 0.0) -> None:
        """Take no more calls; let running ones go on for up to ``drain_s``; end the rest."""
        self.draining = True
        if self._handlers and drain_s > 0:
            await asyncio.wait(set(self._handlers), timeout=drain_s)
        for active in list(self.calls.values()):
            active.call.log.info("hanging up: server shutting down")
            active.task.cancel("server shutting down")
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=CLOSE_GRACE_S + 1)


def _header_trace(value: str | None) -> str | None:
    """The ``X-Trace-ID`` header's trace id; a malformed one is ignored (and logged)."""
    try:
        return trace_id_of(value, "X-Trace-ID")
    except ProtocolError as exc:
        log.warning("ignoring the X-Trace-ID header: %s", exc.message)
        return None


async def _close_with(socket: MessageSocket, message: str, code: int, reason: str = "") -> None:
    """Send one last event and close (the client may be gone already)."""
    try:
        await socket.send(message)
        await socket.close(code, reason)
    except (OSError, EOFError, RuntimeError):
        pass
