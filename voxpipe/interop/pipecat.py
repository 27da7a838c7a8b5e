"""voxpipe's phone line in a Pipecat pipeline: AudioSocket and chan_websocket transports for
Pipecat.

Asterisk's ``AudioSocket()`` connects over TCP, one connection per call; ``serve`` accepts them
and hands each to your code as an ``AudioSocketTransport``, a Pipecat transport whose
``input()`` and ``output()`` go at the ends of your pipeline::

    async def on_call(transport: AudioSocketTransport) -> None:
        pipeline = Pipeline([transport.input(), stt, user_aggregator, llm, tts,
                             transport.output(), assistant_aggregator])
        worker = PipelineWorker(pipeline)
        runner = WorkerRunner(handle_sigint=False)
        await runner.add_workers(worker)
        await runner.run()

    listener = await serve(on_call, listen="0.0.0.0:9092")

Underneath is voxpipe's own AudioSocket code, exactly what its bots use: the protocol as
Asterisk speaks it (every message kind, 8-192 kHz), stateful resampling between the caller's
rate and the pipeline's, bot audio paced in 20 ms messages on the process-wide monotonic clock,
keepalive silence so Asterisk's 2 s inactivity limit never ends a call, DTMF, and hang-ups both
ways. Caller DTMF becomes Pipecat's ``InputDTMFFrame``; the caller hanging up fires
``on_client_disconnected`` and ends the pipeline (a ``CancelWorkerFrame``); the pipeline's
``EndFrame`` plays out what is queued and hangs up (``0x00``). An interruption drops the bot
audio queued for the socket at once.

Asterisk's WebSocket channel driver (chan_websocket, Asterisk 20.16+) works the same way:
``serve_chan_websocket(on_call, listen="0.0.0.0:8765")`` accepts the WebSocket Asterisk opens
for each call (``Dial(WebSocket/<connection>/c(slin16))``, ARI externalMedia
``transport=websocket``) and hands it to ``on_call`` as a ``ChanWebSocketTransport``; its line is
voxpipe's chan_websocket code: ``MEDIA_START`` (slin at any rate, G.711, plain-text or JSON
control), ``ANSWER``, bot audio sent a little ahead for Asterisk to play from its own queue,
``FLUSH_MEDIA`` when Pipecat interrupts the bot, ``MEDIA_XOFF``/``MEDIA_XON`` honoured (the
pipeline's audio waits, nothing is dropped), ``DTMF_END`` as ``InputDTMFFrame`` and ``HANGUP``
at the pipeline's end. ``ChanWebSocketListener.connect(url)`` dials out to Asterisk's
``/media/<connection id>`` instead (``Dial(WebSocket/INCOMING)``).

Both transports share one ``LineTransport``: a voxpipe chain of the transport's own input and
output with a relay between them, run as a call of its own beside the Pipecat pipeline.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import socket
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.frames import frames as pf
from pipecat.processors.frame_processor import FrameDirection
from pipecat.transports.base_input import BaseInputTransport
from pipecat.transports.base_output import BaseOutputTransport
from pipecat.transports.base_transport import BaseTransport, TransportParams

from voxpipe import frames as vx
from voxpipe.models.capacity import WITHOUT_MODELS
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.transports.asterisk_websocket.protocol import MediaStart
from voxpipe.transports.asterisk_websocket.server import CLOSE_GRACE_S, MediaListener
from voxpipe.transports.asterisk_websocket.settings import AsteriskWebSocketSettings
from voxpipe.transports.asterisk_websocket.transport import (
    AsteriskWebSocketTransport,
    MediaConnection,
    MediaSocket,
)
from voxpipe.transports.audiosocket.protocol import Kind, ProtocolError, read_message
from voxpipe.transports.audiosocket.settings import AudioSocketSettings
from voxpipe.transports.audiosocket.transport import (
    AudioSocketInput,
    AudioSocketOutput,
    Connection,
)

log = logging.getLogger("voxpipe.interop.pipecat")

# Bot audio handed to the socket runs at most this far ahead of real time, so that Pipecat's
# idea of what has been played (bot speaking frames, interruptions) stays close to the line.
AHEAD_S = 0.06
# How long the pipeline's end may take to play out what is queued before the call is cut.
PLAY_OUT_S = 30.0

# While Asterisk says MEDIA_XOFF, the pipeline's output looks again this often.
PAUSE_POLL_S = 0.02

OnCall = Callable[["AudioSocketTransport"], Awaitable[None]]
OnChanWebSocketCall = Callable[["ChanWebSocketTransport"], Awaitable[None]]


class _Relay(FrameProcessor):
    """Between the line's voxpipe input and output: caller audio and keys go to Pipecat,
    bot audio from Pipecat goes on to the output; a caller hang-up is reported."""

    __slots__ = ("_transport",)

    def __init__(self, transport: LineTransport) -> None:
        super().__init__(name="pipecat.relay")
        self._transport = transport

    async def process_frame(self, frame: vx.Frame, direction: vx.Direction) -> None:
        if direction is vx.UPSTREAM:
            return  # the output's bot-speaking reports: Pipecat's output makes its own
        if type(frame) is vx.InputAudioFrame:
            await self._transport._input.caller_audio(frame)
            return
        if isinstance(frame, vx.DTMFFrame):
            await self._transport._input.caller_key(frame.digit)
            return
        if isinstance(frame, vx.CancelFrame):
            self._transport._hung_up(frame.reason)
        await self.push_frame(frame, direction)


class LineInputTransport(BaseInputTransport):
    """The pipeline's first processor: the caller's audio and keys."""

    def __init__(self, transport: LineTransport, params: TransportParams, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._transport = transport

    async def start(self, frame: pf.StartFrame) -> None:
        await super().start(frame)
        await self._transport._start_line(self.sample_rate)
        await self.set_transport_ready(frame)

    async def stop(self, frame: pf.EndFrame) -> None:
        await super().stop(frame)

    async def cancel(self, frame: pf.CancelFrame) -> None:
        await super().cancel(frame)
        self._transport._cancel_line("pipeline cancelled")

    async def caller_audio(self, frame: vx.InputAudioFrame) -> None:
        await self.push_audio_frame(
            pf.InputAudioRawFrame(frame.audio, frame.sample_rate, frame.channels)
        )

    async def caller_key(self, digit: str) -> None:
        try:
            button = KeypadEntry(digit)
        except ValueError:  # A-D: no Pipecat keypad entry
            log.info("call %s: key %s has no Pipecat keypad entry", self._transport.call_id, digit)
            return
        await self.push_frame(pf.InputDTMFFrame(button))


class LineOutputTransport(BaseOutputTransport):
    """The pipeline's last processor (before any aggregator): bot audio to the caller."""

    def __init__(self, transport: LineTransport, params: TransportParams, **kwargs: Any):
        super().__init__(params, **kwargs)
        self._transport = transport
        self._sent_s = 0.0
        self._since = 0.0

    async def start(self, frame: pf.StartFrame) -> None:
        await super().start(frame)
        await self.set_transport_ready(frame)

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        if isinstance(frame, pf.InterruptionFrame):
            self._transport._interrupt_line()
            self._sent_s = 0.0
        await super().process_frame(frame, direction)

    async def write_audio_frame(self, frame: pf.OutputAudioRawFrame) -> bool:
        if await self._transport._hold():  # MEDIA_XOFF: the audio waited; a new stretch
            self._sent_s = 0.0
        if not await self._transport._play(frame):
            return False
        now = time.monotonic()
        if self._sent_s <= 0 or now - self._since > self._sent_s + AHEAD_S:
            self._since, self._sent_s = now, 0.0  # a new stretch of speech
        self._sent_s += len(frame.audio) / (2 * frame.num_channels * frame.sample_rate)
        ahead = self._since + self._sent_s - now
        if ahead > AHEAD_S:
            await asyncio.sleep(ahead - AHEAD_S)
        return True

    async def stop(self, frame: pf.EndFrame) -> None:
        await super().stop(frame)  # Pipecat's queued audio reaches the line first
        await self._transport._hang_up_line()

    async def cancel(self, frame: pf.CancelFrame) -> None:
        await super().cancel(frame)
        self._transport._cancel_line("pipeline cancelled")


