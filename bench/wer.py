"""Word error rate and real-time factor of the offline STT providers on tests/audio.

Runs each provider's own engine (what a model worker runs for a call) in this process over every
recorded caller utterance at 8 and 16 kHz, decoding them in order as one call would, scores it
against the .txt transcript, and prints the figures with the machine they were measured on.

    .venv/bin/python bench/wer.py
"""

from __future__ import annotations

import re
import time
import wave
from pathlib import Path
from typing import Any

from _machine import machine

from voxpipe.processors.stt.base import LocalSTTSettings
from voxpipe.processors.stt.pocketsphinx import PocketsphinxEngine, PocketsphinxSettings
from voxpipe.processors.stt.whisper import WhisperEngine, WhisperSettings

AUDIO = Path(__file__).resolve().parents[1] / "tests" / "audio"
DIGITS = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"]
PROVIDERS: dict[str, dict[str, Any]] = {
    "whisper (tiny.en, int8, 1 thread)": {"provider": "whisper"},
    "whisper (same, window_s: 15)": {"provider": "whisper", "window_s": 15},
    "pocketsphinx (en-us, streaming)": {"provider": "pocketsphinx"},
    "pocketsphinx (en-us, final_pass)": {"provider": "pocketsphinx", "final_pass": True},
}


def normalise(text: str) -> list[str]:
    """Lower-case words without punctuation, digits spelled out (Whisper writes "1-2-3")."""
    text = re.sub(r"\d", lambda m: f" {DIGITS[int(m.group())]} ", text.lower())
    return re.sub(r"[^a-z' ]+", " ", text).split()


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Word-level Levenshtein distance (substitutions, insertions, deletions)."""
    previous = list(range(len(hypothesis) + 1))
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            current.append(
                min(
                    previous[j] + 1,
                    current[j - 1] + 1,
                    previous[j - 1] + (ref_word != hyp_word),
                )
            )
        previous = current
    return previous[-1]


class Decoder:
    """One call's decoding with a provider's engine, as its processor drives it in a worker."""

    def __init__(self, settings: LocalSTTSettings) -> None:
        self.settings = settings
        self.engine = settings.engine()
        self.engine.load()
        self.cmn = ""  # pocketsphinx: the caller's normalisation, carried between utterances

    def decode(self, audio: bytes, rate: int) -> tuple[str, float]:
        """Begin, stream 100 ms chunks (streaming engines), finish. Returns the transcript and
        the seconds the finish took: what the caller waits for after the VAD's stop event."""
        settings, engine = self.settings, self.engine
        if isinstance(engine, PocketsphinxEngine):
            assert isinstance(settings, PocketsphinxSettings)
            engine.begin("bench", rate, self.cmn, settings.chunk_ms)
            step = rate * 2 // 10
            for i in range(0, len(audio), step):
                engine.accept("bench", audio[i : i + step])
            started = time.perf_counter()
            text, self.cmn = engine.finish("bench", audio, rate, settings.final_pass)
            return text, time.perf_counter() - started
        assert isinstance(engine, WhisperEngine) and isinstance(settings, WhisperSettings)
        options = {
            "language": settings.language,
            "beam_size": settings.beam_size,
            "condition_on_previous_text": False,
            "vad_filter": False,
            "window_s": settings.window_s,
        }
        started = time.perf_counter()
        text = engine.decode(audio, rate, options)
        return text, time.perf_counter() - started


def run(name: str, settings: dict[str, Any], rate: int) -> tuple[int, int, float, float, float]:
    """Errors, reference words, decoding seconds, audio seconds and the seconds spent at the
    stops over every recording."""
    model: LocalSTTSettings = (
        WhisperSettings if settings["provider"] == "whisper" else PocketsphinxSettings
    ).model_validate(settings)
    decoder = Decoder(model)
    suffix = "8k" if rate == 8000 else "16k"
    errors = words = 0
    busy = duration = at_stop = 0.0
    for text_file in sorted(AUDIO.glob("caller_*.txt")):
        with wave.open(str(text_file.with_name(f"{text_file.stem}_{suffix}.wav"))) as wav:
            audio = wav.readframes(wav.getnframes())
        reference = normalise(text_file.read_text())
        started = time.perf_counter()
        text, final_s = decoder.decode(audio, rate)
        busy += time.perf_counter() - started
        at_stop += final_s
        hypothesis = normalise(text)
        duration += len(audio) / 2 / rate
        errors += edit_distance(reference, hypothesis)
        words += len(reference)
        print(f"  {suffix:>3} {text_file.stem:<20} {' '.join(hypothesis)}")
    return errors, words, busy, duration, at_stop


def main() -> None:
    print(f"machine: {machine()}")
    print(f"audio: {AUDIO.resolve()}")
    rows = []
    for name, settings in PROVIDERS.items():
        print(name)
        for rate in (8000, 16000):
            errors, words, busy, duration, at_stop = run(name, settings, rate)
            count = len(list(AUDIO.glob("caller_*.txt")))
            rows.append((name, rate, errors / words, busy / duration, at_stop / count * 1000))
    print()
    print(f"{'provider':<36} {'rate':>6} {'WER':>6} {'RTF':>6} {'stop->final ms':>15}")
    for name, rate, wer, rtf, stop_ms in rows:
        print(f"{name:<36} {rate:>6} {wer:>6.1%} {rtf:>6.3f} {stop_ms:>15.0f}")


if __name__ == "__main__":
    main()
