"""Stateful PCM16 resampling for one direction of one call.

A stream resampler keeps its filter state between chunks, so 20 ms pieces join without clicks.
soxr's "LQ" recipe is the default: a real low-pass filter that buffers about 40-60 ms, where
"HQ"/"VHQ" buffer about 100 ms (felt on every turn of a phone dialogue) and "QQ" (cubic,
no buffering) aliases when going down from 16 kHz to 8 kHz.
"""

from __future__ import annotations

from typing import Any, Literal

Quality = Literal["QQ", "LQ", "MQ", "HQ", "VHQ"]


class Resampler:
    """Converts a stream of PCM16 mono chunks from ``in_rate`` to ``out_rate``.

    Equal rates pass audio through untouched, at no cost.
    """

    __slots__ = ("_stream", "in_rate", "out_rate", "quality")

    def __init__(self, in_rate: int, out_rate: int, quality: Quality = "LQ") -> None:
        self.in_rate = in_rate
        self.out_rate = out_rate
        self.quality = quality
        self._stream: Any = None
        if in_rate != out_rate:
            import soxr

            self._stream = soxr.ResampleStream(in_rate, out_rate, 1, dtype="int16", quality=quality)

    def process(self, pcm: bytes) -> bytes:
        """Resample one chunk; the result may be shorter or longer while the filter fills."""
        if self._stream is None or not pcm:
            return pcm
        import numpy as np

        samples = np.frombuffer(pcm, dtype="<i2")
        out: bytes = self._stream.resample_chunk(samples).tobytes()
        return out

    def flush(self) -> bytes:
        """Return the audio still held in the filter and start afresh (the end of a prompt)."""
        if self._stream is None:
            return b""
        import numpy as np

        out: bytes = self._stream.resample_chunk(np.zeros(0, dtype="<i2"), last=True).tobytes()
        self._stream.clear()
        return out

    def reset(self) -> None:
        """Forget buffered audio (after an interruption, so that none of it plays late)."""
        if self._stream is not None:
            self._stream.clear()


def resample_once(pcm: bytes, in_rate: int, out_rate: int, quality: Quality = "HQ") -> bytes:
    """Resample a whole recording at once (a WAV file for the simulated caller)."""
    if in_rate == out_rate or not pcm:
        return pcm
    import numpy as np
    import soxr

    samples = np.frombuffer(pcm, dtype="<i2")
    out: bytes = soxr.resample(samples, in_rate, out_rate, quality=quality).tobytes()
    return out