class LineTransport(BaseTransport):
    """One call as a Pipecat transport (``input()`` and ``output()``) over voxpipe's line.

    Events: ``on_client_connected(transport, call_id)`` once the line is up,
    ``on_client_disconnected(transport, call_id)`` when the caller hangs up.
    """

    _connection: Connection

    def __init__(self, call_id: str, params: TransportParams | None, name: str) -> None:
        super().__init__(name=name)
        self.call_id = call_id
        self.params = params or TransportParams(audio_in_enabled=True, audio_out_enabled=True)
        self.call = Call(call_id=call_id, bot="pipecat")
        self._input = LineInputTransport(self, self.params, name=f"{self.name}::input")
        self._output = LineOutputTransport(self, self.params, name=f"{self.name}::output")
        self._task: PipelineTask | None = None
        self._runner: asyncio.Task[str] | None = None
        self._disconnected = False
        self.ended = asyncio.Event()
        self._register_event_handler("on_client_connected")
        self._register_event_handler("on_client_disconnected")

    def input(self) -> LineInputTransport:
        return self._input

    def output(self) -> LineOutputTransport:
        return self._output

    def get_client_id(self, client: Any) -> str:
        return str(client)

    @property
    def caller_rate(self) -> int | None:
        """The rate of the caller's audio, once it is known (8000 for slin or ``0x10``...)."""
        return self._connection.caller_rate

    def _line(self, relay: _Relay) -> list[FrameProcessor]:
        """The line's voxpipe chain: the transport's input, ``relay``, the transport's output."""
        raise NotImplementedError

    # --- the line: voxpipe's input and output in a call of their own ---------------------------

    async def _start_line(self, sample_rate: int) -> None:
        if self._task is not None:
            return
        self.call.sample_rate = sample_rate
        self._task = PipelineTask(self._line(_Relay(self)), self.call)
        self._runner = asyncio.create_task(self._task.run(), name=f"{self.call_id}:line")
        self._runner.add_done_callback(lambda _: self.ended.set())
        await self._call_event_handler("on_client_connected", self.call_id)

    async def _hold(self) -> bool:
        """Wait while the line is paused (chan_websocket's ``MEDIA_XOFF``); whether it was."""
        if not self._connection.paused:
            return False
        # ``paused`` is a plain flag the line's input sets from Asterisk's messages: looked at.
        while self._connection.paused and not self._connection.closed:  # noqa: ASYNC110
            await asyncio.sleep(PAUSE_POLL_S)
        return True

    async def _play(self, frame: pf.OutputAudioRawFrame) -> bool:
        task = self._task
        if task is None or task.done or self._connection.closed or frame.num_channels != 1:
            return False
        await task.push_frame(vx.OutputAudioFrame(frame.audio, frame.sample_rate))
        return True

    def _interrupt_line(self) -> None:
        if self._task is not None and not self._task.done:
            for processor in self._task.processors:
                processor.interrupt()

    async def _hang_up_line(self) -> None:
        task, runner = self._task, self._runner
        if task is None or runner is None or task.done:
            return
        task.queue_frame(vx.HangupFrame(reason="pipeline ended"))
        try:
            await asyncio.wait_for(asyncio.shield(runner), PLAY_OUT_S)
        except TimeoutError:
            task.cancel("play-out took too long")

    def _cancel_line(self, reason: str) -> None:
        if self._task is not None:
            self._task.cancel(reason)

    def _hung_up(self, reason: str) -> None:
        if self._disconnected or self._connection.closed_by == "bot":
            return
        self._disconnected = True
        log.info("call %s: %s", self.call_id, reason or "caller hung up")
        asyncio.get_running_loop().create_task(self._on_disconnected())

    async def _on_disconnected(self) -> None:
        await self._call_event_handler("on_client_disconnected", self.call_id)
        await self._input.push_frame(
            pf.CancelWorkerFrame(reason="caller hung up"), FrameDirection.UPSTREAM
        )

    async def close(self) -> None:
        """Hang up (if the line is still up) and wait for the line to close."""
        if self._task is not None and not self._task.done:
            self._task.cancel("closed")
        if self._runner is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner


