"""What operations cost a call: metrics per event, one log line, one /metrics scrape.

    .venv/bin/python bench/operations.py

Prints microseconds per call event with the operations observers subscribed (metrics, call
tracker, provider watch) and with none, per log line (JSON and text, secrets masked), and per
rendering of ``/metrics`` after 1000 calls, and per ``GET /health`` on one keep-alive
connection to the running API (real loopback TCP).
"""

from __future__ import annotations

import asyncio
import io
import logging
import re
import time
from collections.abc import Callable

from _machine import machine

from voxpipe import events, logs
from voxpipe.bots.config import HttpSettings
from voxpipe.http import OperationsApi
from voxpipe.pipelines.call import Call


def per_op_us(run: Callable[[], None], count: int) -> float:
    """Microseconds per operation, best of three runs of ``count``."""
    best = float("inf")
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(count):
            run()
        best = min(best, time.perf_counter() - started)
    return best / count * 1e6


def one_call(call: Call) -> None:
    """The events of a short call: start, four states, a turn, three providers, the end."""
    emit = events.emit
    emit.call_started(call)
    for state in ("listening", "processing", "speaking", "listening"):
        emit.call_state(call, state)
    emit.turn_latency(call, 0.61)
    emit.provider_ttfb(call, "stt", "google", 0.12)
    emit.provider_ttfb(call, "llm", "anthropic", 0.35)
    emit.provider_ttfb(call, "tts", "google", 0.09)
    emit.call_ended(call, "caller hung up")


async def keep_alive_ms(count: int = 500) -> float:
    """Milliseconds per ``GET /health``, sent one after another on one keep-alive connection."""
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["desk"])
    await api.start()
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    request = b"GET /health HTTP/1.1\r\nHost: bot\r\n\r\n"
    started = time.perf_counter()
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        await reader.readexactly(int(length.group(1)) if length else 0)
    elapsed = time.perf_counter() - started
    writer.close()
    await writer.wait_closed()
    await api.stop()
    return elapsed / count * 1e3


def main() -> None:
    print(f"machine: {machine()}")
    call = Call(bot="desk")
    bare = per_op_us(lambda: one_call(call), 20000) / 11
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["desk"])
    for observer in (api.metrics, api.tracker, api.watch):
        events.subscribe(observer)
    observed = per_op_us(lambda: one_call(call), 20000) / 11
    print(f"call event, no observer:          {bare:6.2f} us")
    print(f"call event, operations observers: {observed:6.2f} us")

    log = Call(bot="desk").log
    secrets = {f"secret-value-{i}" for i in range(10)}
    for fmt in ("json", "text"):
        logs.setup_logging("INFO", fmt, secrets, stream=io.StringIO())
        line = per_op_us(lambda: log.info("transcript: %s", "where is my order 1234"), 20000)
        print(f"log line ({fmt}, 10 secrets masked):  {line:6.2f} us")
    logs.setup_logging("INFO", "text", secrets, stream=io.StringIO())
    debug = per_op_us(lambda: log.debug("vad: %d windows", 3), 100000)
    print(f"debug line below the level:        {debug:6.2f} us")
    logging.getLogger().handlers.clear()

    for _ in range(1000):
        one_call(Call(bot="desk"))
    scrape = per_op_us(api.metrics.render, 200)
    size = len(api.metrics.render())
    print(f"/metrics render after 1000 calls:  {scrape:6.0f} us ({size} bytes)")
    keep_alive = asyncio.run(keep_alive_ms())
    print(f"GET /health on one keep-alive connection: {keep_alive:.2f} ms per request")


if __name__ == "__main__":
    main()
