"""Conversations under load: N simulated callers of a real bot, each holding a three-turn call.

    .venv/bin/python bench/conversations.py [--calls 10 20 40] [--arrivals at-once spread]
                                           [--spread-s 5] [--bot configs/demo.yaml]
                                           [--max-calls auto|N]

For each N and way of arriving, the bot runs in its own process as ``serve`` runs it (its model
workers beside it; ``max_calls`` from the bot file, ``auto`` measuring the models at start),
and N callers connect over real AudioSocket, all at once or spread over ``--spread-s`` seconds.
Each caller is the demo's order conversation at 8 kHz, from the recordings in tests/audio: it
listens to the greeting, asks for its order's status, gives its order number, says goodbye
(each time waiting for the bot to finish answering), and the bot hangs up.

Per run: calls refused (closed at once by ``max_calls``), turns answered (the caller heard an
answer before saying anything else), turns lost (the bot's own count of turns it will never
answer: ``turn_lost`` events), turns unheard (no bot audio at all before the caller's next
words or the end of the call),
the turn latency (end of the caller's words to the first audio of the answer; when the reply was
late and the bot said its filler first, the answer is what follows the filler), the latency to
the first audio the caller heard at all (filler included), fillers said, and the bot's CPU (its
process and its model workers, % of one core) and peak RSS over the run. Then the calls per
core the bot carries with every turn answered and a 95th percentile latency of 2 s or less.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from _machine import machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
AUDIO = REPO / "tests" / "audio"
RATE = 8000
TURNS = ("caller_order_status", "caller_order_number", "caller_goodbye")
TARGET_P95_S = 2.0
# A caller takes the bot's answer as finished after this much quiet (a filler may come first).
QUIET_S = 2.5


# --- the bot process ---------------------------------------------------------------------------


async def _serve(bot_path: str, out: str, max_calls: str) -> None:
    """Serve the bot on a free port; print the port and limit; on SIGTERM write what it saw."""
    import logging

    logging.basicConfig(level=logging.ERROR)  # refusals and fillers are counted, not printed
    from voxpipe import events
    from voxpipe.bots.bot import Bot
    from voxpipe.pipelines.call import Call
    from voxpipe.processors.llm.base import LLMBaseSettings
    from voxpipe.processors.tts.base import CachedTTSSettings
    from voxpipe.transports.audiosocket.server import AudioSocketServer

    class Seen(events.Observer):
        def __init__(self) -> None:
            self.late: dict[str, list[float]] = {}
            self.lost = 0
            self.refused = 0
            self.started = 0

        def reply_late(self, call: Call) -> None:
            self.late.setdefault(call.call_id, []).append(time.monotonic())

        def turn_lost(self, call: Call, reason: str) -> None:
            self.lost += 1

        def call_rejected(self, reason: str) -> None:
            self.refused += reason == "max_calls"

        def call_started(self, call: Call) -> None:
            self.started += 1

    seen = Seen()
    events.subscribe(seen)
    bot = Bot.load(bot_path)
    await bot.prepare()
    update: dict[str, Any] = {"listen": "127.0.0.1:0"}
    if max_calls:
        update["max_calls"] = int(max_calls) if max_calls.isdigit() else max_calls
    settings = bot.config.transport.audiosocket.model_copy(update=update)
    server = AudioSocketServer(bot, settings)
    await server.start()
    filler_s, filler = 0.0, ""
    for step in bot.steps:
        if isinstance(step.settings, LLMBaseSettings):
            filler = step.settings.filler
    for step in bot.steps:
        if isinstance(step.settings, CachedTTSSettings):
            clip = step.settings.phrase_cache(bot).get(filler) if filler else None
            if clip is not None:
                filler_s = len(clip[0]) / 2 / clip[1]
    capacity = server.capacity.describe() if server.capacity is not None else ""
    print(json.dumps({"port": server.port, "max_calls": server.max_calls, "capacity": capacity}))
    sys.stdout.flush()
    stop = asyncio.Event()
    asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
    await stop.wait()
    await server.stop(0.0)
    saw = {
        "late": seen.late,
        "lost": seen.lost,
        "refused": seen.refused,
        "started": seen.started,
        "filler_s": filler_s,
    }
    await asyncio.to_thread(Path(out).write_text, json.dumps(saw))
    await bot.close()


# --- measuring the bot's processes -------------------------------------------------------------


def _family(pid: int) -> list[int]:
    """``pid`` and every process descended from it (the model workers, the fork server)."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            parents[int(entry.name)] = int(fields[1])
    family, added = {pid}, True
    while added:
        added = False
        for child, parent in parents.items():
            if parent in family and child not in family:
                family.add(child)
                added = True
    return sorted(family)


