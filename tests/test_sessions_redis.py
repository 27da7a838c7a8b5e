"""The Redis session store against a real redis-server: keys, TTL, outages and recovery."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from helpers import RedisServer, free_port
from pydantic import SecretStr

from voxpipe.bots.bot import Bot
from voxpipe.bots.config import RedisStoreSettings
from voxpipe.bots.workers import Supervisor
from voxpipe.conversation import CallState, move
from voxpipe.conversation.tracker import ConversationTracker
from voxpipe.frames import (
    UPSTREAM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    LLMResponseStartFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.sessions.store import (
    KEY_PREFIX,
    RedisSessionStore,
    end_worker_calls,
    session_store,
    worker_id,
)
from voxpipe.testing import RunningChain, until


@pytest.fixture
def server() -> Iterator[RedisServer]:
    srv = RedisServer()
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
async def store(server: RedisServer) -> AsyncIterator[RedisSessionStore]:
    st = RedisSessionStore(server.url, ttl_s=60, timeout_s=0.5, max_backoff_s=0.2)
    await st.start()
    yield st
    await st.close()


def record(server: RedisServer, call: Call) -> dict[str, Any] | None:
    raw = server.client().get(KEY_PREFIX + call.call_id)
    return None if raw is None else json.loads(raw)  # type: ignore[arg-type]


async def test_a_call_is_written_with_a_ttl_refreshed_and_deleted(
    server: RedisServer, store: RedisSessionStore
) -> None:
    call = Call(bot="desk")
    move(call, CallState.LISTENING)
    call.history.append({"role": "user", "content": "Hello"})
    store.save(call)
    await until(lambda: record(server, call) is not None)
    saved = record(server, call)
    assert saved is not None
    assert saved["state"] == "listening" and saved["bot"] == "desk"
    assert saved["history"] == [{"role": "user", "content": "Hello"}]
    assert saved["started"] <= saved["updated"]
    key = KEY_PREFIX + call.call_id
    assert 55 <= server.client().ttl(key) <= 60
    server.client().expire(key, 5)
    move(call, CallState.PROCESSING)
    store.save(call)
    await until(lambda: (record(server, call) or {}).get("state") == "processing")
    assert server.client().ttl(key) > 50, "every write refreshes the TTL"
    assert [c["call_id"] for c in await store.list_calls()] == [call.call_id]
    store.end(call)
    await until(lambda: record(server, call) is None)
    assert store.status() == "ok"


async def test_redis_dies_mid_call_and_comes_back(
    server: RedisServer, store: RedisSessionStore, caplog: pytest.LogCaptureFixture
) -> None:
    chain = await RunningChain(ConversationTracker(store, greeting=None)).start()
    task, call, runner = chain.task, chain.call, chain.runner
    assert runner is not None
    await until(lambda: (record(server, call) or {}).get("state") == "listening")

    server.stop()
    with caplog.at_level(logging.WARNING, logger="voxpipe.sessions"):
        for turn in range(5):
            call.history.append({"role": "user", "content": f"turn {turn}"})
            await task.push_frame(LLMResponseStartFrame())
            await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
            await task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
            await asyncio.sleep(0.1)
        await until(lambda: store.status() == "degraded")
        assert store.get(call.call_id)["history"][-1]["content"] == "turn 4"  # type: ignore[index]
        assert [c["call_id"] for c in await store.list_calls()] == [call.call_id]
        outages = [r for r in caplog.records if "unavailable" in r.getMessage()]
        assert len(outages) == 1, "the outage is logged once, not per write"

        server.start()
        await until(lambda: store.status() == "ok")
        await until(lambda: record(server, call) is not None)
    saved = record(server, call)
    assert saved is not None and saved["history"][-1]["content"] == "turn 4"
    assert not task.done, "the call went on through the outage"

    task.end()
    assert await asyncio.wait_for(runner, 5) == "end"
    await until(lambda: record(server, call) is None)


async def test_redis_down_at_start_the_bot_still_takes_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    url = f"redis://127.0.0.1:{free_port()}/0"
    store_yaml = f"session_store: {{redis: {{url: '{url}', ttl_s: 30}}}}\n"
    bot = Bot.from_yaml("name: t\npipeline:\n  - echo: {}\n" + store_yaml)
    with caplog.at_level(logging.WARNING, logger="voxpipe.sessions"):
        await bot.prepare()
    store = session_store(bot)
    assert isinstance(store, RedisSessionStore)
    assert store.status() == "degraded"
    call = bot.new_call()
    chain = await RunningChain(
        build=lambda up, down: bot.create_pipeline(call, tail=[down])
    ).start()
    task, runner = chain.task, chain.runner
    assert runner is not None
    assert store.get(call.call_id) is not None
    task.end()
    assert await asyncio.wait_for(runner, 5) == "end"
    assert sum("unavailable" in r.getMessage() for r in caplog.records) == 1
    await store.close()


async def test_a_redis_restart_on_the_same_port_gets_state_written_again(
    server: RedisServer, store: RedisSessionStore
) -> None:
    call = Call(bot="desk")
    move(call, CallState.LISTENING)
    store.save(call)
    await until(lambda: record(server, call) is not None)
    server.stop()
    server.start()  # an empty Redis, as after a restart without persistence
    assert record(server, call) is None
    move(call, CallState.PROCESSING)
    store.save(call)
    await until(lambda: (record(server, call) or {}).get("state") == "processing")


async def test_closing_the_store_writes_what_is_pending(server: RedisServer) -> None:
    store = RedisSessionStore(server.url, ttl_s=60)
    calls = [Call(bot="desk") for _ in range(3)]
    for call in calls:
        move(call, CallState.LISTENING)
        store.save(call)
    store.end(calls[0])
    await store.close()
    assert record(server, calls[0]) is None
    assert [record(server, c)["state"] for c in calls[1:]] == ["listening", "listening"]  # type: ignore[index]


async def test_a_failed_call_leaves_its_record_but_is_not_listed(
    server: RedisServer, store: RedisSessionStore
) -> None:
    chain = await RunningChain(ConversationTracker(store, greeting=None)).start()
    task, runner = chain.task, chain.runner
    assert runner is not None
    task.fail(RuntimeError("provider exploded"), source="llm")
    await asyncio.wait_for(runner, 5)
    await until(lambda: (record(server, task.call) or {}).get("state") == "ended")
    assert await store.list_calls() == []


def live_record(call_id: str, worker: str, **fields: Any) -> str:
    record = {"call_id": call_id, "bot": "desk", "state": "listening", "worker": worker}
    record.update(history=[{"role": "user", "content": "my order is 1234"}], outcome=None)
    return json.dumps({**record, **fields})


def test_the_calls_of_a_dead_worker_end_as_failed_calls_and_no_others(
    server: RedisServer,
) -> None:
    client = server.client()
    client.set(KEY_PREFIX + "a1", live_record("a1", "host:1"), ex=1800)
    client.set(KEY_PREFIX + "a2", live_record("a2", "host:1", outcome="transfer,ops,100,1"))
    client.set(KEY_PREFIX + "a3", live_record("a3", "host:1", state="ended", outcome="hangup"))
    client.set(KEY_PREFIX + "b1", live_record("b1", "host:2"), ex=1800)

    ended = end_worker_calls(server.url, "host:1", ttl_s=60)

    records = {key: json.loads(client.get(KEY_PREFIX + key)) for key in ("a1", "a2", "a3", "b1")}
    assert sorted(ended) == ["a1", "a2"]
    assert [records[key]["state"] for key in ("a1", "a2", "b1")] == ["ended", "ended", "listening"]
    assert records["a1"]["outcome"] == "error"
    assert records["a2"]["outcome"] == "transfer,ops,100,1"  # settled before the worker died
    assert records["a1"]["history"] == [{"role": "user", "content": "my order is 1234"}]
    assert 0 < client.ttl(KEY_PREFIX + "a1") <= 60
    assert client.ttl(KEY_PREFIX + "b1") > 60


def test_the_supervisor_ends_a_dead_workers_calls_once_redis_answers_again(
    server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    settings = RedisStoreSettings(url=SecretStr(server.url), ttl_s=60)
    supervisor = Supervisor(2, ["serve", "bot.yaml"], settings)
    server.client().set(KEY_PREFIX + "a1", live_record("a1", worker_id(4242)), ex=1800)
    server.stop()
    with caplog.at_level(logging.WARNING, logger="voxpipe.workers"):
        supervisor.worker_died(4242)
        supervisor.end_orphaned_calls()  # a retry while Redis is still down: not logged again
        assert worker_id(4242) in supervisor.orphans
        assert caplog.text.count("cannot end the calls of dead worker") == 1
        server.start()
        server.client().set(KEY_PREFIX + "a1", live_record("a1", worker_id(4242)), ex=1800)
        supervisor.end_orphaned_calls()
    assert supervisor.orphans == {}
    assert json.loads(server.client().get(KEY_PREFIX + "a1"))["state"] == "ended"  # type: ignore[arg-type]
    assert f"worker {worker_id(4242)} died with 1 call(s) in progress" in caplog.text