class AudioSocketTransport(LineTransport):
    """One Asterisk AudioSocket call as a Pipecat transport (``input()`` and ``output()``).

    Events: ``on_client_connected(transport, call_id)`` once the line is up,
    ``on_client_disconnected(transport, call_id)`` when the caller hangs up.
    """

    def __init__(
        self,
        connection: Connection,
        call_id: str,
        *,
        params: TransportParams | None = None,
        settings: AudioSocketSettings | None = None,
    ) -> None:
        super().__init__(call_id, params, f"AudioSocketTransport({call_id[:8]})")
        self.settings = settings or AudioSocketSettings.model_validate({})
        self._connection = connection

    def _line(self, relay: _Relay) -> list[FrameProcessor]:
        return [
            AudioSocketInput(self._connection, self.settings),
            relay,
            AudioSocketOutput(self._connection, self.settings),
        ]


class ChanWebSocketTransport(LineTransport):
    """One Asterisk chan_websocket call as a Pipecat transport (``input()`` and ``output()``).

    ``start`` is the call's ``MEDIA_START`` (its format, control form and channel variables:
    ``start.variables``). Events as ``AudioSocketTransport``'s.
    """

    _connection: MediaConnection

    def __init__(
        self,
        socket: MediaSocket,
        start: MediaStart,
        call_id: str,
        *,
        params: TransportParams | None = None,
        settings: AsteriskWebSocketSettings | None = None,
    ) -> None:
        super().__init__(call_id, params, f"ChanWebSocketTransport({call_id[:8]})")
        self.settings = settings or AsteriskWebSocketSettings.model_validate({})
        self.start = start
        self._connection = MediaConnection(socket, self.call, start)
        self._writer = asyncio.create_task(
            self._connection.run_writer(), name=f"{call_id}:chan-ws-writer"
        )

    def _line(self, relay: _Relay) -> list[FrameProcessor]:
        line = AsteriskWebSocketTransport(self._connection, self.settings)
        return [line.input(), relay, line.output()]

    async def close(self) -> None:
        """Hang up (if the line is still up), send what is queued and close the WebSocket."""
        await super().close()
        await self._connection.drained(CLOSE_GRACE_S, self._writer)


