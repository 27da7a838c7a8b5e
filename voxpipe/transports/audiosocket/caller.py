"""The simulated caller: places a call over a real TCP socket, speaking AudioSocket like Asterisk.

It streams the caller's audio at real time (silence between steps, like a phone line), records
what the bot sends, and reports when each side spoke and who hung up. It is both a user feature
(``run-pipeline call``: try a bot without a phone, in ``voxpipe.bots.call``) and the harness of
the project's tests.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import uuid
import wave
from collections.abc import AsyncIterator, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from voxpipe.transports.audiosocket.pacing import FRAME_S
from voxpipe.transports.audiosocket.protocol import (
    KIND_OF_RATE,
    RATE_OF_KIND,
    Kind,
    ProtocolError,
    encode,
    read_message,
)
from voxpipe.transports.audiosocket.resample import Resampler, resample_once

# A bot message counts as speech when a sample reaches this level (about -36 dBFS).
VOICE_PEAK = 512
# Bot speech with gaps shorter than this is one segment.
SEGMENT_GAP_S = 0.25


# --- the script --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Say:
    """Speak ``pcm`` (PCM16 mono at the call's rate), streamed at real time."""

    pcm: bytes


@dataclass(frozen=True)
class Silence:
    """Stay quiet (silence frames keep flowing) for ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Dtmf:
    """Press keys, one DTMF message per digit, ``gap_s`` apart."""

    digits: str
    gap_s: float = 0.1


@dataclass(frozen=True)
class WaitForBot:
    """Listen until the bot has spoken and then been quiet for ``quiet_s`` (or ``timeout_s``).

    Speech that ended less than ``quiet_s`` before the step began counts (an echo, a reply that
    overlapped the caller's last words); older speech does not. With ``start_s``, a bot that has
    not started speaking within that time is taken to say nothing (a greeting that may not exist).
    """

    timeout_s: float
    quiet_s: float = 0.6
    start_s: float | None = None


@dataclass(frozen=True)
class WaitForHangup:
    """Listen until the bot hangs up (or ``timeout_s``)."""

    timeout_s: float


@dataclass(frozen=True)
class Hangup:
    """Hang up the way Asterisk does: close the connection."""


Step = Say | Silence | Dtmf | WaitForBot | WaitForHangup | Hangup


# --- the result --------------------------------------------------------------------------------


@dataclass(frozen=True)
class TimelineEvent:
    """Something that happened ``t`` seconds into the call; ``who`` is caller or bot."""

    t: float
    who: str
    what: str


@dataclass
class CallResult:
    """What happened on one simulated call.

    ``bot_segments`` are where the bot's audio was not silent, by arrival time;
    ``caller_segments`` the same for the caller's own audio, by the time it was sent (so an
    echo's round trip is ``bot_segments[i][0] - caller_segments[i][0]``). ``transcript`` is
    the bot's dialogue history (``role``: user or assistant, ``content``), filled by
    ``run-pipeline call`` when it serves the bot in-process and the bot keeps one.
    """

    call_id: str
    rate: int
    received: bytes = b""
    bot_segments: list[tuple[float, float]] = field(default_factory=list)
    timeline: list[TimelineEvent] = field(default_factory=list)
    hung_up_by: Literal["caller", "bot", "timeout"] = "caller"
    messages: list[tuple[float, int, int]] = field(default_factory=list)
    caller_segments: list[tuple[float, float]] = field(default_factory=list)
    transcript: list[dict[str, str]] = field(default_factory=list)

    def bot_audio_s(self) -> float:
        """Seconds of bot audio received (silence included)."""
        return len(self.received) / 2 / self.rate

    def summary(self) -> dict[str, Any]:
        """The result as JSON-ready data, without the audio."""
        data = asdict(self)
        data.pop("received")
        data.pop("messages")
        data["bot_audio_s"] = round(self.bot_audio_s(), 3)
        data["messages_received"] = len(self.messages)
        return data


# --- one call ----------------------------------------------------------------------------------


def _is_voice(pcm: bytes) -> bool:
    import numpy as np

    samples = np.frombuffer(pcm[: len(pcm) & ~1], dtype="<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) >= VOICE_PEAK


def _add_voice(segments: list[tuple[float, float]], start: float, end: float) -> None:
    """Extend the last voiced segment, or begin a new one after a gap of ``SEGMENT_GAP_S``."""
    if segments and start - segments[-1][1] <= SEGMENT_GAP_S:
        segments[-1] = (segments[-1][0], round(end, 3))
    else:
        segments.append((round(start, 3), round(end, 3)))


class _Line:
    """A connected call: a sender at real time, a receiver, and what both observed."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        result: CallResult,
        first_audio_after_s: float = 0.0,
    ) -> None:
        self.reader = reader
        self.writer = writer
        self.result = result
        self.loop = asyncio.get_running_loop()
        self.t0 = self.loop.time()
        self.outgoing = bytearray()
        self.said = asyncio.Event()
        self.said.set()
        self.bot_gone = asyncio.Event()
        self.hung_up = False  # the caller closed the line itself
        self.last_voice = -1.0
        self.received = bytearray()
        self.kind = KIND_OF_RATE[result.rate]
        self.frame_bytes = int(result.rate * FRAME_S) * 2
        self.first_audio_after_s = first_audio_after_s

    def now(self) -> float:
        return self.loop.time() - self.t0

    def note(self, who: str, what: str) -> None:
        self.result.timeline.append(TimelineEvent(round(self.now(), 3), who, what))

    async def send_audio(self) -> None:
        """One frame every 20 ms: the caller's words when there are some, silence otherwise.

        The first frame leaves ``first_audio_after_s`` after the UUID (a channel that is
        bridged late, as ARI's externalMedia is).
        """
        if self.first_audio_after_s > 0:
            await asyncio.sleep(self.first_audio_after_s)
        size, slot = self.frame_bytes, self.loop.time()
        silence = bytes(size)
        segments = self.result.caller_segments
        while not self.writer.is_closing():
            if self.outgoing:
                chunk = bytes(self.outgoing[:size]).ljust(size, b"\0")
                del self.outgoing[:size]
                if not self.outgoing:
                    self.said.set()
            else:
                chunk = silence
            self.writer.write(encode(self.kind, chunk))
            if chunk is not silence and _is_voice(chunk):
                t = self.now()
                _add_voice(segments, t, t + FRAME_S)
            slot += FRAME_S
            await asyncio.sleep(max(0.0, slot - self.loop.time()))

    async def receive(self) -> None:
        """Record every message of the bot until it hangs up."""
        result, rate = self.result, self.result.rate
        resampler: Resampler | None = None
        segments = result.bot_segments
        try:
            while True:
                message = await read_message(self.reader, 5.0)
                t = self.now()
                result.messages.append((round(t, 4), int(message.kind), len(message.payload)))
                in_rate = RATE_OF_KIND.get(message.kind)
                if in_rate is not None:
                    if resampler is None or resampler.in_rate != in_rate:
                        resampler = Resampler(in_rate, rate)
                    self.received += resampler.process(message.payload)
                    if _is_voice(message.payload):
                        end = t + len(message.payload) / 2 / in_rate
                        _add_voice(segments, t, end)
                        self.last_voice = end
                elif message.kind is Kind.HANGUP:
                    break
                else:
                    self.note("bot", f"sent a message of kind 0x{message.kind:02x}")
        except (EOFError, ConnectionError):
            pass
        except ProtocolError as exc:
            self.note("bot", f"protocol error: {exc}")
        if not self.hung_up:  # a bot that just closes the connection (a refusal) hung up too
            self.bot_gone.set()

    async def run_step(self, step: Step) -> None:
        if isinstance(step, Say):
            self.note("caller", f"speaks {len(step.pcm) / 2 / self.result.rate:.2f} s")
            self.said.clear()
            self.outgoing += step.pcm[: len(step.pcm) & ~1]
            await self._until(self.said.wait())
        elif isinstance(step, Silence):
            await self._until(asyncio.sleep(step.seconds))
        elif isinstance(step, Dtmf):
            for digit in step.digits:
                self.note("caller", f"presses {digit}")
                self.writer.write(encode(Kind.DTMF, digit.encode("ascii")))
                await self._until(asyncio.sleep(step.gap_s))
        elif isinstance(step, WaitForBot):
            await self._wait_for_bot(step)
        elif isinstance(step, WaitForHangup):
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.bot_gone.wait(), step.timeout_s)
            if not self.bot_gone.is_set():
                self.note("caller", f"bot did not hang up within {step.timeout_s:g} s")

    async def _until(self, awaitable: Any) -> None:
        """Await a step's own wait, cut short when the bot hangs up."""
        step = asyncio.ensure_future(awaitable)
        gone = asyncio.ensure_future(self.bot_gone.wait())
        await asyncio.wait({step, gone}, return_when=asyncio.FIRST_COMPLETED)
        for pending in (step, gone):
            pending.cancel()

    async def _wait_for_bot(self, step: WaitForBot) -> None:
        start = self.now()
        deadline = start + step.timeout_s
        heard = False
        while not self.bot_gone.is_set() and self.now() < deadline:
            heard = self.last_voice >= start - step.quiet_s
            if heard and self.now() - self.last_voice >= step.quiet_s:
                return
            if not heard and step.start_s is not None and self.now() - start >= step.start_s:
                return
            await asyncio.sleep(FRAME_S)
        if not self.bot_gone.is_set():
            problem = "was still speaking after" if heard else "stayed silent for"
            self.note("caller", f"bot {problem} {step.timeout_s:g} s")


