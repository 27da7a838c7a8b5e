"""Audio helpers the processors share: resampling PCM16 and cutting it into frames."""

from __future__ import annotations

FRAME_MS = 20


def resample_pcm16(audio: bytes, from_rate: int, to_rate: int) -> bytes:
    """PCM16 mono ``audio`` at ``to_rate`` (soxr, high quality, reproducible: no dither)."""
    if from_rate == to_rate or not audio:
        return audio
    import numpy as np
    import soxr

    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    out = soxr.resample(samples, from_rate, to_rate) * 32768.0
    return bytes(np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes())


def cut_frames(audio: bytes, sample_rate: int, frame_ms: int = FRAME_MS) -> list[bytes]:
    """Cut PCM16 mono audio into frames of ``frame_ms``; the last one is padded with silence."""
    size = sample_rate * 2 * frame_ms // 1000
    frames = [audio[i : i + size] for i in range(0, len(audio), size)]
    if frames and len(frames[-1]) < size:
        frames[-1] = frames[-1] + bytes(size - len(frames[-1]))
    return frames
