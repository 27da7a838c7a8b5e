"""Nothing of an ended call outlives it: after a few hundred echo+VAD calls, the objects that
make up a call (its ``Call``, pipeline task, processors, transport, asyncio tasks) are back to
the count before them, and the one per-call cache (each call's trace id, for log lines written
just after it ended) holds no more than its bound."""

from __future__ import annotations

import asyncio
import collections
import gc
import io
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxpipe import events, logs
from voxpipe.bots.call import running_bot
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.transports.audiosocket.caller import Hangup, Say, place_call
from voxpipe.transports.audiosocket.server import ActiveCall
from voxpipe.transports.audiosocket.transport import AudioSocketTransport, Connection

KINDS = (
    Call,
    PipelineTask,
    FrameProcessor,
    ActiveCall,
    AudioSocketTransport,
    Connection,
    asyncio.Task,
)


def _census() -> collections.Counter[str]:
    """Live objects of the kinds a call is made of, and asyncio tasks, by type name."""
    gc.collect()
    counts: collections.Counter[str] = collections.Counter()
    for obj in gc.get_objects():
        if isinstance(obj, KINDS):
            counts[type(obj).__name__] += 1
    return counts


@pytest.fixture
def serve_logging(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The log setup ``run-pipeline serve`` installs (per-call trace ids), on a buffer."""
    monkeypatch.setattr(logs, "MAX_TRACES", 50)
    levels = {name: logging.getLogger(name).level for name in ("", "voxpipe")}
    handler = logs.setup_logging("INFO", "text", set(), stream=io.StringIO())
    yield
    logging.getLogger().removeHandler(handler)
    events.unsubscribe(logs._call_context)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


async def test_ended_calls_leave_no_objects_behind(echo_yaml: Path, serve_logging: None) -> None:
    words = bytes(range(256)) * 13  # 0.2 s at 8 kHz, not silence
    async with running_bot(echo_yaml) as server:

        async def calls(count: int, at_once: int = 20) -> None:
            for _ in range(0, count, at_once):
                results = await asyncio.gather(
                    *(
                        place_call("127.0.0.1", server.port, [Say(words), Hangup()])
                        for _ in range(at_once)
                    )
                )
                assert all(r.hung_up_by == "caller" for r in results)
            # The server finishes each call's bookkeeping after the caller's hang-up.
            for _ in range(100):
                if not server.calls and not server._handlers:
                    break
                await asyncio.sleep(0.05)

        await calls(40)  # warm-up: lazily made singletons (the audio ticker, caches)
        before = _census()
        await calls(200)
        after = _census()
        assert not server.calls
        grown = {kind: after[kind] - before[kind] for kind in after if after[kind] > before[kind]}
        assert not grown, f"left behind by 200 ended calls: {grown} (before: {dict(before)})"
        assert len(logs._traces) == logs.MAX_TRACES
