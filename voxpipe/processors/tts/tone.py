"""``tts: {provider: tone}``: a beep per word instead of speech, for tests and load runs.

Instant and dependency-free, and its audio length is predictable (``word_ms`` per word), which
makes it the provider for testing timing, barge-in and transports without a speech model.
"""

from __future__ import annotations

import asyncio
import math
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import Field

from voxpipe.processors.tts.base import TTSProcessor, TTSProviderSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


def tone(frequency_hz: float, ms: int, sample_rate: int, amplitude: int = 8000) -> bytes:
    """A sine tone of ``ms`` milliseconds as PCM16 mono."""
    import numpy as np

    t = np.arange(sample_rate * ms // 1000) / sample_rate
    wave = amplitude * np.sin(2 * math.pi * frequency_hz * t)
    return bytes(wave.astype(np.int16).tobytes())


class ToneSettings(TTSProviderSettings):
    """A tone per word instead of speech: for tests, load runs and checking audio paths."""

    provider: Literal["tone"] = Field(description="Text-to-speech engine.")
    frequency_hz: float = Field(440.0, gt=20, lt=4000, description="Tone frequency.")
    word_ms: int = Field(200, ge=20, le=2000, description="Audio per word, in milliseconds.")
    delay_ms: int = Field(
        0, ge=0, le=10000, description="Pretend synthesis time per sentence (to test latency)."
    )

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return ToneTTS(self, sample_rate=call.sample_rate)


class ToneTTS(TTSProcessor):
    """Turns each word into ``word_ms`` of tone (the last 20 % silent, so words stay apart)."""

    provider: ClassVar[str] = "tone"

    __slots__ = ("_settings",)

    def __init__(self, settings: ToneSettings, *, sample_rate: int) -> None:
        super().__init__(sample_rate=sample_rate)
        self._settings = settings

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        settings, rate = self._settings, self.sample_rate
        if settings.delay_ms:
            await asyncio.sleep(settings.delay_ms / 1000)
        beep_ms = settings.word_ms * 4 // 5
        word = tone(settings.frequency_hz, beep_ms, rate) + bytes(
            rate * 2 * (settings.word_ms - beep_ms) // 1000
        )
        return word * len(text.split()), rate
