"""What hosting a Pipecat processor in a voxpipe chain costs, next to a native processor.

Run: ``.venv/bin/python bench/pipecat_overhead.py`` (about 30 s; needs ``voxpipe[pipecat]``).
It pins itself to one core and prints, with the machine it ran on:

- µs per frame: 20 ms of 16 kHz caller audio pushed through a 6-stage chain of pass-through
  processors: all native; five native and one ``pipecat`` step hosting Pipecat's own
  ``FrameProcessor`` (a pass-through: its own input queue and task, as every Pipecat
  processor has); and the same in Pipecat's direct mode (no queue: the translation alone).
  The time runs from the first frame pushed to the last one reaching the end of the chain.
- µs to start one call's hosted processor (Pipecat setup and its ``StartFrame``), and KB per
  idle call with one, against a native chain.
"""

from __future__ import annotations

import asyncio
import gc
import os
import sys
import time
import tracemalloc
from pathlib import Path

from _machine import machine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from voxpipe.bots.bot import Bot  # noqa: E402
from voxpipe.frames import Direction, Frame, InputAudioFrame, StartFrame  # noqa: E402
from voxpipe.pipelines.call import Call  # noqa: E402
from voxpipe.pipelines.processor import FrameProcessor  # noqa: E402
from voxpipe.pipelines.task import PipelineTask  # noqa: E402

STAGES = 6
AUDIO = bytes(640)  # 20 ms, 16 kHz, 16-bit mono
FRAMES = 5_000

HOSTED = """
  - pipecat:
      class: pipecat_overhead.PassThrough
      role: processor
      args: {args}
"""


def _pass_through() -> type:
    from pipecat.processors.frame_processor import FrameProcessor as PipecatProcessor

    class PassThrough(PipecatProcessor):  # type: ignore[misc]
        """The least a Pipecat processor does: pass every frame on."""

        async def process_frame(self, frame: object, direction: object) -> None:
            await super().process_frame(frame, direction)
            await self.push_frame(frame, direction)

    return PassThrough


def __getattr__(name: str) -> type:
    if name == "PassThrough":  # built on first use: Pipecat is imported only then
        return _pass_through()
    raise AttributeError(name)


class Counter(FrameProcessor):
    """The tail: counts caller audio frames and wakes the benchmark at the last one; notes
    when the call's start frame arrived (every processor has started by then)."""

    def __init__(self) -> None:
        super().__init__(name="counter")
        self.count = 0
        self.want = 0
        self.done = asyncio.Event()
        self.started = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self.started.set()
        elif type(frame) is InputAudioFrame:
            self.count += 1
            if self.count >= self.want:
                self.done.set()
        await self.push_frame(frame, direction)


def hosting_bot(args: str) -> Bot:
    """A bot whose one step hosts Pipecat's pass-through ``FrameProcessor``."""
    return Bot.from_yaml(f"name: bench\npipeline:{HOSTED.format(args=args)}")


async def per_frame_us(hosted: str | None) -> float:
    """Best of five runs: µs per frame through the chain, first push to last arrival."""
    counter = Counter()
    call = Call(sample_rate=16000)
    stages: list[FrameProcessor] = [FrameProcessor(name=f"stage{i}") for i in range(STAGES)]
    if hosted is not None:
        chain_bot = hosting_bot(hosted)
        await chain_bot.prepare()
        stages[-1:] = chain_bot.create_processors(call)
    task = PipelineTask([*stages, counter], call)
    runner = asyncio.create_task(task.run())
    await asyncio.sleep(0.2)
    best = float("inf")
    for _ in range(5):
        gc.collect()
        counter.count, counter.want = 0, FRAMES
        counter.done.clear()
        started = time.perf_counter()
        for _ in range(FRAMES):
            await task.push_frame(InputAudioFrame(AUDIO, 16000))
        await counter.done.wait()
        best = min(best, (time.perf_counter() - started) / FRAMES * 1e6)
    task.cancel("done")
    await runner
    return best


async def start_us_and_kb(count: int) -> tuple[float, float]:
    """µs to start one call with a hosted processor, and KB each idle call holds."""
    chain_bot = hosting_bot("{}")
    await chain_bot.prepare()

    gc.collect()
    tracemalloc.start()
    before = tracemalloc.take_snapshot()
    started = time.perf_counter()
    tasks, tails = [], []
    for _ in range(count):
        call = chain_bot.new_call()
        tails.append(Counter())
        tasks.append(PipelineTask([*chain_bot.create_processors(call), tails[-1]], call))
    runners = [asyncio.create_task(t.run()) for t in tasks]
    for tail in tails:
        await tail.started.wait()
    elapsed = time.perf_counter() - started
    gc.collect()
    after = tracemalloc.take_snapshot()
    tracemalloc.stop()
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    for t in tasks:
        t.cancel("done")
    await asyncio.gather(*runners)
    return elapsed / count * 1e6, grown / count / 1024


async def main() -> None:
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    print(f"machine: {machine()}; pinned to one core")
    native = await per_frame_us(None)
    hosted = await per_frame_us("{}")
    direct = await per_frame_us("{enable_direct_mode: true}")
    print(f"per frame, 6 native stages:                          {native:7.2f} µs")
    print(
        f"per frame, 5 native + 1 hosted Pipecat processor:    {hosted:7.2f} µs"
        f"  (+{hosted - native:.2f} µs for the hosted one)"
    )
    print(
        f"per frame, same, Pipecat's direct mode (no queue):    {direct:7.2f} µs"
        f"  (+{direct - native:.2f} µs)"
    )
    start, kb = await start_us_and_kb(200)
    print(f"start one call's hosted processor (200 calls): {start:8.0f} µs, {kb:6.1f} KB per call")


if __name__ == "__main__":
    asyncio.run(main())
