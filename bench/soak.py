"""A soak: 200 echo+VAD calls and 10 offline demo conversations in a loop for 10 minutes.

    .venv/bin/python bench/soak.py [--minutes 10] [--calls 200] [--conversations 10]
                                   [--sample-s 10]

The bots run as ``run-pipeline serve`` (``configs/echo.yaml``, and ``configs/demo.yaml`` with
its model workers); ``tests/reliability/soaking.py`` holds the callers. Every ``--sample-s`` it
prints the bots' RSS (each bot with its model workers) and open file descriptors, the calls
placed so far, the 99th percentile lateness of the echo (how much later than 20 ms after the
previous one each message arrived, over the window) and the conversations begun. At the end:
calls and conversations dropped, and each figure's drift after the warm-up: (max - min) / mean,
which must stay within 5 %. The warm-up is the first fifth of the run, and at least 300 s
(the time a bot with an ``http:`` block keeps ended calls' outcomes, ``OutcomeLog``; the echo
bot has none). Meanwhile the echo bot's RSS rises: nothing of an ended call outlives it
(``tests/reliability/test_retention.py``) but the trace ids of the last 4096 calls
(``voxpipe.logs``, under 1 MB in all); the rest is the heap growing to what 200 concurrent
calls churn through, then reused. Run 10 minutes or more to see the steady state.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path

from _machine import machine

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / "reliability")]

from soaking import after_warm_up, drift, header, soak  # noqa: E402

from voxpipe.sessions.outcomes import RETENTION_S  # noqa: E402

LIMIT = 0.05


async def main(args: argparse.Namespace) -> int:
    print(f"machine: {machine()}", flush=True)
    names = ["echo"] + (["demo"] if args.conversations else [])
    print(header(names), flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        result = await soak(
            Path(tmp),
            args.minutes * 60,
            args.calls,
            args.conversations,
            args.sample_s,
            progress=True,
        )
    steady = after_warm_up(result.samples, RETENTION_S + args.sample_s)
    if not steady:
        print(f"the run is too short for a steady state: run longer than {RETENTION_S:.0f} s")
        return 1
    failed = bool(result.dropped or result.conversations_dropped)
    print(
        f"echo calls: {result.calls} placed, {result.dropped} dropped; "
        f"conversations: {result.conversations} begun, {result.conversations_dropped} dropped"
    )
    for name in names:
        rss = drift([s.rss_mb[name] for s in steady])
        fds = drift([float(s.fds[name]) for s in steady])
        print(f"{name} after warm-up: RSS drift {rss:.1%}, fd drift {fds:.1%}")
        failed |= rss > LIMIT or fds > LIMIT
    late = [s.late_p99_ms for s in steady]
    print(f"echo lateness p99 after warm-up: {min(late):.1f} to {max(late):.1f} ms")
    for problem in result.problems:
        print(f"  {problem}")
    print("FLAT" if not failed else "NOT FLAT, OR CALLS DROPPED")
    return 1 if failed else 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--calls", type=int, default=200, help="echo+VAD callers")
    parser.add_argument("--conversations", type=int, default=10, help="demo callers")
    parser.add_argument("--sample-s", type=float, default=10.0)
    sys.exit(asyncio.run(main(parser.parse_args())))
