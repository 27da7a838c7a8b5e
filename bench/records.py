"""What call records cost: the call's side (queueing a row, a recorded audio frame) and the
writer's throughput into SQLite or PostgreSQL.

    .venv/bin/python bench/records.py [--url postgresql+asyncpg://user@127.0.0.1/db]

Prints microseconds per ``put`` on the event loop (what a turn or tool call costs a call),
microseconds per 20 ms frame through the audio recorder (caller and bot side), and rows per
second the writer stores in batches (default: a SQLite file in a temporary directory; the
tables are created there, and dropped again from a PostgreSQL database given with --url).
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from _machine import machine

from voxpipe.frames import DOWNSTREAM, InputAudioFrame, OutputAudioFrame
from voxpipe.pipelines.task import PipelineTask
from voxpipe.records import migrate
from voxpipe.records.audio import CallAudioRecorder
from voxpipe.records.service import make_engine
from voxpipe.records.writer import RecordWriter

ROWS = 20000


def turn_row(call_id: str, index: int) -> dict[str, object]:
    return {
        "call_id": call_id,
        "turn_index": index,
        "started_at": datetime.now(UTC),
        "speaker": "bot" if index % 2 else "caller",
        "text": "Sure. What is your order number?",
        "heard_text": None,
        "latency_ms": 612.5,
    }


async def writer_figures(url: str) -> tuple[float, float]:
    """(µs per put on the loop, rows per second written)."""
    engine = make_engine(url)
    await migrate.upgrade(engine)
    writer = RecordWriter(engine, queue_size=ROWS * 2, batch_size=500, flush_interval_s=0.05)
    calls = [str(uuid.uuid4()) for _ in range(ROWS // 20)]
    rows = [turn_row(calls[i // 20], i % 20) for i in range(ROWS)]
    started = time.perf_counter()
    for row in rows:
        writer.put("turn", row)
    put_us = (time.perf_counter() - started) / ROWS * 1e6
    writer.start()
    started = time.perf_counter()
    assert await writer.flushed(300), "the writer did not finish"
    rate = ROWS / (time.perf_counter() - started)
    await writer.close()
    if engine.dialect.name == "postgresql":
        await migrate.downgrade(engine)
    await engine.dispose()
    return put_us, rate


async def recorder_us(frames: int = 50000) -> float:
    """µs per 20 ms 16 kHz frame through the recorder (caller and bot frames alternating)."""
    with tempfile.TemporaryDirectory() as folder, concurrent.futures.ThreadPoolExecutor(1) as pool:
        recorder = CallAudioRecorder(Path(folder) / "call.wav", 16000, pool)
        task = PipelineTask([recorder])
        for processor in task.processors:
            processor.attach(task)
        caller = InputAudioFrame(bytes(640), 16000)
        bot = OutputAudioFrame(bytes(640), 16000)
        started = time.perf_counter()
        for i in range(frames):
            await recorder.process_frame(caller if i % 2 else bot, DOWNSTREAM)
        spent = time.perf_counter() - started
        await recorder.stop()
    return spent / frames * 1e6


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", help="a PostgreSQL database to measure (default: SQLite)")
    args = parser.parse_args()
    print(f"machine: {machine()}")
    with tempfile.TemporaryDirectory() as folder:
        url = args.url or f"sqlite+aiosqlite:///{Path(folder) / 'calls.db'}"
        put_us, rate = await writer_figures(url)
    where = "PostgreSQL" if url.startswith("postgresql") else "SQLite"
    print(f"queue one record (the call's side):        {put_us:.2f} µs")
    print(f"records written per second ({where}, batches of 500): {rate:,.0f}")
    print(f"audio recorder per 20 ms frame (16 kHz):    {await recorder_us():.2f} µs")


if __name__ == "__main__":
    asyncio.run(main())