def _cpu_s(pids: list[int]) -> dict[int, float]:
    out: dict[int, float] = {}
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def _rss_mb(pids: list[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) / 1024
        except OSError:
            continue
    return total


# --- the callers -------------------------------------------------------------------------------


def _voice_end_s(pcm: bytes) -> float:
    """Where the words of a recording end: after its last 20 ms above -40 dBFS."""
    import numpy as np

    samples = np.frombuffer(pcm, "<i2").astype(np.float32)
    size = RATE // 50
    last = 0
    for i in range(0, len(samples) - size, size):
        if np.mean(samples[i : i + size] ** 2) > (32768 * 0.01) ** 2:
            last = i + size
    return last / RATE


@dataclass
class Turn:
    ended_s: float  # the caller's words ended (seconds into the call)
    until_s: float = float("inf")  # the caller's next words began (or the call ended)
    first_s: float | None = None  # first bot audio after them (the filler, if one came)
    answer_s: float | None = None  # first audio of the answer
    filler: bool = False


@dataclass
class Caller:
    call_id: str
    t0: float = 0.0
    refused: bool = False
    turns: list[Turn] = field(default_factory=list)
    voiced: list[float] = field(default_factory=list)  # when the bot's voiced audio arrived


def _voiced(result: Any) -> list[float]:
    """Arrival times of the bot's audio messages that carry voice."""
    import numpy as np

    from voxpipe.transports.audiosocket.caller import VOICE_PEAK
    from voxpipe.transports.audiosocket.protocol import RATE_OF_KIND

    times, offset = [], 0
    for t, kind, length in result.messages:
        if RATE_OF_KIND.get(kind) != RATE:
            continue
        chunk = np.frombuffer(result.received[offset : offset + length], "<i2")
        offset += length
        if chunk.size and int(np.abs(chunk.astype(np.int32)).max()) >= VOICE_PEAK:
            times.append(t)
    return times


async def _one_caller(port: int, delay_s: float, speech: list[tuple[bytes, float]]) -> Caller:
    from voxpipe.transports.audiosocket.caller import (
        Say,
        WaitForBot,
        WaitForHangup,
        place_call,
    )

    await asyncio.sleep(delay_s)
    caller = Caller(str(uuid.uuid4()))
    script: list[Any] = [WaitForBot(20)]
    for pcm, _ in speech:
        script += [Say(pcm), WaitForBot(40, quiet_s=QUIET_S)]
    script[-1] = WaitForHangup(40)
    caller.t0 = asyncio.get_running_loop().time()
    result = await place_call(
        "127.0.0.1", port, script, rate=RATE, call_id=caller.call_id, max_duration_s=180
    )
    voiced = _voiced(result)
    if not voiced and result.hung_up_by == "bot":
        caller.refused = True
        return caller
    says = [e.t for e in result.timeline if e.who == "caller" and e.what.startswith("speaks")]
    ends = [t + voice_s for t, (_, voice_s) in zip(says, speech, strict=False)]
    call_end = result.timeline[-1].t
    for i, ended in enumerate(ends):
        until = says[i + 1] if i + 1 < len(says) else call_end
        heard = [t for t in voiced if ended < t < until]
        turn = Turn(ended, until)
        if heard:
            turn.first_s = turn.answer_s = heard[0]
        caller.turns.append(turn)
    for _ in range(len(speech) - len(ends)):
        caller.turns.append(Turn(float("inf")))  # never said: the call ended before
    caller.turns = caller.turns[: len(speech)]
    caller.voiced = voiced
    return caller


def _place_fillers(callers: list[Caller], late: dict[str, list[float]], filler_s: float) -> None:
    """Turns whose reply was late: the answer is the first audio after the filler."""
    for caller in callers:
        voiced = caller.voiced
        for at in late.get(caller.call_id, []):
            rel = at - caller.t0
            turn = next((t for t in reversed(caller.turns) if t.ended_s < rel), None)
            if turn is None or turn.first_s is None:
                continue
            turn.filler = True
            starts = [t for t in voiced if t >= rel]
            if not starts:
                continue
            after = starts[0] + filler_s - 0.06
            turn.answer_s = next((t for t in voiced if after <= t < turn.until_s), None)


def _pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, round(q / 100 * len(ordered) + 0.5) - 1))]


