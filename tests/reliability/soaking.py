"""A soak: echo+VAD calls and demo conversations against running bots for minutes on end,
sampling the bots' memory and open file descriptors every few seconds.

The bots run as ``run-pipeline serve`` (``configs/echo.yaml``; ``configs/demo.yaml`` with its
model workers when there are conversations). Each echo caller holds a call of 20 to 60 s,
streaming a recording at real time and timing the echo that comes back, hangs up and calls
again; each conversation caller plays the demo's order conversation in a loop. A call is
dropped when the bot ends it (or refuses it) before the caller hangs up, or a conversation
does not end with the bot's goodbye. ``bench/soak.py`` is the long run; ``test_soak.py`` a
short one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import random
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
AUDIO = ROOT / "tests" / "audio"
FRAME_S = 0.02


@dataclass
class Sample:
    at_s: float
    rss_mb: dict[str, float]
    fds: dict[str, int]
    calls: int
    late_p99_ms: float
    conversations: int


@dataclass
class Soak:
    """What the soak saw: the samples, and the calls placed, completed and dropped."""

    samples: list[Sample] = field(default_factory=list)
    calls: int = 0
    dropped: int = 0
    conversations: int = 0
    conversations_dropped: int = 0
    problems: list[str] = field(default_factory=list)
    _late: list[float] = field(default_factory=list)

    def drop(self, what: str) -> None:
        if len(self.problems) < 10:
            self.problems.append(what)


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Bot:
    """``run-pipeline serve BOT --port P``, its log in a file."""

    def __init__(self, config: Path, workdir: Path) -> None:
        self.port = free_port()
        self.log = workdir / f"{config.stem}.log"
        self._out = self.log.open("wb")
        binary = Path(sys.executable).with_name("run-pipeline")
        command = [
            str(binary),
            "serve",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(self.port),
        ]
        self.popen = subprocess.Popen(command, stdout=self._out, stderr=subprocess.STDOUT)

    async def ready(self, limit_s: float = 180.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                raise RuntimeError(f"the bot exited:\n{self.output()}")
            if "listening for AudioSocket" in self.output():
                return
            await asyncio.sleep(0.2)
        raise RuntimeError(f"the bot did not start:\n{self.output()}")

    def output(self) -> str:
        self._out.flush()
        return self.log.read_text(errors="replace")

    def family(self) -> list[int]:
        """The bot's process and its descendants (model workers, fork server)."""
        parents: dict[int, int] = {}
        for entry in Path("/proc").iterdir():
            if entry.name.isdigit():
                with contextlib.suppress(OSError, IndexError):
                    parents[int(entry.name)] = int(
                        (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                    )
        family, added = {self.popen.pid}, True
        while added:
            added = False
            for child, parent in parents.items():
                if parent in family and child not in family:
                    family.add(child)
                    added = True
        return sorted(family)

    def rss_mb(self) -> float:
        total = 0.0
        for pid in self.family():
            with contextlib.suppress(OSError):
                for line in Path(f"/proc/{pid}/status").read_text().splitlines():
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1]) / 1024
        return total

    def fds(self) -> int:
        total = 0
        for pid in self.family():
            with contextlib.suppress(OSError):
                total += len(os.listdir(f"/proc/{pid}/fd"))
        return total

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(40)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        self._out.close()


def _frames() -> list[bytes]:
    from voxpipe.transports.audiosocket.caller import load_wav

    pcm = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    pcm += bytes(8000 * 2)  # a second of silence: the VAD hears speech stop and start
    return [pcm[i : i + 320] for i in range(0, len(pcm) - 319, 320)]


async def _listen(reader: asyncio.StreamReader, soak: Soak, ended: asyncio.Event) -> None:
    """Reads the bot's messages, noting how late each comes after the one before."""
    last = 0.0
    try:
        while True:
            header = await reader.readexactly(3)
            await reader.readexactly(int.from_bytes(header[1:], "big"))
            if header[0] == 0x00:
                break
            now = time.monotonic()
            if last:
                soak._late.append(max(0.0, now - last - FRAME_S))
            last = now
    except (OSError, asyncio.IncompleteReadError):
        pass
    ended.set()


async def echo_caller(
    port: int, soak: Soak, stop: asyncio.Event, hold_s: tuple[float, float]
) -> None:
    """Calls, holds the line streaming audio, hangs up, calls again, until ``stop``."""
    frames = _frames()
    while not stop.is_set():
        soak.calls += 1
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError as exc:
            soak.dropped += 1
            soak.drop(f"connect: {exc!r}")
            await asyncio.sleep(1)
            continue
        writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes)
        ended = asyncio.Event()
        listener = asyncio.create_task(_listen(reader, soak, ended))
        hold = random.uniform(*hold_s)
        started = time.monotonic()
        sent = 0
        while time.monotonic() - started < hold and not stop.is_set() and not ended.is_set():
            writer.write(b"\x10\x01\x40" + frames[sent % len(frames)])
            sent += 1
            await asyncio.sleep(max(0.0, started + sent * FRAME_S - time.monotonic()))
        if ended.is_set():
            soak.dropped += 1
            soak.drop(f"the bot ended an echo call after {time.monotonic() - started:.1f} s")
        with contextlib.suppress(OSError):
            writer.write(b"\x00\x00\x00")
            await writer.drain()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(ended.wait(), 5)
        listener.cancel()
        writer.close()


