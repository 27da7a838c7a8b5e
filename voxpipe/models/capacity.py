"""How many calls this machine carries with the bot's own models: ``max_calls: auto``.

A call costs the models work at every turn: when the caller stops speaking, speech-to-text
decodes what they said and text-to-speech speaks the first sentence of the answer. Calls are
mostly listening or speaking, but their turns can end together (a burst of callers placed at
once all finish their first sentence within the same second), and then every decode waits its
turn in the model queue. ``auto`` admits the calls whose turns the model workers can all answer
within ``models.turn_latency_s`` even then: with ``W`` seconds of model work per turn, ``K``
workers and ``B`` seconds of the target left after the VAD's ``stop_ms``,

    max_calls = K * floor(B / W)

``calibrate`` measures ``W`` at start: the bot's text-to-speech (or the packaged piper voice)
speaks a caller-like sentence, and the bot's speech-to-text decodes it, with the steps' own
settings (``sample_job``), each ``RUNS`` times on
the workers after a first run that warms the models up. The fastest run counts: it is this
machine's speed, where the median would also be a moment's load from other programs (a bot
that shares its cores with other work should set ``max_calls`` itself). A bot without local
models is not bound by them: ``auto`` is then ``WITHOUT_MODELS``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from voxpipe.models.shared import model_engines, models_of, models_settings

if TYPE_CHECKING:
    from voxpipe.models.engine import Engine, SampleJob
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.context import BotContext

log = logging.getLogger("voxpipe.models")

# The call limit of ``auto`` for a bot whose speech runs elsewhere (cloud providers).
WITHOUT_MODELS = 200
# What the calibration speaks: about three seconds, like a caller's first sentence.
CALLER_SENTENCE = "Hello, I would like to check the status of my order, please."
# And the first sentence of a typical answer.
ANSWER_SENTENCE = "Sure, let me look that up for you."
RUNS = 5
# Time the transport adds to a turn (framing, the pacing slot), in seconds.
TRANSPORT_S = 0.1


@dataclass(frozen=True)
class Capacity:
    """The measured model work per turn and the call limit it gives."""

    max_calls: int
    workers: int
    turn_latency_s: float
    stt_s: float = 0.0
    tts_s: float = 0.0
    stt: str = ""
    tts: str = ""
    sample_s: float = 0.0

    @property
    def turn_work_s(self) -> float:
        """Model seconds one turn takes (decode plus the answer's first sentence)."""
        return self.stt_s + self.tts_s

    def describe(self) -> str:
        """One line for the ``serve`` banner."""
        if not self.stt and not self.tts:
            return f"no local models: up to {self.max_calls} calls"
        parts = []
        if self.stt:
            speech = f"{self.sample_s:.1f} s of speech"
            parts.append(f"{self.stt} decodes {speech} in {self.stt_s:.2f} s")
        if self.tts:
            parts.append(f"{self.tts} speaks a sentence in {self.tts_s:.2f} s")
        workers = f"{self.workers} model worker{'' if self.workers == 1 else 's'}"
        return (
            f"{', '.join(parts)}; {workers} answer {self.max_calls} callers who stop speaking "
            f"at once within {self.turn_latency_s:g} s: max_calls auto = {self.max_calls}"
        )


async def calibrate(ctx: BotContext, stop_s: float = 0.0) -> Capacity:
    """Measure the bot's models on this machine and size its call limit (after ``prepare``);
    ``stop_s`` is the silence after which the caller counts as stopped (the VAD's)."""
    target = models_settings(ctx).turn_latency_s
    engines = model_engines(ctx)
    stt = next(((e, job) for e, job in engines if e.kind == "stt"), None)
    tts = next(((e, job) for e, job in engines if e.kind == "tts"), None)
    if stt is None and tts is None:
        return Capacity(WITHOUT_MODELS, 0, target)
    pool = models_of(ctx)
    tts_s = await _timed(pool, tts, ANSWER_SENTENCE) if tts is not None else 0.0
    stt_s = sample_s = 0.0
    if stt is not None:
        audio, rate = await _caller_speech(pool, tts, ctx.sample_rate)
        sample_s = len(audio) / 2 / rate
        stt_s = await _timed(pool, stt, audio, rate)
    budget = target - stop_s - TRANSPORT_S
    per_worker = math.floor(budget / (stt_s + tts_s)) if stt_s + tts_s > 0 else 0
    if per_worker < 1:
        log.warning(
            "bot %s: one turn takes the models %.2f s here, more than the %.1f s turn latency "
            "allows after the VAD's stop: each model worker carries one call",
            ctx.name,
            stt_s + tts_s,
            target,
        )
    return Capacity(
        pool.workers * max(1, per_worker),
        pool.workers,
        target,
        stt_s=stt_s,
        tts_s=tts_s,
        stt=stt[0].label if stt is not None else "",
        tts=tts[0].label if tts is not None else "",
        sample_s=sample_s,
    )


async def _timed(pool: ModelPool, step: tuple[Engine, SampleJob], *sample: object) -> float:
    """The fastest of ``RUNS`` runs of a step's sample job (after one to warm up), measured
    once per pool and job."""
    engine, job = step
    method, args = job(*sample)
    known = pool.calibration.get(key := f"{engine.key}:{method}:{args[1:]!r}")
    if isinstance(known, float):
        return known
    await pool.run(engine.key, method, *args)
    runs = []
    for _ in range(RUNS):
        started = time.perf_counter()
        await pool.run(engine.key, method, *args)
        runs.append(time.perf_counter() - started)
    pool.calibration[key] = seconds = min(runs)
    return seconds


async def _caller_speech(
    pool: ModelPool, tts: tuple[Engine, SampleJob] | None, rate: int
) -> tuple[bytes, int]:
    """A caller-like sentence at the pipeline's ``rate``: spoken by the bot's local voice,
    else by the packaged one."""
    if tts is None:
        from voxpipe.processors.tts.packaged import offline_say

        return await asyncio.to_thread(offline_say, CALLER_SENTENCE, rate), rate
    from voxpipe.processors.audio import resample_pcm16

    engine, job = tts
    method, args = job(CALLER_SENTENCE)
    audio, voice_rate = await pool.run(engine.key, method, *args)
    return resample_pcm16(bytes(audio), int(voice_rate), rate), rate