async def run(
    n: int, arrivals: str, spread_s: float, bot: str, max_calls: str, seed: int
) -> dict[str, Any]:
    """One run with ``n`` callers."""
    from voxpipe.transports.audiosocket.caller import load_wav

    speech = []
    for name in TURNS:
        pcm = load_wav(AUDIO / f"{name}_8k.wav", RATE)
        speech.append((pcm, _voice_end_s(pcm)))
    rng = random.Random(seed)
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "seen.json")
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            __file__,
            "--serve",
            bot,
            "--out",
            out,
            "--max-calls",
            max_calls or "",
            stdout=subprocess.PIPE,
        )
        assert proc.stdout is not None
        info = json.loads(await proc.stdout.readline())
        family = _family(proc.pid)
        cpu0, start = _cpu_s(family), time.monotonic()
        peak = _rss_mb(family)
        delays = [0.0 if arrivals == "at-once" else rng.uniform(0, spread_s) for _ in range(n)]
        callers_task = asyncio.gather(*(_one_caller(info["port"], d, speech) for d in delays))
        while not callers_task.done():
            peak = max(peak, _rss_mb(_family(proc.pid)))
            await asyncio.sleep(0.5)
        callers = await callers_task
        family = _family(proc.pid)
        cpu1, end = _cpu_s(family), time.monotonic()
        peak = max(peak, _rss_mb(family))
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 60)
        seen = json.loads(await asyncio.to_thread(Path(out).read_text))
    _place_fillers(callers, seen["late"], seen["filler_s"])
    taken = [c for c in callers if not c.refused]
    turns = [t for c in taken for t in c.turns]
    answered = [t for t in turns if t.answer_s is not None]
    latency = [t.answer_s - t.ended_s for t in answered if t.answer_s is not None]
    first = [t.first_s - t.ended_s for t in answered if t.first_s is not None]
    used = sum(cpu1.get(pid, 0.0) - cpu0.get(pid, 0.0) for pid in cpu1)
    return {
        "n": n,
        "arrivals": arrivals,
        "max_calls": info["max_calls"],
        "capacity": info["capacity"],
        "refused": len(callers) - len(taken),
        "refused_by_bot": seen["refused"],
        "turns": len(turns),
        "answered": len(answered),
        "lost": seen["lost"],
        "unheard": sum(t.first_s is None for t in turns),
        "fillers": sum(t.filler for t in turns),
        "p50": statistics.median(latency) if latency else float("nan"),
        "p95": _pct(latency, 95),
        "max": max(latency, default=float("nan")),
        "first_p95": _pct(first, 95),
        "cpu_pct": 100 * used / (end - start),
        "rss_mb": peak,
    }


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(
        f"bot: {args.bot} (max_calls {args.max_calls or 'as in the file'}); each caller at "
        f"{RATE} Hz: greeting, {', '.join(TURNS)}; arrivals at once or spread over "
        f"{args.spread_s:g} s"
    )
    print(
        f"{'callers':>7} {'arrivals':>9} {'limit':>5} {'refused':>7} {'answered':>8} "
        f"{'lost':>4} {'unheard':>7} "
        f"{'p50':>6} {'p95':>6} {'max':>6} {'1st p95':>7} {'fillers':>7} {'CPU %':>6} "
        f"{'RSS MB':>6}"
    )
    rows = []
    for n in args.calls:
        for arrivals in args.arrivals:
            r = await run(n, arrivals, args.spread_s, args.bot, args.max_calls, args.seed)
            rows.append(r)
            if r["capacity"] and len(rows) == 1:
                print(f"  capacity: {r['capacity']}")
            print(
                f"{r['n']:>7} {r['arrivals']:>9} {r['max_calls']:>5} {r['refused']:>7} "
                f"{r['answered']:>5}/{r['turns']:<2} {r['lost']:>4} {r['unheard']:>7} "
                f"{r['p50']:>5.2f}s "
                f"{r['p95']:>5.2f}s {r['max']:>5.2f}s {r['first_p95']:>6.2f}s "
                f"{r['fillers']:>7} {r['cpu_pct']:>6.0f} {r['rss_mb']:>6.0f}",
                flush=True,
            )
    cores = len(os.sched_getaffinity(0))
    carried = [
        r["n"] - r["refused"]
        for r in rows
        if r["arrivals"] == "at-once"
        and r["answered"] == r["turns"]
        and r["lost"] == 0
        and r["p95"] <= TARGET_P95_S
    ]
    best = max(carried, default=0)
    print(
        f"calls per core with every turn answered and p95 <= {TARGET_P95_S:g} s, all arriving "
        f"at once: {best / cores:.1f} ({best} calls on {cores} cores)"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[10, 20, 40])
    parser.add_argument(
        "--arrivals", nargs="+", default=["at-once", "spread"], choices=["at-once", "spread"]
    )
    parser.add_argument("--spread-s", type=float, default=5.0)
    parser.add_argument("--bot", default=str(REPO / "configs" / "demo.yaml"))
    parser.add_argument(
        "--max-calls", default="", help="auto or a number of calls (default: the bot file's)"
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--serve", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    cli = parser.parse_args()
    if cli.serve:
        asyncio.run(_serve(cli.serve, cli.out, cli.max_calls))
    else:
        asyncio.run(main(cli))
