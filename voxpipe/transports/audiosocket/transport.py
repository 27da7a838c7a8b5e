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
import time
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.frames import (
    UPSTREAM,
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
from voxpipe.transports.audiosocket.pacing import FRAME_S, MAX_CATCH_UP_S, ticker
from voxpipe.transports.audiosocket.protocol import (
    HEADER,
    KIND_OF_RATE,
    RATE_OF_KIND,
    Kind,
    ProtocolError,
    buffered,
    check,
    encode,
    kind_of,
)
from voxpipe.transports.audiosocket.resample import Quality, Resampler

if TYPE_CHECKING:
    from voxpipe.transports.audiosocket.settings import AudioSocketSettings

log = logging.getLogger("voxpipe.audiosocket")

# When the caller's first audio has not shown its rate within ``first_audio_wait_s``, answer at
# 8 kHz: every Asterisk version accepts 0x10, while 0x11-0x18 tear the call down on Asterisk
# older than 20.17/21.12/22.7.
DEFAULT_OUTBOUND_RATE = 8000
# Bot speech counts as stopped after this long without audio (an underrun is not a stop).
STOP_AFTER_S = 3 * FRAME_S
# Messages a message of caller audio lets the output send beyond its schedule (see
# ``Connection.live``): its own echo, and one more from a queue that grew.
LIVE_MESSAGES = 2
# A partial frame waits this long for more audio before it is sent as the sentence's last.
PAUSE_S = STOP_AFTER_S
# A peer that stops reading: give up once this much is waiting in the socket's send buffer.
MAX_SEND_BACKLOG = 256 * 1024
HANGUP = encode(Kind.HANGUP)
# One read takes at most this much of what has arrived (a second of 48 kHz audio is 96 KB).
READ_SIZE = 64 * 1024
_RATE_OF_BYTE = {int(kind): rate for kind, rate in RATE_OF_KIND.items()}
# The outputs' schedules run on the ticker's clock. (Not loop.time(): uvloop's stands still
# while a pass of the loop runs, and asyncio.get_running_loop() is a system call on 3.11.)
_clock = time.monotonic


class Connection:
    """One AudioSocket connection, shared by the call's input and output processors."""

    # chan_websocket's MEDIA_XOFF: the output keeps its audio queued until this is False.
    # (A class attribute here: an AudioSocket connection is never paused.)
    paused = False

    __slots__ = (
        "caller_rate",
        "closed",
        "closed_by",
        "live",
        "messages_sent",
        "reader",
        "writer",
    )

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.caller_rate: int | None = None
        # While a message of caller audio goes down the chain, the output may send this many
        # messages beyond its schedule: audio made from the caller's at once (an echo) leaves
        # as the caller's did, paced by the caller, and a queue a busy loop let grow drains.
        self.live = 0
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
        try:
            await self._read_messages(conn.reader)
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

    async def _read_messages(self, reader: asyncio.StreamReader) -> None:
        """Read what has arrived and handle every whole message in it, until the call ends.

        A read takes all the bytes waiting, so a loop that fell behind handles the messages
        that queued up in one go.
        """
        conn, push, rate = self._conn, self.push_frame, self.call.sample_rate
        rates = _RATE_OF_BYTE
        buffer = b""
        started = 0.0  # when the message the buffer holds the start of began to arrive
        while True:
            fresh = not buffer
            if buffer:  # inside a message: the rest must come within read_timeout_s
                try:
                    async with asyncio.timeout(started + self._read_timeout_s - _clock()):
                        data = await reader.read(READ_SIZE)
                except TimeoutError:
                    if not buffered(reader):
                        raise ProtocolError(
                            f"message of kind 0x{buffer[0]:02x} incomplete after "
                            f"{self._read_timeout_s:g} s"
                        ) from None
                    # More had come: the loop was late (overloaded), not the caller.
                    data = await reader.read(READ_SIZE)
                    started = _clock()
                if not data:
                    raise ProtocolError(
                        f"connection closed inside a message of kind 0x{buffer[0]:02x} "
                        f"({len(buffer)} bytes of it)"
                    )
                buffer += data
            else:
                buffer = await reader.read(READ_SIZE)
                if not buffer:
                    raise EOFError("peer closed the connection")
            end, pos = len(buffer), 0
            while pos < end:
                first = buffer[pos]
                in_rate = rates.get(first)
                kind = kind_of(first) if in_rate is None else None  # an unknown kind ends it now
                start = pos + 3
                if start > end:
                    break
                size = (buffer[pos + 1] << 8) | buffer[pos + 2]
                if end - start < size:
                    break
                payload = buffer[start : start + size]
                pos = start + size
                if kind is None and size and not size & 1:  # caller audio, nearly always
                    resampler = self._resampler
                    if resampler is None or resampler.in_rate != in_rate:
                        assert in_rate is not None
                        conn.caller_rate = in_rate
                        resampler = self._resampler = Resampler(in_rate, rate, self._quality)
                    pcm = resampler.process(payload)
                    if pcm:
                        conn.live = LIVE_MESSAGES
                        await push(InputAudioFrame(pcm, rate))
                        conn.live = 0
                elif not await self._handle(kind if kind is not None else kind_of(first), payload):
                    return
            if pos:
                buffer = buffer[pos:]
            if buffer and (pos or fresh):  # a message began to arrive, and not all of it
                started = _clock()

    async def _handle(self, kind: Kind, payload: bytes) -> bool:
        """A message other than well-formed audio; ``False`` once the call is over."""
        check(kind, payload)
        call, task = self.call, self.task
        if kind is Kind.DTMF:
            await self.push_frame(DTMFFrame(payload.decode("ascii")))
        elif kind is Kind.HANGUP:
            outcomes.settle(call, outcomes.CALLER)
            task.cancel("caller hung up")
            return False
        elif kind is Kind.ERROR:
            call.log.warning("caller sent an error message (%s)", payload.hex())
            task.cancel(f"caller error {payload.hex()}".strip())
            return False
        else:
            call.log.debug("ignoring a repeated UUID message")
        return True


class AudioSocketOutput(FrameProcessor):
    """Last processor: sends bot audio at real time, keeps a silent line alive, hangs up.

    Bot audio is resampled to the outbound rate and cut into 20 ms messages, each with its slot
    on a schedule that advances 20 ms per message (from now, when audio comes after a pause).
    A message leaves as soon as it is ready and its slot has come: a prompt queued at once
    leaves one message per pass of the process-wide ticker. Audio made at once from the
    caller's (an echo) leaves the moment it is made, paced by the caller (``Connection.live``).
    Until the caller's first audio shows the rate to answer in, bot audio is held (at most
    ``first_audio_wait_s``).
    """

    __slots__ = (
        "_conn",
        "_drained",
        "_due",
        "_fixed_rate",
        "_frame_bytes",
        "_frame_header",
        "_held",
        "_hold_until",
        "_keepalive_s",
        "_last_audio",
        "_last_sent",
        "_pending",
        "_pending_marks",
        "_quality",
        "_queue",
        "_rate",
        "_resampler",
        "_settled",
        "_speaking",
        "_stopping",
        "_wait_s",
    )

    # How far ahead of its slot a message may leave (a peer that plays from its own queue).
    SEND_AHEAD_S = 0.0
    # Bot speech counts as stopped after this long without a message sent.
    STOP_AFTER_S = STOP_AFTER_S

    def __init__(self, connection: Connection, settings: AudioSocketSettings) -> None:
        super().__init__(name="audiosocket.out")
        self._conn = connection
        self._fixed_rate = None if settings.output_rate == "caller" else settings.output_rate
        self._keepalive_s = settings.keepalive_s
        self._wait_s = settings.first_audio_wait_s
        self._quality: Quality = settings.resample_quality
        self._queue: collections.deque[tuple[bytes, list[Utterance] | None]] = collections.deque()
        self._held: list[OutputAudioFrame] = []
        self._pending = bytearray()
        self._pending_marks: list[Utterance] = []
        self._resampler: Resampler | None = None
        self._rate = 0  # the outbound rate, once committed to
        self._settled = False  # the rate is the configured one or the caller's
        self._frame_header = b""
        self._frame_bytes = 0
        self._due = 0.0
        self._speaking = False
        self._last_sent = 0.0
        self._last_audio = 0.0
        self._hold_until = 0.0
        self._stopping = False
        self._drained: asyncio.Future[None] | None = None

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        now = _clock()
        self._last_sent = self._due = now
        self._hold_until = now + self._wait_s
        if self._fixed_rate is not None:
            self._commit(self._fixed_rate)
            self._settled = True
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
        self._held.clear()
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
            self._send_ready(_clock())
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
        if not self._rate and self._held:
            self._commit(self._conn.caller_rate or DEFAULT_OUTBOUND_RATE)
        self._flush_pending()
        if self._conn.closed or not self._queue:
            return
        self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def _wake_drain(self) -> None:
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    # --- the outbound rate -------------------------------------------------------------------

    def _commit(self, rate: int) -> None:
        """Answer at ``rate`` from now on; audio held or queued at another rate is re-rated."""
        old = self._rate
        self._rate = rate
        self._frame_bytes = int(rate * FRAME_S) * 2
        self._frame_header = HEADER.pack(KIND_OF_RATE[rate], self._frame_bytes)
        self._resampler = None
        if old and (self._queue or self._pending):
            self._rerate(old)
        held, self._held = self._held, []
        for frame in held:
            self._enqueue(frame)

    def _rerate(self, old: int) -> None:
        """Resample what is queued at ``old`` to the new rate, keeping each message's marks."""
        audio = bytearray()
        marks: list[tuple[int, list[Utterance]]] = []  # (end of a message's audio, its marks)
        for message, message_marks in self._queue:
            audio += message[3:]
            if message_marks:
                marks.append((len(audio), message_marks))
        audio += self._pending
        if self._pending_marks:
            marks.append((len(audio), self._pending_marks))
        self._queue.clear()
        self._pending.clear()
        self._pending_marks = []
        resampler = Resampler(old, self._rate, self._quality)
        pcm = resampler.process(bytes(audio)) + resampler.flush()
        size, header = self._frame_bytes, self._frame_header
        ratio = len(pcm) / max(1, len(audio))
        ends = [min(len(pcm), -(-int(end * ratio) // size) * size) for end, _ in marks]
        for start in range(0, len(pcm), size):
            chunk = pcm[start : start + size]
            found = [
                m
                for end, (_, ms) in zip(ends, marks, strict=True)
                if start < end <= start + size
                for m in ms
            ]
            if len(chunk) == size:
                self._queue.append((header + chunk, found or None))
            else:
                self._pending += chunk
                self._pending_marks = found

    def _check_rate(self, now: float) -> None:
        """Commit to the caller's rate once it is known, or the default once waiting is over."""
        caller = self._conn.caller_rate
        if caller is not None:
            self._settled = True
            if caller != self._rate:
                self._commit(caller)
        elif not self._rate and now >= self._hold_until:
            self._commit(DEFAULT_OUTBOUND_RATE)

    # --- queueing ----------------------------------------------------------------------------

    def _enqueue(self, frame: OutputAudioFrame) -> None:
        if not self._settled:
            self._check_rate(_clock())
            if not self._rate:
                self._held.append(frame)
                return
        resampler = self._resampler
        if resampler is None or resampler.in_rate != frame.sample_rate:
            if resampler is not None:
                self._flush_pending()
            resampler = self._resampler = Resampler(frame.sample_rate, self._rate, self._quality)
        pcm = resampler.process(frame.audio)
        queue = self._queue
        now = _clock()
        if not queue:  # audio after a pause: its schedule starts now
            self._due = max(self._due, now)
        if not self._pending and len(pcm) == self._frame_bytes:  # the usual whole 20 ms frame
            queue.append((self._frame_header + pcm, None))
        else:
            self._pending += pcm
            self._cut()
        if frame.utterance is not None:
            if self._pending or not queue:
                self._pending_marks.append(frame.utterance)
            else:
                self._mark_last([frame.utterance])
        self._last_audio = now
        if queue:
            self._send_ready(now)

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

    def _flush_pending(self) -> None:
        """Queue the filter's tail and the last partial frame (a sentence has ended)."""
        if self._resampler is not None and self._rate:
            tail = self._resampler.flush()
            if tail:
                self._pending += tail
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

    # --- sending -----------------------------------------------------------------------------

    def _send_ready(self, now: float) -> None:
        """Send every queued message whose slot has come.

        While caller audio is being handled (``Connection.live``), what it made leaves at once
        even ahead of the schedule, which then does not advance.
        """
        queue, conn = self._queue, self._conn
        due = self._due
        if now - due > MAX_CATCH_UP_S:  # a stall: restart the schedule rather than burst
            due = now
        sent = False
        ahead = now + self.SEND_AHEAD_S
        while queue:
            if conn.paused:  # the peer asked for a pause: everything stays queued
                break
            if due <= ahead:
                due += FRAME_S
            elif conn.live:
                conn.live -= 1
            else:
                break
            message, marks = queue.popleft()
            if not conn.send(message):
                self._wake_drain()
                return
            sent = True
            if marks is not None:
                self._count_played(marks)
        self._due = due
        if sent:
            self._last_sent = now
            if not self._speaking:
                self._speaking = True
                self._announce(BotStartedSpeakingFrame())

    def tick(self, now: float) -> None:
        """The ticker's pass: send what is due, end a pause's sentence, keep the line alive."""
        if not self._settled:
            self._check_rate(now)
            if not self._rate:
                return
        if self._queue:
            self._send_ready(now)
            if self._queue:
                return
        if self._pending and now - self._last_audio >= PAUSE_S:
            self._flush_pending()  # no more audio came: the partial frame ends the sentence
            self._send_ready(now)
            return
        if self._stopping and self._pending:
            self._flush_pending()
            self._send_ready(now)
            return
        if self._speaking and now - self._last_sent >= self.STOP_AFTER_S:
            self._speaking = False
            self._announce(BotStoppedSpeakingFrame())
        self._wake_drain()
        if now - self._last_sent >= self._keepalive_s and not self._stopping:
            self._conn.send(encode(self._frame_header[0], bytes(self._frame_bytes)))
            self._last_sent = now

    def _count_played(self, marks: list[Utterance]) -> None:
        for utterance in marks:
            utterance.frames_played += 1

    def _announce(self, frame: Frame) -> None:
        """Tell the processors upstream (from the ticker, which must not wait)."""
        if self._task is not None and not self.task.done:
            self.create_task(self.push_frame(frame, UPSTREAM), name="audiosocket.announce")


class AudioSocketTransport:
    """The two ends of one AudioSocket call over ``connection`` (see ``transports.base``)."""

    def __init__(self, connection: Connection, settings: AudioSocketSettings) -> None:
        self.connection = connection
        self.settings = settings
        self._input: AudioSocketInput | None = None
        self._output: AudioSocketOutput | None = None

    def input(self) -> AudioSocketInput:
        """The first processor of the call's chain (made once)."""
        if self._input is None:
            self._input = AudioSocketInput(self.connection, self.settings)
        return self._input

    def output(self) -> AudioSocketOutput:
        """The last processor of the call's chain (made once)."""
        if self._output is None:
            self._output = AudioSocketOutput(self.connection, self.settings)
        return self._output