async def _run(
    calls: dict[str, Any], on_call: Callable[[Any], Awaitable[None]], transport: LineTransport
) -> None:
    """Run ``on_call(transport)`` as one of ``calls``; then hang up and close the line."""
    calls[transport.call_id] = transport
    try:
        await on_call(transport)
    except Exception:
        log.exception("call %s: on_call failed", transport.call_id)
    finally:
        await transport.close()
        del calls[transport.call_id]


class AudioSocketListener:
    """Accepts Asterisk's AudioSocket connections; each call runs ``on_call``."""

    def __init__(
        self,
        on_call: OnCall,
        settings: AudioSocketSettings,
        params: Callable[[], TransportParams] | None = None,
    ) -> None:
        self.on_call = on_call
        self.settings = settings
        self.params = params
        self.calls: dict[str, AudioSocketTransport] = {}
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()
        self._networks = [ipaddress.ip_network(n, strict=False) for n in settings.allow_from]

    @property
    def port(self) -> int:
        """The TCP port bound (useful with port 0)."""
        assert self._server is not None and self._server.sockets
        return int(self._server.sockets[0].getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._on_connection, self.settings.host, self.settings.port
        )

    async def stop(self) -> None:
        """Stop accepting, hang up every call, and wait for their handlers."""
        if self._server is not None:
            self._server.close()
        for transport in list(self.calls.values()):
            await transport.close()
        for handler in list(self._handlers):
            handler.cancel()
        if self._handlers:
            await asyncio.wait(set(self._handlers), timeout=5)

    async def _on_connection(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        handler = asyncio.current_task()
        if handler is not None:
            self._handlers.add(handler)
        try:
            await self._serve(reader, writer)
        finally:
            if handler is not None:
                self._handlers.discard(handler)
            writer.close()

    def _allowed(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return False
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        if not self._allowed(str(peer[0]) if peer else ""):
            log.warning("refused a call from %s: allow_from", peer)
            return
        # ``auto`` sizes a voxpipe bot's limit from its own models; a Pipecat pipeline's
        # services are its own, so the listener takes the figure for a bot without models.
        limit = self.settings.max_calls
        if len(self.calls) >= (WITHOUT_MODELS if limit == "auto" else limit):
            log.warning("refused a call from %s: max_calls", peer)
            return
        try:
            async with asyncio.timeout(self.settings.uuid_timeout_s):
                message = await read_message(reader, self.settings.read_timeout_s)
            if message.kind is not Kind.UUID:
                raise ProtocolError(f"first message is 0x{message.kind:02x}, not the UUID")
        except EOFError:
            return  # a health check
        except (TimeoutError, ProtocolError, ConnectionError) as exc:
            log.warning("connection from %s dropped: %s", peer, exc or "no UUID in time")
            return
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        params = self.params() if self.params is not None else None
        transport = AudioSocketTransport(
            Connection(reader, writer), message.call_id, params=params, settings=self.settings
        )
        log.info("call %s from %s", transport.call_id, peer)
        await _run(self.calls, self.on_call, transport)


class ChanWebSocketListener(MediaListener):
    """Accepts Asterisk's chan_websocket connections (or makes them: ``connect(url)``); each
    call runs ``on_call``. Refusals (``allow_from``, ``max_calls``) happen before the upgrade,
    with HTTP 403/503, so Asterisk's ``Dial`` fails and the dialplan goes on."""

    def __init__(
        self,
        on_call: OnChanWebSocketCall,
        settings: AsteriskWebSocketSettings,
        params: Callable[[], TransportParams] | None = None,
    ) -> None:
        super().__init__(settings)
        self.on_call = on_call
        self.params = params
        self.calls: dict[str, ChanWebSocketTransport] = {}

    def _running(self, call_id: str) -> bool:
        return call_id in self.calls

    async def _hang_up_all(self, reason: str) -> None:
        for transport in list(self.calls.values()):
            log.info("call %s: hanging up: %s", transport.call_id, reason)
            await transport.close()

    async def stop(self, drain_s: float = 0.0) -> None:
        """Stop accepting, let calls go on for up to ``drain_s``, hang up the rest and end
        their handlers (a pipeline that outlives its line is cancelled)."""
        self.draining = True
        if self._handlers and drain_s > 0:
            await asyncio.wait(set(self._handlers), timeout=drain_s)
        await self._hang_up_all("listener stopped")
        for handler in list(self._handlers):
            handler.cancel()
        await super().stop(0.0)

    async def _run_call(
        self,
        socket: MediaSocket,
        start: MediaStart,
        call_id: str,
        peer: str,
        query: dict[str, str],
    ) -> None:
        params = self.params() if self.params is not None else None
        transport = ChanWebSocketTransport(
            socket, start, call_id, params=params, settings=self.settings
        )
        log.info(
            "call %s from %s (channel %s, %s)",
            call_id,
            peer,
            start.channel or start.channel_id,
            start.format,
        )
        await _run(self.calls, self.on_call, transport)


async def serve(
    on_call: OnCall,
    *,
    listen: str = "0.0.0.0:9092",
    params: Callable[[], TransportParams] | None = None,
    settings: AudioSocketSettings | None = None,
) -> AudioSocketListener:
    """Take Asterisk's AudioSocket calls on ``listen``; run ``on_call(transport)`` for each.

    ``params`` makes each call's ``TransportParams`` (default: audio in and out enabled);
    ``settings`` are voxpipe's AudioSocket settings (timeouts, keepalive, resampling quality,
    ``max_calls``), whose ``listen`` is replaced by the argument.
    """
    base = settings or AudioSocketSettings.model_validate({})
    listener = AudioSocketListener(
        on_call, base.model_copy(update={"listen": listen}), params=params
    )
    await listener.start()
    return listener


async def serve_chan_websocket(
    on_call: OnChanWebSocketCall,
    *,
    listen: str = "0.0.0.0:8765",
    params: Callable[[], TransportParams] | None = None,
    settings: AsteriskWebSocketSettings | None = None,
) -> ChanWebSocketListener:
    """Take Asterisk's chan_websocket calls on ``listen``; run ``on_call(transport)`` for each.

    ``params`` and ``settings`` as for ``serve`` (``settings`` are voxpipe's chan_websocket
    settings: ``send_ahead_s``, ``start_timeout_s``, ``allow_from``, ``max_calls``...).
    """
    base = settings or AsteriskWebSocketSettings.model_validate({})
    listener = ChanWebSocketListener(
        on_call, base.model_copy(update={"listen": listen}), params=params
    )
    await listener.start()
    return listener


__all__ = [
    "AudioSocketListener",
    "AudioSocketTransport",
    "ChanWebSocketListener",
    "ChanWebSocketTransport",
    "LineInputTransport",
    "LineOutputTransport",
    "LineTransport",
    "serve",
    "serve_chan_websocket",
]
