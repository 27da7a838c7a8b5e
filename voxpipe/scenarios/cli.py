"""``run-pipeline test BOT.yaml [SCENARIOS.yaml ...]``: run conversation tests, report, exit 1 on
any failure (2 when nothing could run: an invalid bot or scenario file)."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

from voxpipe.scenarios.runner import Job, ScenarioResult, iter_lines, run_jobs


def default_scenarios(bot: str) -> str:
    """``configs/demo.yaml`` -> ``configs/demo.test.yaml``."""
    path = Path(bot)
    return str(path.with_name(f"{path.stem}.test.yaml"))


def junit(results: list[ScenarioResult]) -> str:
    """The results as JUnit XML: one test suite per scenario file, one test case per scenario."""
    root = ET.Element("testsuites", name="run-pipeline test")
    files: dict[str, list[ScenarioResult]] = {}
    for result in results:
        files.setdefault(result.file, []).append(result)
    for file, group in files.items():
        failures = sum(not r.passed for r in group)
        suite = ET.SubElement(
            root,
            "testsuite",
            name=file,
            tests=str(len(group)),
            failures=str(failures),
            errors="0",
            time=f"{sum(r.duration_s for r in group):.2f}",
        )
        for result in group:
            case = ET.SubElement(
                suite, "testcase", classname=file, name=result.name, time=f"{result.duration_s:.2f}"
            )
            if not result.passed:
                failed = [s for s in result.steps if s.status == "failed"]
                message = result.error or (
                    f"step {failed[0].index + 1} ({failed[0].action}): {failed[0].message}"
                    if failed
                    else "failed"
                )
                node = ET.SubElement(case, "failure", message=message)
                node.text = "\n".join(iter_lines(result))
            out = ET.SubElement(case, "system-out")
            out.text = "\n".join(iter_lines(result))
    ET.indent(root)
    return ET.tostring(root, encoding="unicode", xml_declaration=True) + "\n"


def summary(results: list[ScenarioResult], seconds: float) -> dict[str, Any]:
    """Counts and turn latencies over every scenario."""
    latencies = sorted(
        s.latency_ms
        for r in results
        for s in r.steps
        if s.latency_ms is not None and s.action in ("bot_says", "within")
    )

    def pick(q: float) -> float | None:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] if latencies else None

    return {
        "scenarios": len(results),
        "passed": sum(r.passed for r in results),
        "failed": sum(not r.passed for r in results),
        "steps_failed": sum(s.status == "failed" for r in results for s in r.steps),
        "turn_latency_ms": {"p50": pick(0.5), "p95": pick(0.95), "max": pick(1.0)},
        "seconds": round(seconds, 2),
    }


def run_test_command(args: argparse.Namespace) -> int:
    """Load the bot and scenario files, play them, print the report; the exit code."""
    from voxpipe.bots.config import ConfigError
    from voxpipe.scenarios.model import load_scenarios

    files = list(args.scenarios) or [default_scenarios(args.bot)]
    jobs: list[Job] = []
    problems: list[str] = []
    for file in files:
        try:
            jobs += [Job(s, file) for s in load_scenarios(file)]
        except ConfigError as exc:
            problems += [str(p) for p in exc.problems]
    bot = None
    if not args.connect:
        from voxpipe.bots.bot import Bot

        try:
            bot = Bot.load(args.bot)
        except ConfigError as exc:
            problems += [str(p) for p in exc.problems]
    if problems:
        for problem in problems:
            print(problem, file=sys.stderr)
        print("run-pipeline test: nothing was run", file=sys.stderr)
        return 2
    connect = None
    if args.connect:
        host, _, port = str(args.connect).rpartition(":")
        connect = (host.strip("[]"), int(port))
    api = None
    if getattr(args, "api", None):
        from voxpipe.scenarios.api import OutcomeApi

        token = getattr(args, "token", None) or os.environ.get("VOXPIPE_API_TOKEN") or None
        api = OutcomeApi(args.api, token)
    out = sys.stderr if args.json else sys.stdout
    count = len(jobs)
    done: list[ScenarioResult] = []

    def report(result: ScenarioResult) -> None:
        done.append(result)
        print(f"[{len(done)}/{count}]", end=" ", file=out)
        print("\n".join(iter_lines(result)), file=out, flush=True)

    where = f"{args.connect}" if connect else f"{args.bot} served in-process"
    if api is not None:
        where += f" (outcomes from {api.url})"
    print(
        f"run-pipeline test: {count} scenario{'s' * (count != 1)} against {where}, "
        f"{args.concurrency} at a time",
        file=out,
        flush=True,
    )
    started = time.monotonic()

    async def main() -> list[ScenarioResult]:
        try:
            return await run_jobs(
                jobs,
                bot=bot,
                connect=connect,
                concurrency=args.concurrency,
                on_done=report,
                api=api,
            )
        finally:
            if bot is not None:
                await bot.close()

    results = asyncio.run(main())
    totals = summary(results, time.monotonic() - started)
    lat = totals["turn_latency_ms"]
    latency = (
        f"; turn latency p50 {lat['p50']:.0f} ms, p95 {lat['p95']:.0f} ms, max {lat['max']:.0f} ms"
        if lat["max"] is not None
        else ""
    )
    print(
        f"{totals['passed']} passed, {totals['failed']} failed of {totals['scenarios']} "
        f"scenarios in {totals['seconds']:.1f} s{latency}",
        file=out,
        flush=True,
    )
    if args.junit:
        Path(args.junit).write_text(junit(results), encoding="utf-8")
    if args.json:
        data = {"summary": totals, "scenarios": [r.as_dict() for r in results]}
        print(json.dumps(data, indent=2))
    return 0 if totals["failed"] == 0 else 1
