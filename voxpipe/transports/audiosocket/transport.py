"""The two ends of a call's chain: caller audio in from the socket, bot audio out to it.

``AudioSocketInput`` is the first processor: a reader task turns messages into input audio
frames (resampled to the pipeline rate) and DTMF frames. ``AudioSocketOutput`` is the last: it
resamples bot audio to the outbound rate, cuts it into 20 ms messages and sends one per slot of
the process-wide ticker, so that Asterisk receives audio at real time.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.frames import (
    UPSTREAM,
    BotSpokeFrame,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    Direction,
    DTMFFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    OutputAudioFrame,
    TransferFrame,
    TTSStoppedFrame,
    Utterance,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.sessions import outcomes
from voxpipe.transports.audiosocket.pacing import FRAME_S, ticker
from voxpipe.transports.audiosocket.protocol import (
    HEADER,
    KIND_OF_RATE,
    RATE_OF_KIND,
    Kind,
    ProtocolError,
    encode,
    read_message,
)
from voxpipe.transports.audiosocket.resample import Quality, Resampler

if TYPE_CHECKING:
    from voxpipe.transports.audiosocket.settings import AudioSocketSettings

log = logging.getLogger("voxpipe.audiosocket")

# Until the caller's first audio shows its rate, answer at 8 kHz: every Asterisk version
# accepts 0x10, while 0x11-0x18 tear the call down on Asterisk older than 20.17/21.12/22.7.
DEFAULT_OUTBOUND_RATE = 8000
# Bot speech counts as stopped after this many slots without audio (an underrun is not a stop).
STOP_AFTER_SLOTS = 3
# A peer that stops reading: give up once this much is waiting in the socket's send buffer.
MAX_SEND_BACKLOG = 256 * 1024
HANGUP = encode(Kind.HANGUP)


class Connection:
    """One AudioSocket connection, shared by the call's input and output processors."""

    __slots__ = ("caller_rate", "closed", "closed_by", "messages_sent", "reader", "writer")

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.caller_rate: int | None = None
        self.closed = False
        self.closed_by = ""
        self.messages_sent = 0

    def send(self, data: bytes) -> bool:
        """Write one whole message in one write; ``False`` once the connection is gone."""
        if self.closed:
            return False
        transport = self.writer.transport
        if transport.is_closing():
            self.closed = True
            return False
        if transport.get_write_buffer_size() > MAX_SEND_BACKLOG:
            self.closed_by = self.closed_by or "peer stopped reading"
            self.closed = True
            transport.abort()  # a graceful close would wait for the peer to read it all
            return False
        transport.write(data)
        self.messages_sent += 1
        return True

    def close(self, by: str) -> None:
        """Close the socket (Asterisk takes that as a hangup); ``by`` says why, for the reader."""
        self.expect_close(by)
        self.closed = True
        self.writer.close()

    def expect_close(self, by: str) -> None:
        """The peer is about to close the socket because of ``by``: not a caller hang-up."""
        if not self.closed_by:
            self.closed_by = by


class AudioSocketInput(FrameProcessor):
    """First processor: reads the caller's messages and pushes them down the chain."""

    __slots__ = ("_conn", "_quality", "_read_timeout_s", "_resampler")

    def __init__(self, connection: Connection, settings: AudioSocketSettings) -> None:
        super().__init__(name="audiosocket.in")
        self._conn = connection
        self._read_timeout_s = settings.read_timeout_s
        self._quality: Quality = settings.resample_quality
        self._resampler: Resampler | None = None

    async def start(self) -> None:
        self.create_task(self._read(), name="audiosocket.read")

    async def _read(self) -> None:
        conn, task, call = self._conn, self.task, self.call
        rate = call.sample_rate
        try:
            while True:
                message = await read_message(conn.reader, self._read_timeout_s)
                kind = message.kind
                in_rate = RATE_OF_KIND.get(kind)
                if in_rate is not None:
                    resampler = self._resampler
                    if resampler is None or resampler.in_rate != in_rate:
                        conn.caller_rate = in_rate
                        resampler = self._resampler = Resampler(in_rate, rate, self._quality)
                    pcm = resampler.process(message.payload)
                    if pcm:
                        await self.push_frame(InputAudioFrame(pcm, rate))
                elif kind is Kind.DTMF:
                    await self.push_frame(DTMFFrame(message.digit))
                elif kind is Kind.HANGUP:
                    outcomes.settle(call, outcomes.CALLER)
                    task.cancel("caller hung up")
                    return
                elif kind is Kind.ERROR:
                    call.log.warning("caller sent an error message (%s)", message.payload.hex())
                    task.cancel(f"caller error {message.payload.hex()}".strip())
                    return
                else:
                    call.log.debug("ignoring a repeated UUID message")
        except (EOFError, ConnectionError):
            if conn.closed_by != "bot":  # the bot's own hang-up ends the call by itself
                if not conn.closed_by:
                    outcomes.settle(call, outcomes.CALLER)
                task.cancel(conn.closed_by or "caller hung up")
        except ProtocolError as exc:
            if conn.closed_by:
                if conn.closed_by != "bot":
                    task.cancel(conn.closed_by)
                return
            call.log.warning("protocol error, ending the call: %s", exc)
            events.emit.error(call, "protocol")
            task.cancel(f"protocol error: {exc}")


