"""The operations API over real HTTP: health, Prometheus metrics, calls in progress, auth."""

from __future__ import annotations

import asyncio
import json
import logging
import re
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from helpers import AUDIO
from pydantic import SecretStr

from voxpipe import events, logs
from voxpipe.bots.config import HttpSettings
from voxpipe.http import OperationsApi
from voxpipe.http.metrics import label
from voxpipe.http.state import CallList
from voxpipe.pipelines.call import Call

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
async def api() -> AsyncIterator[OperationsApi]:
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["desk"])
    await api.start()
    yield api
    await api.stop()


def client(api: OperationsApi, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", **kwargs)  # type: ignore[arg-type]


def sample(text: str, name: str, labels: str = "") -> float:
    """The value of one Prometheus sample in ``text`` (0 when absent)."""
    pattern = re.escape(name) + (r"\{" + re.escape(labels) + r"\}" if labels else "") + r" (\S+)"
    found = re.search(r"^" + pattern + r"$", text, re.M)
    return float(found.group(1)) if found else 0.0


async def test_health_reports_calls_store_and_uptime(api: OperationsApi) -> None:
    async with client(api) as http:
        response = await http.get("/health")
    assert response.status_code == 200
    body = response.json()
    assert body["status"] == "ok"
    assert body["bots"] == ["desk"]
    assert body["active_calls"] == 0
    assert body["session_store"] == "memory"
    assert body["uptime_s"] >= 0


async def test_health_is_503_while_draining(api: OperationsApi) -> None:
    async with client(api) as http:
        api.state.draining = True
        response = await http.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "draining"


async def test_health_is_503_while_a_required_provider_is_down(api: OperationsApi) -> None:
    async with client(api) as http:
        api.state.provider_down("stt", "google: UNAVAILABLE")
        down = await http.get("/health")
        api.state.provider_up("stt")
        back = await http.get("/health")
    assert down.status_code == 503
    assert down.json()["providers_down"] == {"stt": "google: UNAVAILABLE"}
    assert back.status_code == 200


async def test_health_is_503_after_provider_errors_in_a_row_until_a_reply(
    api: OperationsApi,
) -> None:
    call = Call(bot="desk")
    async with client(api) as http:
        events.emit.error(call, "provider")
        events.emit.error(call, "protocol")
        events.emit.error(call, "provider")
        still_up = await http.get("/health")
        events.emit.error(call, "provider")
        down = await http.get("/health")
        events.emit.provider_ttfb(call, "llm", "anthropic", 0.3)
        back = await http.get("/health")
    assert still_up.status_code == 200
    assert down.status_code == 503
    assert down.json()["status"] == "down"
    assert back.status_code == 200


async def test_health_reports_a_session_store_outage_without_failing() -> None:
    async def store_down() -> str:
        raise ConnectionError("Error 111 connecting to 127.0.0.1:6390")

    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["desk"], store_status=store_down)
    await api.start()
    try:
        async with client(api) as http:
            response = await http.get("/health")
    finally:
        await api.stop()
    assert response.status_code == 200
    assert response.json()["status"] == "degraded"
    assert response.json()["session_store"].startswith("down: Error 111")


async def test_metrics_follow_call_events(api: OperationsApi) -> None:
    call = Call(bot="desk")
    async with client(api) as http:
        before = (await http.get("/metrics")).text
        events.emit.call_started(call)
        events.emit.turn_latency(call, 0.42)
        events.emit.provider_ttfb(call, "tts", "piper", 0.05)
        events.emit.barge_in(call)
        events.emit.silence_hangup(call)
        events.emit.error(call, "provider: timeout after 3 s")
        events.emit.call_rejected("max_calls: 200 calls in progress")
        during = await http.get("/metrics")
        events.emit.call_ended(call, "caller hung up")
        after = (await http.get("/metrics")).text
    assert during.headers["content-type"].startswith("text/plain")
    text = during.text
    assert sample(before, "voxpipe_calls_total", 'bot="desk"') == 0
    assert sample(text, "voxpipe_calls_total", 'bot="desk"') == 1
    assert sample(text, "voxpipe_calls_active", 'bot="desk"') == 1
    assert sample(text, "voxpipe_turn_latency_seconds_count", 'bot="desk"') == 1
    assert sample(text, "voxpipe_turn_latency_seconds_sum", 'bot="desk"') == pytest.approx(0.42)
    assert sample(text, "voxpipe_provider_ttfb_seconds_count", 'kind="tts",provider="piper"') == 1
    assert sample(text, "voxpipe_barge_ins_total", 'bot="desk"') == 1
    assert sample(text, "voxpipe_silence_hangups_total", 'bot="desk"') == 1
    assert sample(text, "voxpipe_errors_total", 'kind="provider"') == 1
    assert sample(text, "voxpipe_calls_rejected_total", 'reason="max_calls"') == 1
    assert sample(after, "voxpipe_calls_active", 'bot="desk"') == 0
    assert sample(after, "voxpipe_call_duration_seconds_count", 'bot="desk"') == 1