async def place_call(
    host: str,
    port: int,
    script: Sequence[Step],
    *,
    rate: int = 8000,
    call_id: str | None = None,
    max_duration_s: float = 60.0,
    first_audio_after_s: float = 0.0,
) -> CallResult:
    """Call the bot at ``host:port``, play ``script``, and report what happened.

    The call starts like Asterisk's: the UUID message, then audio at ``rate`` every 20 ms (the
    first ``first_audio_after_s`` after the UUID, as from a channel bridged late). It ends with
    the script (the caller hangs up), when the bot hangs up, or after ``max_duration_s``.
    """
    if rate not in KIND_OF_RATE:
        raise ValueError(f"no AudioSocket kind for {rate} Hz")
    result = CallResult(call_id=call_id or str(uuid.uuid4()), rate=rate)
    reader, writer = await asyncio.open_connection(host, port)
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    line = _Line(reader, writer, result, first_audio_after_s)
    writer.write(encode(Kind.UUID, uuid.UUID(result.call_id).bytes))
    line.note("caller", "connected")
    sender = asyncio.create_task(line.send_audio())
    receiver = asyncio.create_task(line.receive())
    try:
        async with asyncio.timeout(max_duration_s):
            for step in script:
                if line.bot_gone.is_set() or isinstance(step, Hangup):
                    break
                await line.run_step(step)
    except TimeoutError:
        result.hung_up_by = "timeout"
    if line.bot_gone.is_set():
        result.hung_up_by = "bot"
        line.note("bot", "hung up")
    else:
        line.note("caller", "hung up" if result.hung_up_by == "caller" else "gave up (timeout)")
    sender.cancel()
    line.hung_up = True
    writer.close()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(receiver, 2.0)
    await asyncio.gather(sender, return_exceptions=True)
    with contextlib.suppress(ConnectionError):
        await writer.wait_closed()
    result.received = bytes(line.received)
    for start, end in result.bot_segments:
        result.timeline.append(TimelineEvent(start, "bot", f"speaks {end - start:.2f} s"))
    result.timeline.sort(key=lambda event: event.t)
    return result