async def conversation_caller(port: int, soak: Soak, stop: asyncio.Event) -> None:
    """The demo's order conversation, over and over, until ``stop``."""
    from voxpipe.transports.audiosocket.caller import (
        Say,
        WaitForBot,
        WaitForHangup,
        load_wav,
        place_call,
    )

    lines = [
        load_wav(AUDIO / f"caller_{name}_8k.wav", 8000)
        for name in ("order_status", "order_number", "goodbye")
    ]
    while not stop.is_set():
        script: list[object] = [WaitForBot(30)]
        for pcm in lines:
            script += [Say(pcm), WaitForBot(40, quiet_s=1.5)]
        script[-1] = WaitForHangup(40)
        soak.conversations += 1
        try:
            result = await place_call(
                "127.0.0.1",
                port,
                script,
                rate=8000,
                max_duration_s=180,  # type: ignore[arg-type]
            )
        except OSError as exc:
            soak.conversations_dropped += 1
            soak.drop(f"conversation: {exc!r}")
            await asyncio.sleep(1.0)
            continue
        heard = sum(end - start for start, end in result.bot_segments)
        if result.hung_up_by != "bot" or heard < 3.0:
            soak.conversations_dropped += 1
            soak.drop(f"conversation: hung up by {result.hung_up_by}, {heard:.1f} s heard")
            await asyncio.sleep(1.0)


def _p99(values: list[float]) -> float:
    if len(values) < 2:
        return 0.0
    return statistics.quantiles(values, n=100)[98] * 1000


async def soak(
    workdir: Path,
    seconds: float,
    calls: int,
    conversations: int,
    sample_s: float = 10.0,
    hold_s: tuple[float, float] = (20.0, 60.0),
    progress: bool = False,
) -> Soak:
    """Run ``calls`` echo callers and ``conversations`` demo callers for ``seconds``."""
    result = Soak()
    bots = {"echo": Bot(ROOT / "configs" / "echo.yaml", workdir)}
    if conversations:
        # The demo measures its own max_calls (auto) at start, on a machine busy with the echo
        # calls: the soak asks it to take exactly its conversations.
        demo = workdir / "demo.yaml"
        text = (ROOT / "configs" / "demo.yaml").read_text()
        demo.write_text(text.replace("max_calls: auto", f"max_calls: {conversations}", 1))
        bots["demo"] = Bot(demo, workdir)
    try:
        for bot in bots.values():
            await bot.ready()
        stop = asyncio.Event()
        tasks = []
        for i in range(calls):  # callers arrive over the first two seconds, as real ones would
            tasks.append(
                asyncio.create_task(
                    _later(
                        i * 2.0 / max(calls, 1),
                        echo_caller(bots["echo"].port, result, stop, hold_s),
                    )
                )
            )
        for i in range(conversations):
            tasks.append(
                asyncio.create_task(
                    _later(i * 1.5, conversation_caller(bots["demo"].port, result, stop))
                )
            )
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < seconds:
            await asyncio.sleep(min(sample_s, seconds - elapsed))
            late, result._late = result._late, []
            sample = Sample(
                at_s=time.monotonic() - started,
                rss_mb={name: bot.rss_mb() for name, bot in bots.items()},
                fds={name: bot.fds() for name, bot in bots.items()},
                calls=result.calls,
                late_p99_ms=_p99(late),
                conversations=result.conversations,
            )
            result.samples.append(sample)
            if progress:
                print(row(sample), flush=True)
        stop.set()
        await asyncio.wait(tasks, timeout=60)
        for task in tasks:
            task.cancel()
        for name, bot in bots.items():
            if bot.popen.poll() is not None:
                result.drop(f"the {name} bot died")
                result.dropped += 1
            if "Traceback" in bot.output():
                result.drop(f"a traceback in the {name} bot's log")
    finally:
        for bot in bots.values():
            bot.stop()
    return result


async def _later(delay_s: float, work: object) -> None:
    await asyncio.sleep(delay_s)
    await work  # type: ignore[misc]


def header(names: list[str]) -> str:
    cols = "".join(f" {n + ' RSS MB':>14} {n + ' fds':>9}" for n in names)
    return f"{'time s':>7}{cols} {'calls':>7} {'late p99 ms':>11} {'convs':>6}"


def row(sample: Sample) -> str:
    cols = "".join(f" {sample.rss_mb[n]:>14.1f} {sample.fds[n]:>9d}" for n in sample.rss_mb)
    tail = f"{sample.calls:>7d} {sample.late_p99_ms:>11.1f} {sample.conversations:>6d}"
    return f"{sample.at_s:>7.0f}{cols} {tail}"


def drift(values: list[float]) -> float:
    """How far the values stray from their mean: (max - min) / mean."""
    mean = statistics.fmean(values)
    return (max(values) - min(values)) / mean if mean else 0.0


def after_warm_up(samples: list[Sample], warm_up_s: float = 0.0) -> list[Sample]:
    """The samples after the first fifth of the run and after ``warm_up_s`` (at least the first
    one dropped)."""
    steady = samples[max(1, len(samples) // 5) :]
    return [sample for sample in steady if sample.at_s >= warm_up_s]
