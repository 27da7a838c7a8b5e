"""Echo round trip per caller rate, as a caller hears it: how long their words take to come back.

    .venv/bin/python bench/round_trip.py [--bot configs/echo.yaml] [--rates 8000 16000]
                                         [--bursts 20] [--calls 1]

The echo bot runs in this process; a simulated caller (real TCP, real-time AudioSocket) calls it
at each rate in turn, the rates one after the other on the same bot, and says a short burst of
noise every half second. For each burst, the round trip is the time from the caller sending its
first message to the first echoed message arriving back. It prints per rate the round trip's
median, min and max, the step between the first and the last quarter of the call (a queue that
grows in the middle of a call shows here), and the gaps between the bot's audio messages (20 ms
each when the outbound audio is exactly paced). ``--calls N`` places N such calls at once per
rate.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import statistics
import sys
from pathlib import Path

import numpy as np
from _machine import machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from voxpipe.bots.call import running_bot  # noqa: E402
from voxpipe.transports.audiosocket.caller import (  # noqa: E402
    CallResult,
    Hangup,
    Say,
    Silence,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import RATE_OF_KIND  # noqa: E402


def bursts(
    rate: int, count: int, burst_s: float = 0.06, every_s: float = 0.5
) -> list[Say | Silence]:
    """``count`` bursts of telephone-band noise, ``every_s`` apart (a script for the caller)."""
    rng = np.random.default_rng(7)
    size = int(rate * burst_s)
    spectrum = np.fft.rfft(rng.normal(0, 1, size))
    spectrum[np.fft.rfftfreq(size, 1 / rate) > 3000] = 0
    noise = np.fft.irfft(spectrum, size)
    pcm = (noise / np.abs(noise).max() * 12000).astype("<i2").tobytes()
    script: list[Say | Silence] = [Silence(0.3)]
    for _ in range(count):
        script += [Say(pcm), Silence(every_s - burst_s)]
    return script


def round_trips(result: CallResult) -> list[float]:
    """Seconds from each burst the caller sent to its echo (paired in order)."""
    sent = [start for start, _ in result.caller_segments]
    heard = [start for start, _ in result.bot_segments]
    if len(sent) != len(heard):
        raise RuntimeError(f"{len(sent)} bursts sent but {len(heard)} heard back")
    return [b - a for a, b in zip(sent, heard, strict=True)]


def gaps(result: CallResult) -> list[float]:
    """Seconds between consecutive audio messages from the bot."""
    times = [t for t, kind, _ in result.messages if kind in RATE_OF_KIND]
    return [b - a for a, b in itertools.pairwise(times)]


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(
        f"bot: {args.bot}; {args.calls} call(s) at a time, each saying {args.bursts} bursts "
        "of noise, the rates one after the other on the same bot"
    )
    print(
        f"{'rate':>6} {'calls':>6} {'round trip p50':>15} {'min':>8} {'max':>8} "
        f"{'step':>8} {'gap p50':>8} {'p99':>8} {'max':>8}"
    )
    async with running_bot(args.bot) as server:
        for rate in args.rates:
            results = await asyncio.gather(
                *(
                    place_call(
                        "127.0.0.1",
                        server.port,
                        [*bursts(rate, args.bursts), Silence(0.3), Hangup()],
                        rate=rate,
                    )
                    for _ in range(args.calls)
                )
            )
            trips, steps, all_gaps = [], [], []
            for result in results:
                rt = round_trips(result)
                trips += rt
                quarter = max(1, len(rt) // 4)
                steps.append(statistics.median(rt[-quarter:]) - statistics.median(rt[:quarter]))
                all_gaps += gaps(result)
            ms = np.array(trips) * 1000
            g = np.array(all_gaps) * 1000
            print(
                f"{rate:>6} {args.calls:>6} {np.median(ms):>12.1f} ms {ms.min():>5.1f} ms "
                f"{ms.max():>5.1f} ms {max(steps, key=abs) * 1000:>5.1f} ms "
                f"{np.median(g):>5.1f} ms {np.percentile(g, 99):>5.1f} ms {g.max():>5.1f} ms",
                flush=True,
            )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bot", default=str(REPO / "configs" / "echo.yaml"))
    parser.add_argument("--rates", type=int, nargs="+", default=[8000, 16000])
    parser.add_argument("--bursts", type=int, default=20)
    parser.add_argument("--calls", type=int, default=1)
    asyncio.run(main(parser.parse_args()))