async def test_each_api_has_its_own_metrics_registry() -> None:
    first = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["a"])
    second = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["b"])
    assert first.metrics.registry is not second.metrics.registry


async def test_calls_lists_calls_in_progress_with_their_state(api: OperationsApi) -> None:
    call = Call(bot="desk")
    async with client(api) as http:
        events.emit.call_started(call)
        events.emit.call_state(call, "listening")
        during = (await http.get("/calls")).json()
        events.emit.call_ended(call, "bot hung up")
        after = (await http.get("/calls")).json()
    assert during["count"] == 1
    (entry,) = during["calls"]
    assert entry["uuid"] == call.call_id
    assert entry["bot"] == "desk"
    assert entry["state"] == "listening"
    assert entry["duration_s"] >= 0
    assert after == {"count": 0, "calls": []}


async def test_calls_come_from_the_shared_store_when_there_is_one() -> None:
    other_worker = {"uuid": "c0ffee", "bot": "desk", "state": "speaking", "duration_s": 3.0}

    async def shared() -> CallList:
        return [other_worker]

    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), bots=["desk"], shared_calls=shared)
    await api.start()
    try:
        async with client(api) as http:
            body = (await http.get("/calls")).json()
    finally:
        await api.stop()
    assert body["calls"] == [other_worker]


async def test_bearer_token_is_required_when_configured() -> None:
    settings = HttpSettings(listen="127.0.0.1:0", token=SecretStr("s3cret-token"))
    api = OperationsApi(settings, bots=["desk"])
    await api.start()
    try:
        async with client(api) as http:
            missing = await http.get("/health")
            wrong = await http.get("/metrics", headers={"Authorization": "Bearer nope"})
            right = await http.get("/calls", headers={"Authorization": "Bearer s3cret-token"})
    finally:
        await api.stop()
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert wrong.status_code == 401
    assert right.status_code == 200


async def test_log_level_of_one_call_can_be_raised_while_it_runs(api: OperationsApi) -> None:
    call = Call(bot="desk")
    async with client(api) as http:
        events.emit.call_started(call)
        unknown = await http.put("/calls/nope/log-level", json={"level": "DEBUG"})
        raised = await http.put(f"/calls/{call.call_id}/log-level", json={"level": "DEBUG"})
        level_during = logs.call_level(call.call_id)
        restored = await http.put(f"/calls/{call.call_id}/log-level", json={"level": None})
        events.emit.call_ended(call, "caller hung up")
    assert unknown.status_code == 404
    assert raised.json() == {"uuid": call.call_id, "level": "DEBUG"}
    assert level_during == logging.DEBUG
    assert restored.status_code == 200
    assert logs.call_level(call.call_id) is None


async def test_a_busy_port_fails_at_start(api: OperationsApi) -> None:
    clash = OperationsApi(HttpSettings(listen=f"127.0.0.1:{api.port}"), bots=["desk"])
    with pytest.raises(OSError):
        await clash.start()
    assert clash.metrics not in events.emit.observers  # type: ignore[attr-defined]


async def keep_alive_requests(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, count: int
) -> float:
    """Seconds for ``count`` ``GET /health`` requests, one after another, on one connection."""
    request = b"GET /health HTTP/1.1\r\nHost: bot\r\n\r\n"
    started = time.perf_counter()
    for _ in range(count):
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 "), head
        length = re.search(rb"(?im)^content-length: *(\d+)", head)
        assert length is not None, head
        await reader.readexactly(int(length.group(1)))
    return time.perf_counter() - started


