"""Graceful shutdown of a real ``serve`` process: SIGTERM/SIGINT stop new calls and drain."""

from __future__ import annotations

import asyncio
import re
import signal
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from voxpipe.transports.audiosocket.caller import (
    Say,
    Silence,
    WaitForHangup,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import Kind, encode

SERVE = """
import sys
from voxpipe.bots.bot import Bot
from voxpipe.bots.serve import run_loop, serve
sys.exit(run_loop(serve(Bot.load(sys.argv[1]), host="127.0.0.1", port=0)))
"""

BOT = """
name: echo
transport:
  audiosocket: {{sample_rate: 8000, drain_s: {drain_s}}}
pipeline:
  - echo: {{}}
"""


class Served:
    """A bot served by a child process, and the port it listens on."""

    def __init__(self, proc: asyncio.subprocess.Process, port: int) -> None:
        self.proc = proc
        self.port = port


async def _serve(tmp_path: Path, drain_s: float) -> AsyncIterator[Served]:
    bot = tmp_path / "echo.yaml"
    bot.write_text(BOT.format(drain_s=drain_s))
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        str(bot),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    port = 0
    banner: list[str] = []
    async with asyncio.timeout(30):
        while not port:
            line = (await proc.stdout.readline()).decode()
            assert line, "serve exited before listening"
            banner.append(line)
            found = re.search(r"listening for AudioSocket on 127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else 0
        banner.append((await proc.stdout.readline()).decode())
    assert banner[0].startswith("voxpipe: preparing bot 'echo' (1 step)")
    assert re.match(r"voxpipe: ready in \d+\.\d s", banner[1])
    assert f"AudioSocket(${{UUID()}},127.0.0.1:{port})" in banner[-1], "a dialplan line that works"
    try:
        yield Served(proc, port)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


@pytest.fixture
async def patient(tmp_path: Path) -> AsyncIterator[Served]:
    async for served in _serve(tmp_path, drain_s=10.0):
        yield served


@pytest.fixture
async def impatient(tmp_path: Path) -> AsyncIterator[Served]:
    async for served in _serve(tmp_path, drain_s=0.5):
        yield served


def _tone(seconds: float) -> bytes:
    t = np.arange(int(seconds * 8000)) / 8000
    return (np.sin(2 * np.pi * 300 * t) * 12000).astype("<i2").tobytes()


async def _refused(port: int) -> bool:
    """Whether a new call is refused: no listener, or closed at once."""
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except ConnectionError:
        return True
    writer.write(encode(Kind.UUID, bytes(range(16))))
    try:
        async with asyncio.timeout(1.0):
            closed = await reader.read() == b""
    except (TimeoutError, ConnectionError):
        closed = False
    writer.close()
    return closed


async def test_sigterm_lets_a_running_call_finish_then_exits_cleanly(patient: Served) -> None:
    call = asyncio.create_task(
        place_call("127.0.0.1", patient.port, [Silence(0.3), Say(_tone(2.0)), Silence(0.4)])
    )
    await asyncio.sleep(0.6)
    patient.proc.send_signal(signal.SIGTERM)
    await asyncio.sleep(0.2)
    assert await _refused(patient.port), "a new call was accepted while draining"
    result = await call
    assert result.hung_up_by == "caller"
    assert sum(end - start for start, end in result.bot_segments) > 1.8
    async with asyncio.timeout(5):
        assert await patient.proc.wait() == 0


async def test_sigint_hangs_up_calls_still_running_at_the_drain_deadline(
    impatient: Served,
) -> None:
    call = asyncio.create_task(place_call("127.0.0.1", impatient.port, [WaitForHangup(10.0)]))
    await asyncio.sleep(0.5)
    impatient.proc.send_signal(signal.SIGINT)
    result = await call
    assert result.hung_up_by == "bot"
    assert result.timeline[-1].t < 4.0
    async with asyncio.timeout(5):
        assert await impatient.proc.wait() == 0
