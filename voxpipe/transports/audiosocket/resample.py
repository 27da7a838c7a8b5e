"""Stateful PCM16 resampling for one direction of one call, with a delay of a millisecond or two.

A call's audio is resampled in 20 ms pieces, at real time, both ways (caller to pipeline and
back): whatever the resampler holds back is heard as delay on every turn, and whatever it
releases unevenly makes the outbound queue grow in steps. soxr's stream resampler does both: its
"LQ" recipe releases audio in blocks of about 60 ms (0, 0, 470, 0, 0, 470 samples for 20 ms
pieces going from 16 kHz to 8 kHz) and holds 35 ms on average per direction; "HQ" holds more.

So a call's streams use a polyphase FIR filter instead (a Kaiser-windowed sinc, designed once per
rate pair and quality): every piece in gives its exact share out at once (20 ms in, 20 ms out),
delayed only by half the filter's length — about 1 ms at "LQ" between 8 and 16 kHz. soxr still
resamples whole recordings (``resample_once``), where delay does not matter.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Literal

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]

# Per quality: stopband attenuation (dB) and transition width (a fraction of the lower rate,
# centred on its Nyquist frequency). At 8 kHz, "LQ" passes up to 3.2 kHz and stops from 4.8 kHz.
FILTERS: dict[str, tuple[float, float]] = {
    "QQ": (40.0, 0.3),
    "LQ": (60.0, 0.2),
    "MQ": (70.0, 0.15),
    "HQ": (85.0, 0.1),
    "VHQ": (100.0, 0.08),
}


@functools.lru_cache(maxsize=64)
def _design(in_rate: int, out_rate: int, quality: str) -> tuple[int, int, int, Any]:
    """The polyphase filter for ``in_rate`` to ``out_rate``: (L, M, taps per phase, taps).

    Up by L, low-pass, down by M; ``taps[p]`` is phase ``p``'s filter, reversed (oldest input
    sample first), as float32.
    """
    import numpy as np

    attenuation, transition = FILTERS[quality]
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    lower = min(in_rate, out_rate)
    fs = in_rate * up  # the rate the filter runs at
    width = 2 * math.pi * transition * lower / fs
    length = math.ceil((attenuation - 7.95) / (2.285 * width)) + 1
    per_phase = -(-length // up)
    length = per_phase * up
    if attenuation > 50:
        beta = 0.1102 * (attenuation - 8.7)
    else:
        beta = 0.5842 * (attenuation - 21) ** 0.4 + 0.07886 * (attenuation - 21)
    cutoff = 0.5 * lower / fs
    n = np.arange(length) - (length - 1) / 2
    h = 2 * cutoff * np.sinc(2 * cutoff * n) * np.kaiser(length, beta)
    h *= up / h.sum()  # unity gain at 0 Hz after the zeros the up-sampling inserts
    taps = h.reshape(per_phase, up).T[:, ::-1]  # taps[p, j] = h[(per_phase - 1 - j) * up + p]
    return up, down, per_phase, np.ascontiguousarray(taps, dtype=np.float32)


class Resampler:
    """Converts a stream of PCM16 mono chunks from ``in_rate`` to ``out_rate``.

    Each chunk comes out at once, as long as its share of the output (a 20 ms chunk gives
    exactly 20 ms), delayed by ``delay_s``. Equal rates pass audio through untouched, at no cost.
    """

    __slots__ = (
        "_buf",
        "_down",
        "_held",
        "_phase",
        "_piece",
        "_plans",
        "_taps",
        "_up",
        "_width",
        "delay_s",
        "in_rate",
        "out_rate",
        "quality",
    )

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self.delay_s = 0.0
        self._plans: dict[tuple[int, int], tuple[Any, ...]] = {}
        self._phase = 0  # where the next output falls after the held input, in 1/up samples
        self._held = 0  # input samples kept as the filter's history (its width - 1)
        self._piece = int(in_rate * 0.02)  # longer chunks are filtered 20 ms at a time
        self._up = self._down = self._width = 1
        self._taps: Any = None
        self._buf: Any = None
        if in_rate != out_rate:
            import numpy as np

            self._up, self._down, self._width, self._taps = _design(in_rate, out_rate, quality)
            self._held = self._width - 1
            self.delay_s = (self._width * self._up - 1) / 2 / (in_rate * self._up)
            self._buf = np.zeros(self._held + self._piece, dtype=np.float32)

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; the result is the chunk's exact share of the output."""
        if self._taps is None or len(pcm) < 2:
            return pcm
        import numpy as np

        samples = np.frombuffer(pcm, dtype="<i2", count=len(pcm) // 2)
        piece = self._piece
        if samples.size <= piece:
            out = self._filter(samples)
        else:
            out = np.concatenate(
                [self._filter(samples[i : i + piece]).copy() for i in range(0, samples.size, piece)]
            )
        np.rint(out, out=out)
        np.minimum(out, _MAX, out=out)  # a filter overshoots a full-scale input a little
        np.maximum(out, _MIN, out=out)
        result: bytes = out.astype("<i2").tobytes()
        return result

    def flush(self) -> bytes:
        """The audio still inside the filter (the end of a sentence), as if silence followed."""
        if self._taps is None:
            return b""
        return self.process(bytes(2 * math.ceil(self.delay_s * self.in_rate)))

    def reset(self) -> None:
        """Forget the audio in the filter (after an interruption, so that none of it plays late)."""
        if self._buf is not None:
            self._buf[: self._held] = 0
            self._phase = 0

    def _filter(self, samples: Any) -> Any:
        """Filter at most 20 ms of new samples (float32 out, which the caller may change)."""
        size, held, buf = samples.size, self._held, self._buf
        buf[held : held + size] = samples
        key = (size, self._phase)
        plan = self._plans.get(key)
        if plan is None:
            if len(self._plans) >= _MAX_PLANS:
                self._plans.clear()
            plan = self._plans[key] = self._plan(size, self._phase)
        out = plan[0](buf, plan)
        self._phase = plan[-1]
        buf[:held] = buf[size : size + held]  # the filter's history for the next chunk
        return out

    def _plan(self, size: int, phase: int) -> tuple[Any, ...]:
        """How to filter ``size`` new samples when the next output falls at ``phase``.

        Chunks are nearly always 20 ms, so the few plans in use are built once and kept: the
        integer ratios hold strided views of the call's buffer (filtering is then one matrix
        product), the others an index of the windows, shared by every call.
        """
        import numpy as np
        from numpy.lib.stride_tricks import as_strided

        up, down, width, buf = self._up, self._down, self._width, self._buf
        span = size * up
        count = max(0, -(-(span - phase) // down))
        after = phase + count * down - span
        step = buf.strides[0]
        if count == 0:
            return (_nothing, after)
        if up == 1:  # down-sampling by an integer: every ``down``-th window
            windows = as_strided(buf[phase:], (count, width), (down * step, step), writeable=False)
            out = np.empty(count, dtype=np.float32)
            return (_decimate, windows, self._taps[0], out, after)
        if down <= _MAX_PICKED:  # up by an integer (each input sample gives ``up`` outputs),
            # then for a ratio like 3/2 keep every ``down``-th of them
            windows = as_strided(buf, (size, width), (step, step), writeable=False)
            out = np.empty((size, up), dtype=np.float32)
            taps = np.ascontiguousarray(self._taps.T)
            if down == 1:
                return (_interpolate, windows, taps, out, after)
            picked = slice(phase, phase + count * down, down)
            return (_interpolate_pick, windows, taps, out, picked, after)
        index, taps = _windows(self.in_rate, self.out_rate, self.quality, size, phase)
        return (_gather, index, taps, after)


_MAX_PLANS = 8
_MAX, _MIN = 32767.0, -32768.0
# Ratios that go down by at most this after going up are filtered at the up-sampled rate and
# picked from (cheaper than gathering each output's window, up to 4x the work).
_MAX_PICKED = 4


@functools.lru_cache(maxsize=32)
def _windows(in_rate: int, out_rate: int, quality: str, size: int, phase: int) -> tuple[Any, Any]:
    """For a ratio that is no integer: each output's window of the buffer and its taps."""
    import numpy as np

    up, down, width, taps = _design(in_rate, out_rate, quality)
    count = -(-(size * up - phase) // down)
    positions = phase + down * np.arange(count)
    index = ((positions // up)[:, None] + np.arange(width)[None, :]).astype(np.intp)
    return index, np.ascontiguousarray(taps[positions % up])


def _nothing(buf: Any, plan: tuple[Any, ...]) -> Any:
    import numpy as np

    return np.zeros(0, dtype=np.float32)


def _decimate(buf: Any, plan: tuple[Any, ...]) -> Any:
    import numpy as np

    _, windows, taps, out, _ = plan
    return np.dot(windows, taps, out=out)


def _interpolate(buf: Any, plan: tuple[Any, ...]) -> Any:
    import numpy as np

    _, windows, taps, out, _ = plan
    return np.matmul(windows, taps, out=out).reshape(-1)


def _interpolate_pick(buf: Any, plan: tuple[Any, ...]) -> Any:
    import numpy as np

    _, windows, taps, out, picked, _ = plan
    return np.matmul(windows, taps, out=out).reshape(-1)[picked].copy()


def _gather(buf: Any, plan: tuple[Any, ...]) -> Any:
    _, index, taps, _ = plan
    return (buf[index] * taps).sum(axis=1, dtype="float32")


def resample_once(pcm: bytes, in_rate: int, out_rate: int, quality: Quality = "HQ") -> bytes:
    """Resample a whole recording at once (a WAV file for the simulated caller)."""
    if in_rate == out_rate or not pcm:
        return pcm
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm, dtype="<i2")
    out: bytes = soxr.resample(samples, in_rate, out_rate, quality=quality).tobytes()
    return out
