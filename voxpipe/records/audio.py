"""Recording a call's audio: a stereo WAV, the caller on the left and the bot on the right.

A ``CallAudioRecorder`` sits at the end of the call's chain, before the output transport. Both
sides are laid on one timeline, in samples at the pipeline's rate since the call began: the
caller's audio where it arrived (a stretch with nothing from Asterisk is silence), the bot's
audio where the transport plays it (each frame after the one before, from now at the earliest,
as the transport paces it; an interruption drops what was not yet played, as it does).

Every second what can no longer change (older than ``MARGIN_S``) is handed to a writer thread
that appends it and rewrites the header's sizes, so the file on disk is always a playable WAV:
a crash loses at most the last second or two. The frame path only copies bytes.
"""

from __future__ import annotations

import concurrent.futures
import logging
import struct
import time
from pathlib import Path
from typing import BinaryIO

from voxpipe.frames import (
    DOWNSTREAM,
    CancelFrame,
    Direction,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    OutputAudioFrame,
)
from voxpipe.pipelines.processor import FrameProcessor

log = logging.getLogger("voxpipe.records")

FLUSH_EVERY_S = 1.0
MARGIN_S = 0.2
# A caller stream this far behind the clock had a gap (Asterisk sent nothing): fill silence.
GAP_S = 0.1


def wav_header(rate: int, data_bytes: int, channels: int = 2) -> bytes:
    """A 44-byte PCM16 WAV header for ``data_bytes`` of audio."""
    block = channels * 2
    return struct.pack(
        "<4sI4s4sIHHIIHH4sI",
        b"RIFF",
        36 + data_bytes,
        b"WAVE",
        b"fmt ",
        16,
        1,
        channels,
        rate,
        rate * block,
        block,
        16,
        b"data",
        data_bytes,
    )


class WavFile:
    """A stereo WAV file grown in place; its header always matches the audio written so far.

    Its methods block (file I/O): they run on the recordings' writer thread.
    """

    def __init__(self, path: Path, rate: int) -> None:
        self.path = path
        self.rate = rate
        self.data_bytes = 0
        self._file: BinaryIO | None = None

    def append(self, caller: bytes, bot: bytes) -> None:
        """Add equal lengths of caller and bot audio (PCM16 mono each), interleaved."""
        import numpy as np

        if self._file is None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._file = open(self.path, "wb")  # noqa: SIM115 - kept open for the call
            self._file.write(wav_header(self.rate, 0))
        left = np.frombuffer(caller, dtype="<i2")
        right = np.frombuffer(bot, dtype="<i2")
        frames = np.empty(left.size * 2, dtype="<i2")
        frames[0::2] = left
        frames[1::2] = right
        file = self._file
        file.seek(44 + self.data_bytes)
        file.write(frames.tobytes())
        self.data_bytes += frames.size * 2
        file.seek(0)
        file.write(wav_header(self.rate, self.data_bytes))
        file.flush()

    def close(self) -> None:
        """Close the file (it is already complete)."""
        if self._file is not None:
            self._file.close()
            self._file = None


class CallAudioRecorder(FrameProcessor):
    """Lays the caller's and the bot's audio on one timeline and writes it as it goes."""

    __slots__ = (
        "_bot",
        "_bot_end",
        "_caller",
        "_caller_end",
        "_clock0",
        "_closed",
        "_executor",
        "_flushed",
        "_next_flush",
        "_rate",
        "wav",
    )

    def __init__(self, path: Path, rate: int, executor: concurrent.futures.Executor) -> None:
        super().__init__(name="records.audio")
        self.wav = WavFile(path, rate)
        self._executor = executor
        self._rate = rate
        self._clock0 = time.monotonic()
        # Samples not yet written, from sample ``_flushed`` on; where each side's audio ends.
        self._caller = bytearray()
        self._bot = bytearray()
        self._flushed = 0
        self._caller_end = 0
        self._bot_end = 0
        self._next_flush = FLUSH_EVERY_S
        self._closed = False

    def _now(self) -> int:
        return int((time.monotonic() - self._clock0) * self._rate)

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if direction is DOWNSTREAM:
            kind = type(frame)
            if kind is InputAudioFrame:
                self._add_caller(frame.audio, frame.sample_rate)  # type: ignore[attr-defined]
            elif kind is OutputAudioFrame:
                self._add_bot(frame.audio, frame.sample_rate)  # type: ignore[attr-defined]
            elif kind is InterruptionFrame:
                self._interrupt()
            elif kind is CancelFrame:
                self._finish(played_out=False)
        await self.push_frame(frame, direction)

    def _place(self, buffer: bytearray, at: int, audio: bytes) -> None:
        start = (at - self._flushed) * 2
        if len(buffer) < start:
            buffer.extend(bytes(start - len(buffer)))
        buffer[start : start + len(audio)] = audio

    def _add_caller(self, audio: bytes, rate: int) -> None:
        if rate != self._rate or self._closed:
            return
        samples = len(audio) // 2
        now = self._now()
        at = max(self._caller_end, self._flushed)
        if now - samples - at > GAP_S * self._rate:
            at = now - samples
        self._place(self._caller, at, audio)
        self._caller_end = at + samples
        self._maybe_flush(now)

    def _add_bot(self, audio: bytes, rate: int) -> None:
        if rate != self._rate or self._closed:
            return
        now = self._now()
        at = max(self._bot_end, now, self._flushed)
        self._place(self._bot, at, audio)
        self._bot_end = at + len(audio) // 2
        self._maybe_flush(now)

    def _interrupt(self) -> None:
        """The transport dropped the bot audio not yet played: so does the recording."""
        now = max(self._now(), self._flushed)
        if self._bot_end > now:
            del self._bot[(now - self._flushed) * 2 :]
            self._bot_end = now

    def _maybe_flush(self, now: int) -> None:
        if now >= self._next_flush * self._rate:
            self._next_flush += FLUSH_EVERY_S
            self._flush(now - int(MARGIN_S * self._rate))

    def _flush(self, upto: int) -> None:
        count = upto - self._flushed
        if count <= 0:
            return
        size = count * 2
        caller, bot = bytes(self._caller[:size]), bytes(self._bot[:size])
        caller += bytes(size - len(caller))
        bot += bytes(size - len(bot))
        del self._caller[:size]
        del self._bot[:size]
        self._flushed = upto
        self._submit(caller, bot)

    def _submit(self, caller: bytes, bot: bytes) -> None:
        try:
            self._executor.submit(self._write, caller, bot)
        except RuntimeError:  # the bot is shutting down: its writer thread is gone
            log.warning("recording %s: writer stopped, audio lost", self.wav.path)

    def _write(self, caller: bytes, bot: bytes) -> None:
        try:
            self.wav.append(caller, bot)
        except OSError as exc:
            log.error("recording %s: %s", self.wav.path, exc)

    def _finish(self, *, played_out: bool) -> None:
        """The call is over: write the rest (the bot's audio only as far as it was played)."""
        if self._closed:
            return
        end = self._caller_end
        end = max(end, self._bot_end if played_out else min(self._bot_end, self._now()))
        self._flush(end)
        self._closed = True
        try:
            self._executor.submit(self.wav.close)
        except RuntimeError:
            self.wav.close()

    async def stop(self) -> None:
        self._finish(played_out=True)

    async def cancel(self) -> None:
        self._finish(played_out=False)
