"""What a call over the call API costs the bot: N WebSocket callers against an echo bot.

    .venv/bin/python bench/call_api.py [--calls 20 50 100] [--seconds 10] [--rate 16000]

For each N the bot runs in its own process, its HTTP server (uvicorn, on the event loop
``serve`` uses) serving the call API for configs/echo.yaml's bot, pinned to the first core; this
process, pinned to the second, opens N connections with the ``websockets`` client, sends
``call_start`` and then one 20 ms audio message per call per slot (callers spread over the
slot), and counts the echo that comes back. Over a measuring window it reports the bot process's
CPU (% of one core, and µs per 20 ms frame in and out) and the share of the expected audio
echoed. ``bench/calls.py`` measures the same over AudioSocket.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

from _machine import machine

REPO = Path(__file__).resolve().parents[1]
FRAME_S = 0.02

# configs/echo.yaml's bot (an 8 kHz pipeline with a VAD), as bench/calls.py runs it.
BOT = """
name: echo
transport:
  audiosocket: {{listen: "127.0.0.1:0", sample_rate: 8000}}
  websocket: {{max_calls: 1000, sample_rate: {rate}}}
http: {{listen: "127.0.0.1:{port}"}}
pipeline:
  - echo: {{passthrough: true}}
  - vad: {{engine: webrtc, aggressiveness: 2, start_ms: 200, stop_ms: 600}}
"""


async def _serve(port: int, rate: int) -> None:
    from voxpipe.bots.bot import Bot
    from voxpipe.http import OperationsApi

    bot = Bot.from_yaml(BOT.format(port=port, rate=rate))
    await bot.prepare()
    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    print("ready", flush=True)
    await asyncio.Event().wait()


def _cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def _caller(url: str, rate: int, phase: float, stop: float, got: list[int]) -> None:
    from websockets.asyncio.client import connect

    frame = bytes(int(rate * FRAME_S) * 2)
    async with connect(url, ping_interval=None, max_size=None) as ws:
        await ws.send(json.dumps({"event": "call_start", "payload": {"sample_rate": rate}}))

        async def read() -> None:
            async for message in ws:
                if isinstance(message, bytes):
                    got[0] += len(message)

        reader = asyncio.create_task(read())
        due = time.monotonic() + phase
        while due < stop:
            await asyncio.sleep(max(0.0, due - time.monotonic()))
            await ws.send(frame)
            due += FRAME_S
        await ws.send(json.dumps({"event": "call_terminated"}))
        reader.cancel()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run(calls: int, seconds: float, rate: int) -> None:
    port = _free_port()
    bot = subprocess.Popen(
        [sys.executable, __file__, "--serve", str(port), "--rate", str(rate)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    try:
        if (os.cpu_count() or 1) >= 2:
            os.sched_setaffinity(bot.pid, {0})
            os.sched_setaffinity(0, {1})
        assert bot.stdout is not None and bot.stdout.readline().strip() == "ready"
        asyncio.run(_measure(bot.pid, f"ws://127.0.0.1:{port}/api/v1/call", calls, seconds, rate))
    finally:
        bot.terminate()
        bot.wait(10)


async def _measure(pid: int, url: str, calls: int, seconds: float, rate: int) -> None:
    warm = 2.0
    stop = time.monotonic() + warm + seconds + 1.0
    got = [0]
    tasks = [
        asyncio.create_task(_caller(url, rate, i * FRAME_S / calls, stop, got))
        for i in range(calls)
    ]
    await asyncio.sleep(warm)
    cpu0, got0, t0 = _cpu_s(pid), got[0], time.monotonic()
    await asyncio.sleep(seconds)
    cpu1, got1, t1 = _cpu_s(pid), got[0], time.monotonic()
    await asyncio.gather(*tasks, return_exceptions=True)
    window = t1 - t0
    frames = calls * window / FRAME_S
    share = (got1 - got0) / 2 / rate / (calls * window)
    print(
        f"{calls:4d} calls: bot CPU {100 * (cpu1 - cpu0) / window:5.1f} % of a core, "
        f"{1e6 * (cpu1 - cpu0) / frames:5.1f} µs per 20 ms frame in and out, "
        f"echo delivered {100 * share:5.1f} %",
        flush=True,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, nargs="+", default=[20, 50, 100])
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--rate", type=int, default=16000)
    parser.add_argument("--serve", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        from voxpipe.bots.serve import run_loop

        run_loop(_serve(args.serve, args.rate))
        return
    print("machine:", machine(), flush=True)
    print(f"call API echo at {args.rate} Hz, {args.seconds:g} s window", flush=True)
    for calls in args.calls:
        _run(calls, args.seconds, args.rate)


if __name__ == "__main__":
    main()
