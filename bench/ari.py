"""What the ARI controller costs a call: set-up and teardown against the local fake Asterisk.

    .venv/bin/python bench/ari.py [--calls 50]

Set-up is from the caller's StasisStart to the caller and the bot's media channel sharing a
bridge (answer, bridge, add the caller, externalMedia, the media channel's own StasisStart, add
it); teardown from the caller's hang-up to the bridge and the media channel being gone. Run with
the media channel entering Stasis before the externalMedia reply and just after it, the two
orders a real Asterisk produces. Loopback HTTP and WebSocket: Asterisk's own time comes on top.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

from _machine import machine
from pydantic import SecretStr

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from fakes.ari import FakeAri, MediaStart  # noqa: E402

from voxpipe.ari import AriController  # noqa: E402
from voxpipe.bots.config import AriSettings  # noqa: E402


async def until(predicate: Callable[[], bool]) -> None:
    """Wait for ``predicate()``, looking again each time the loop has run the other tasks."""
    async with asyncio.timeout(10.0):
        while True:
            if predicate():
                return
            await asyncio.sleep(0)


async def measure(media_start: MediaStart, calls: int) -> tuple[list[float], list[float]]:
    fake = FakeAri()
    fake.media_start, fake.media_delay_s = media_start, 0.0
    await fake.start()
    settings = AriSettings(url=fake.url, username=fake.username, password=SecretStr(fake.password))
    controller = AriController(settings, "127.0.0.1:9092")
    await controller.start()
    setups: list[float] = []
    teardowns: list[float] = []
    try:
        await until(lambda: len(fake.sockets) == 1)
        for _ in range(calls):
            started = time.perf_counter()
            caller = await fake.place_call()
            await until(lambda: any(c.bridged for c in controller.calls.values()))
            setups.append(time.perf_counter() - started)
            (call,) = controller.calls.values()
            started = time.perf_counter()
            await fake.caller_hangs_up(caller)
            await call.done.wait()
            teardowns.append(time.perf_counter() - started)
    finally:
        await controller.stop()
        await fake.stop()
    return setups, teardowns


def summary(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
    return f"median {statistics.median(ms):5.1f} ms, p95 {p95:5.1f} ms"


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=50)
    args = parser.parse_args()
    print(f"machine: {machine()}")
    for media_start in ("before_reply", "after_reply"):
        setups, teardowns = await measure(media_start, args.calls)
        print(
            f"media channel in Stasis {media_start.replace('_', ' '):12}: "
            f"set-up {summary(setups)}; teardown {summary(teardowns)} ({args.calls} calls)"
        )


if __name__ == "__main__":
    asyncio.run(main())