async def test_requests_on_one_keep_alive_connection_are_not_held_by_nagle(
    api: OperationsApi,
) -> None:
    # With Nagle's algorithm on, the body (uvicorn's second write) waits for the ACK of the
    # headers, which the client delays about 40 ms: 100 requests would take 4 s or more.
    reader, writer = await asyncio.open_connection("127.0.0.1", api.port)
    elapsed = await keep_alive_requests(reader, writer, 100)
    server = api.server._server
    assert server is not None
    sockets = [conn.transport.get_extra_info("socket") for conn in server.server_state.connections]
    writer.close()
    await writer.wait_closed()
    assert elapsed < 2.0, f"100 requests on one connection took {elapsed:.2f} s"
    assert len(sockets) == 1
    assert sockets[0].getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)


def test_reasons_become_bounded_labels() -> None:
    assert label("max_calls: 200 calls in progress") == "max_calls"
    assert label("bad first message") == "bad_first_message"
    assert label("error: tts: RuntimeError('boom')") == "error"
    assert label("Draining") == "draining"
    assert label("") == "unknown"


async def test_metrics_and_calls_change_after_a_simulated_call(api: OperationsApi) -> None:
    from voxpipe.bots.bot import Bot
    from voxpipe.bots.call import running_bot
    from voxpipe.transports.audiosocket.caller import (
        Hangup,
        Say,
        WaitForBot,
        load_wav,
        place_call,
    )

    speech = load_wav(AUDIO / "caller_goodbye_8k.wav", 8000)
    bot = Bot.load(ROOT / "configs" / "echo.yaml")
    async with running_bot(bot) as server, client(api) as http:
        before = (await http.get("/metrics")).text
        result = await place_call(
            "127.0.0.1", server.port, [Say(speech[:16000]), WaitForBot(5.0), Hangup()]
        )
        for _ in range(100):
            after = (await http.get("/metrics")).text
            if sample(after, "voxpipe_call_duration_seconds_count", 'bot="echo"') == 1:
                break
            await asyncio.sleep(0.05)
        calls = (await http.get("/calls")).json()
    assert result.bot_audio_s() > 0.5
    assert sample(before, "voxpipe_calls_total", 'bot="echo"') == 0
    assert sample(after, "voxpipe_calls_total", 'bot="echo"') == 1
    assert sample(after, "voxpipe_calls_active", 'bot="echo"') == 0
    assert sample(after, "voxpipe_call_duration_seconds_sum", 'bot="echo"') > 0.5
    assert calls == {"count": 0, "calls": []}


async def test_calls_of_every_worker_come_from_redis_without_ended_ones(redis_port: int) -> None:
    import redis.asyncio as redis

    from voxpipe.bots.bot import Bot

    store = redis.Redis(port=redis_port)
    try:
        record = {"bot": "desk", "history": [], "started": 0.0, "updated": 0.0}
        live = {**record, "call_id": "live-1", "state": "speaking", "worker": "hostb:42"}
        ended = {**record, "call_id": "failed-1", "state": "ended", "worker": "hostb:42"}
        for entry in (live, ended):
            await store.set(f"call_session:{entry['call_id']}", json.dumps(entry))
        bot = Bot.from_yaml(
            "name: desk\npipeline: [{echo: {}}]\nhttp: {listen: '127.0.0.1:0'}\n"
            f"session_store: {{redis: {{url: 'redis://127.0.0.1:{redis_port}/0'}}}}\n"
        )
        await bot.prepare()
        api = OperationsApi.for_bot(bot)
        assert api is not None
        await api.start()
        try:
            async with client(api) as http:
                calls = (await http.get("/calls")).json()
                health = (await http.get("/health")).json()
        finally:
            await api.stop()
    finally:
        await store.aclose()
    assert [(c["uuid"], c["state"], c["worker"]) for c in calls["calls"]] == [
        ("live-1", "speaking", "hostb:42")
    ]
    assert health["session_store"] == "ok"
