"""Fuzzing a running bot for a long time: N cases a surface, with a healthy echo call alongside.

    .venv/bin/python bench/fuzz.py [--cases 100000] [--surface audiosocket http websocket yaml]
                                   [--jobs 2] [--seed 0]

The bot is ``run-pipeline serve`` on an echo+VAD bot with an AudioSocket server, the HTTP API
and the call API (``tests/reliability/fuzzing.py`` holds the bot, the neighbour call and the
Hypothesis strategies of each surface). ``--jobs`` runs that many fuzzing processes against the
one bot, each with its own seed and its share of the cases. Prints, per surface: cases, cases
a second, crashes (the bot died, stopped answering, answered 5xx or closed a WebSocket with
1011, kept a bad connection open, or the loader raised anything but ConfigError), tracebacks
in the bot's log, and the neighbour call's longest silence and share of its echo.
"""

from __future__ import annotations

import argparse
import multiprocessing
import sys
import tempfile
import time
from pathlib import Path

from _machine import machine

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "tests" / "reliability")]

from fuzzing import SURFACES, Neighbour, Report, Target, fuzz, running_target  # noqa: E402


def _job(surface: str, cases: int, seed: int, workdir: str, ports: tuple[int, int]) -> Report:
    target = None if surface == "yaml" else Target.attached(*ports, Path(workdir) / "fuzz.log")
    return fuzz(surface, cases, Path(tempfile.mkdtemp(dir=workdir)), target, seed_=seed)


def run(surface: str, cases: int, jobs: int, seed: int, target: Target, workdir: Path) -> Report:
    started = time.monotonic()
    before = target.tracebacks()
    shares = [cases // jobs + (1 if i < cases % jobs else 0) for i in range(jobs)]
    args = [
        (surface, n, seed + i, str(workdir), (target.port, target.http_port))
        for i, n in enumerate(shares)
    ]
    with multiprocessing.get_context("fork").Pool(jobs) as pool:
        reports = pool.starmap(_job, args)
    total = Report(surface)
    for report in reports:
        total.cases += report.cases
        total.crashes += report.crashes
        total.failures += report.failures
        for outcome, n in report.outcomes.items():
            total.outcomes[outcome] = total.outcomes.get(outcome, 0) + n
        if surface == "yaml":
            total.tracebacks += report.tracebacks
    if surface != "yaml":
        if not target.alive() or not target.healthy():
            total.crash("the bot died or stopped answering /health")
        total.tracebacks = target.tracebacks() - before
    total.seconds = time.monotonic() - started
    return total


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--cases", type=int, default=100_000, help="cases a surface")
    parser.add_argument("--surface", nargs="+", choices=SURFACES, default=list(SURFACES))
    parser.add_argument("--jobs", type=int, default=2, help="fuzzing processes")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {machine()}", flush=True)
    failed = False
    with tempfile.TemporaryDirectory() as tmp, running_target(Path(tmp)) as target:
        with Neighbour(target.port) as neighbour:
            for surface in args.surface:
                since = time.monotonic()
                report = run(surface, args.cases, args.jobs, args.seed, target, Path(tmp))
                print(
                    f"{report.line()}; neighbour call: longest silence "
                    f"{neighbour.longest_gap(after=since) * 1000:.0f} ms, "
                    f"{neighbour.share():.1%} of its echo",
                    flush=True,
                )
                for failure in report.failures:
                    print(f"  {failure}")
                failed |= bool(report.crashes or report.tracebacks)
            if neighbour.error:
                print(f"neighbour call: {neighbour.error}")
                failed = True
        if failed:
            print(target.output()[-3000:])
            print("\n\n".join(target.traceback_excerpts()))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