class AudioSocketOutput(FrameProcessor):
    """Last processor: sends bot audio at real time, keeps a silent line alive, hangs up."""

    __slots__ = (
        "_conn",
        "_drained",
        "_fixed_rate",
        "_frame_bytes",
        "_frame_header",
        "_idle_slots",
        "_keepalive_s",
        "_last_sent",
        "_pending",
        "_pending_marks",
        "_pending_waited",
        "_quality",
        "_queue",
        "_resampler",
        "_speaking",
        "_stopping",
    )

    def __init__(self, connection: Connection, settings: AudioSocketSettings) -> None:
        super().__init__(name="audiosocket.out")
        self._conn = connection
        self._fixed_rate = None if settings.output_rate == "caller" else settings.output_rate
        self._keepalive_s = settings.keepalive_s
        self._quality: Quality = settings.resample_quality
        self._queue: collections.deque[tuple[bytes, list[Utterance] | None]] = collections.deque()
        self._pending = bytearray()
        self._pending_marks: list[Utterance] = []
        self._pending_waited = False
        self._resampler: Resampler | None = None
        self._frame_header = b""
        self._frame_bytes = 0
        self._speaking = False
        self._idle_slots = 0
        self._last_sent = 0.0
        self._stopping = False
        self._drained: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        self._last_sent = asyncio.get_running_loop().time()
        ticker().subscribe(self)

    async def stop(self) -> None:
        self._close_now()

    async def cancel(self) -> None:
        self._close_now(outcomes.ERROR)
        self._wake_drain()

    def _close_now(self, outcome: str | None = None) -> None:
        """Stop sending and close the connection at once (settling ``outcome`` first)."""
        ticker().unsubscribe(self)
        if outcome is not None:
            outcomes.settle(self.call, outcome)
        if not self._conn.closed:
            self._conn.close("bot")

    def interrupt(self) -> None:
        """Drop every queued frame now: the caller stops hearing the bot within one slot."""
        self._queue.clear()
        self._pending.clear()
        self._pending_marks.clear()
        if self._resampler is not None:
            self._resampler.reset()
        if self._speaking:
            self._speaking = False
            self._announce(BotStoppedSpeakingFrame())

    # --- frames ------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if direction is UPSTREAM:
            await self.push_frame(frame, direction)
            return
        if isinstance(frame, OutputAudioFrame):
            if not self._stopping:
                self._enqueue(frame)
            return
        if isinstance(frame, TTSStoppedFrame):
            # The sentence is complete: its tail follows at once instead of after a pause.
            self._flush_pending()
        elif isinstance(frame, EndFrame | HangupFrame):
            await self._play_out()
            self._hang_up(outcomes.HANGUP)
        elif isinstance(frame, TransferFrame):
            await self._play_out()
            if await self._transfer(frame):
                self._hang_up(outcomes.transfer(frame.context, frame.extension, frame.priority))
                self.task.end("transferred")
            else:
                self._hang_up(outcomes.ERROR)
                self.task.end("transfer failed")
        elif isinstance(frame, CancelFrame):
            self._stopping = True
            self._close_now(outcomes.ERROR)
        await self.push_frame(frame, direction)

    async def _transfer(self, frame: TransferFrame) -> bool:
        """Carry the transfer out; whether the caller was handed on."""
        controller = self.call.controller
        if controller is None:
            # With the AudioSocket() application, hanging up continues the dialplan, whose
            # next step is the transfer.
            self.call.log.info("transfer: handing the caller back to the dialplan")
            return True
        # The controller (ARI) drops the bot's leg as part of the transfer: Asterisk closes this
        # socket before the transfer returns, and that is the bot's doing, not a caller hang-up.
        self._conn.expect_close("bot")
        try:
            await controller.transfer(frame.context, frame.extension, frame.priority)
        except Exception as exc:
            self.call.log.warning(
                "transfer to %s/%s failed: %r", frame.context, frame.extension, exc
            )
            await self.push_error(f"transfer failed: {exc}")
            return False
        return True

    def _hang_up(self, outcome: str) -> None:
        """Settle the call's outcome, then hang up: the dialplan may ask for it at once."""
        ticker().unsubscribe(self)
        outcomes.settle(self.call, outcome)
        if self._conn.send(HANGUP):
            self._conn.close("bot")

    async def _play_out(self) -> None:
        """Wait until every queued frame has been sent at its pace, then stop taking audio."""
        self._stopping = True
        if self._conn.closed or not (self._queue or self._pending or self._resampler):
            return
        self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def _wake_drain(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _outbound_rate(self) -> int:
        return self._fixed_rate or self._conn.caller_rate or DEFAULT_OUTBOUND_RATE

    def _enqueue(self, frame: OutputAudioFrame) -> None:
        resampler = self._resampler
        out_rate = self._outbound_rate()
        if (
            resampler is None
            or resampler.in_rate != frame.sample_rate
            or (resampler.out_rate != out_rate)
        ):
            if resampler is not None:
                self._flush_pending()
            resampler = self._resampler = Resampler(frame.sample_rate, out_rate, self._quality)
            self._frame_bytes = int(out_rate * FRAME_S) * 2
            self._frame_header = HEADER.pack(KIND_OF_RATE[out_rate], self._frame_bytes)
        pcm = resampler.process(frame.audio)
        if not self._pending and len(pcm) == self._frame_bytes:  # the usual whole 20 ms frame
            self._queue.append((self._frame_header + pcm, None))
            self._pending_waited = False
        else:
            self._pending += pcm
            self._cut()
        if frame.utterance is not None:
            if self._pending or not self._queue:
                self._pending_marks.append(frame.utterance)
            else:
                self._mark_last([frame.utterance])

    def _mark_last(self, utterances: list[Utterance]) -> None:
        """Count ``utterances`` once the last queued message has been sent (now, if none is)."""
        if not self._queue:
            self._count_played(utterances)
            return
        message, marks = self._queue[-1]
        if marks is None:
            self._queue[-1] = (message, list(utterances))
        else:
            marks.extend(utterances)

    def _cut(self) -> None:
        """Move every whole 20 ms frame from the pending buffer to the send queue."""
        pending, size, header = self._pending, self._frame_bytes, self._frame_header
        while len(pending) >= size:
            marks = self._pending_marks or None
            if marks:
                self._pending_marks = []
            self._queue.append((header + pending[:size], marks))
            del pending[:size]
        self._pending_waited = False

    def _flush_pending(self) -> None:
        """Queue what the resampler holds and the last partial frame (a prompt has ended)."""
        if self._resampler is not None:
            self._pending += self._resampler.flush()
            self._cut()
        payload = bytes(self._pending[: len(self._pending) & ~1])
        self._pending.clear()
        if payload:
            self._queue.append(
                (self._frame_header[:1] + len(payload).to_bytes(2, "big") + payload, None)
            )
        if self._pending_marks:
            self._mark_last(self._pending_marks)
            self._pending_marks = []

    # --- the 20 ms slot ----------------------------------------------------------------------

    def tick(self, now: float) -> None:
        """Send the next frame, or after a pause the tail of the prompt, or a keepalive."""
        queue = self._queue
        if not queue and (self._pending or self._resampler is not None):
            if self._pending_waited or self._stopping:
                self._flush_pending()
                self._resampler = None
            else:
                self._pending_waited = True
        if queue:
            message, marks = queue.popleft()
            if not self._conn.send(message):
                self._wake_drain()
                return
            self._last_sent = now
            self._idle_slots = 0
            if not self._speaking:
                self._speaking = True
                self._announce(BotStartedSpeakingFrame())
            if marks is not None:
                self._count_played(marks)
            return
        if self._speaking:
            self._idle_slots += 1
            if self._idle_slots >= STOP_AFTER_SLOTS:
                self._speaking = False
                self._announce(BotStoppedSpeakingFrame())
        self._wake_drain()
        if now - self._last_sent >= self._keepalive_s and not self._stopping:
            rate = self._outbound_rate()
            self._conn.send(encode(KIND_OF_RATE[rate], bytes(int(rate * FRAME_S) * 2)))
            self._last_sent = now

    def _count_played(self, marks: list[Utterance]) -> None:
        for utterance in marks:
            utterance.frames_played += 1
            if utterance.finished:
                self._announce(BotSpokeFrame(text=utterance.text))

    def _announce(self, frame: Frame) -> None:
        """Tell the processors upstream (from the ticker, which must not wait)."""
        if self._task is not None and not self.task.done:
            self.create_task(self.push_frame(frame, UPSTREAM), name="audiosocket.announce")