@contextlib.asynccontextmanager
async def open_call(
    host: str, port: int, *, rate: int = 8000, call_id: str | None = None
) -> AsyncIterator[CallLine]:
    """Place a call and hand over the line, for callers that decide their next step from what
    they heard (the scenario runner): ``await line.run_step(step)``, ``line.now()``,
    ``line.received``, ``line.result.bot_segments``. Leaving the block hangs up (unless the
    bot did) and completes ``line.result`` as ``place_call`` does.
    """
    if rate not in KIND_OF_RATE:
        raise ValueError(f"no AudioSocket kind for {rate} Hz")
    result = CallResult(call_id=call_id or str(uuid.uuid4()), rate=rate)
    reader, writer = await asyncio.open_connection(host, port)
    sock: socket.socket | None = writer.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    line = _Line(reader, writer, result)
    writer.write(encode(Kind.UUID, uuid.UUID(result.call_id).bytes))
    line.note("caller", "connected")
    sender = asyncio.create_task(line.send_audio())
    receiver = asyncio.create_task(line.receive())
    try:
        yield line
    finally:
        if line.bot_gone.is_set():
            result.hung_up_by = "bot"
            line.note("bot", "hung up")
        elif not line.hung_up:
            line.note("caller", "hung up")
        sender.cancel()
        line.hung_up = True
        writer.close()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(receiver, 2.0)
        await asyncio.gather(sender, return_exceptions=True)
        with contextlib.suppress(ConnectionError):
            await writer.wait_closed()
        result.received = bytes(line.received)


# The line of a call placed with ``open_call``.
CallLine = _Line


# --- helpers for tests and the CLI ---------------------------------------------------------------


def load_wav(path: str | os.PathLike[str], rate: int) -> bytes:
    """Read a 16-bit WAV file as PCM16 mono at ``rate`` (mixing down and resampling as needed)."""
    import numpy as np

    try:
        with wave.open(str(path), "rb") as wav:
            width = wav.getsampwidth()
            channels, file_rate = wav.getnchannels(), wav.getframerate()
            pcm = wav.readframes(wav.getnframes())
    except (wave.Error, EOFError) as exc:
        raise ValueError(f"{path}: not a PCM WAV file ({str(exc) or 'too short'})") from None
    if width != 2:
        raise ValueError(f"{path}: expected 16-bit samples, got {8 * width}-bit")
    if channels > 1:
        samples = np.frombuffer(pcm, dtype="<i2").reshape(-1, channels).mean(axis=1)
        pcm = samples.astype("<i2").tobytes()
    return resample_once(pcm, file_rate, rate)


def write_wav(path: str | os.PathLike[str], pcm: bytes, rate: int) -> None:
    """Write PCM16 mono as a WAV file."""
    with wave.open(str(path), "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(rate)
        wav.writeframes(pcm)
