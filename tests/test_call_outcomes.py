"""How a call ended, as the dialplan asks for it: GET /calls/{uuid}/outcome over real HTTP.

Simulated calls over real AudioSocket connections end in a transfer, a bot hangup, a caller
hangup or an error; the bot's HTTP API then answers each with the line the sample dialplan
branches on. A ``keys`` processor stands in for a bot: ``0`` transfers, ``#`` says goodbye and
``9`` breaks the call.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from fakes.ari import FakeAri
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

from voxpipe.ari import AriController
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import AriSettings, HttpSettings
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.frames import Direction, DTMFFrame, Frame, HangupFrame, TransferFrame
from voxpipe.http import OperationsApi
from voxpipe.http.outcomes import OutcomeLookup
from voxpipe.http.state import CallTracker
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor, QueuedProcessor
from voxpipe.pipelines.settings import ProcessorSettings
from voxpipe.sessions.outcomes import OutcomeLog
from voxpipe.sessions.store import KEY_PREFIX, RedisSessionStore
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import (
    Dtmf,
    Hangup,
    Silence,
    WaitForHangup,
    place_call,
)
from voxpipe.transports.audiosocket.server import AudioSocketServer

TRANSFER = "transfer,transfer-to-operator,100,2"


class Keys(QueuedProcessor):
    """A stand-in bot that obeys the caller's keys, on a task of its own as an LLM does (so
    the transport's reader goes on reading while a transfer is carried out)."""

    async def handle_frame(self, frame: Frame, direction: Direction) -> None:
        await self.push_frame(frame, direction)
        if isinstance(frame, DTMFFrame):
            if frame.digit == "0":
                await self.push_frame(
                    TransferFrame(context="transfer-to-operator", extension="100", priority=2)
                )
            elif frame.digit == "#":
                await self.push_frame(HangupFrame(reason="goodbye"))
            elif frame.digit == "9":
                raise RuntimeError("the bot broke")


class KeysSettings(ProcessorSettings):
    """Test bot."""

    def create(self, call: Call, bot: Bot) -> FrameProcessor:
        return Keys(name="keys")


def keys_bot(extra: str = "") -> Bot:
    registry = Registry.default()
    registry.add(ProcessorType("keys", KeysSettings, origin="test"))
    text = (
        "name: keys\ntransport:\n  audiosocket: {sample_rate: 8000}\n"
        "pipeline:\n  - keys: {}\nhttp: {listen: '127.0.0.1:0'}\n" + extra
    )
    return Bot.from_yaml(text, registry=registry)


@pytest.fixture
async def served() -> AsyncIterator[tuple[AudioSocketServer, OperationsApi]]:
    """The keys bot taking calls, with its HTTP API, as ``serve`` runs them."""
    bot = keys_bot()
    async with running_bot(bot) as server:
        api = OperationsApi.for_bot(bot)
        assert api is not None
        await api.start()
        try:
            yield server, api
        finally:
            await api.stop()


def client(api: OperationsApi, **kwargs: object) -> httpx.AsyncClient:
    return httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}", **kwargs)  # type: ignore[arg-type]


async def outcome(api: OperationsApi, call_id: str, **headers: str) -> httpx.Response:
    async with client(api, timeout=10.0) as http:
        return await http.get(f"/calls/{call_id}/outcome", headers=headers)


async def test_a_transfer_is_told_apart_from_a_goodbye(
    served: tuple[AudioSocketServer, OperationsApi],
) -> None:
    server, api = served
    transferred = await place_call(
        "127.0.0.1", server.port, [Silence(0.1), Dtmf("0"), WaitForHangup(5.0)]
    )
    # Asked the moment the bot hung up, as Asterisk's dialplan does.
    transfer_answer = await outcome(api, transferred.call_id)
    goodbye = await place_call(
        "127.0.0.1", server.port, [Silence(0.1), Dtmf("#"), WaitForHangup(5.0)]
    )
    goodbye_answer = await outcome(api, goodbye.call_id)
    assert transferred.hung_up_by == goodbye.hung_up_by == "bot"
    assert (transfer_answer.status_code, transfer_answer.text) == (200, TRANSFER)
    assert transfer_answer.headers["content-type"].startswith("text/plain")
    assert (goodbye_answer.status_code, goodbye_answer.text) == (200, "hangup")


async def transfer_through_ari(server: AudioSocketServer) -> str:
    """A caller in Stasis presses 0 through a fake Asterisk that bridges them to ``server``;
    the bot's ARI controller moves them on. Returns the call's UUID."""
    fake = FakeAri()
    fake.connect_media, fake.media_start = True, "after_reply"  # as Asterisk 22 does
    await fake.start()
    settings = AriSettings(url=fake.url, username=fake.username, password=fake.password)
    controller = AriController(settings, f"127.0.0.1:{server.port}")
    server.on_call_start.append(controller.attach)
    await controller.start()
    try:
        await until(lambda: len(fake.sockets) == 1)
        caller = await fake.place_call()
        await until(lambda: any(c.bridged for c in controller.calls.values()))
        (ari_call,) = controller.calls.values()
        await fake.press(caller, "0")
        await until(lambda: not controller.calls and not server.calls)
        moved = [r.params for r in fake.made("POST", f"/channels/{caller}/continue")]
        assert moved == [{"context": "transfer-to-operator", "extension": "100", "priority": "2"}]
        assert not fake.media_legs[ari_call.media_id].closed_by_bot  # Asterisk closed it
        return ari_call.uuid
    finally:
        await controller.stop()
        await fake.stop()


def calls_ended(metrics_text: str) -> dict[str, float]:
    """``voxpipe_calls_ended_total`` by reason, from a /metrics page."""
    return {
        sample.labels["reason"]: sample.value
        for family in text_string_to_metric_families(metrics_text)
        for sample in family.samples
        if sample.name == "voxpipe_calls_ended_total"
    }


@pytest.mark.parametrize("way_in", ["audiosocket-application", "audiosocket-channel", "ari"])
async def test_a_transfer_is_reported_as_transferred_whichever_way_the_call_came_in(
    served: tuple[AudioSocketServer, OperationsApi],
    caplog: pytest.LogCaptureFixture,
    way_in: str,
) -> None:
    """The caller presses 0. The outcome API, the call's last log line and the calls-ended
    metric all say transferred: with the AudioSocket() application (8 kHz), the channel
    driver (slin16), and ARI, where Asterisk closes the bot's socket (the controller hangs
    the bot's leg up) before the transfer returns."""
    server, api = served
    with caplog.at_level(logging.INFO, logger="voxpipe"):
        if way_in == "ari":
            call_id = await transfer_through_ari(server)
        else:
            rate = 8000 if way_in == "audiosocket-application" else 16000
            script = [Silence(0.1), Dtmf("0"), WaitForHangup(5.0)]
            result = await place_call("127.0.0.1", server.port, script, rate=rate)
            assert result.hung_up_by == "bot"
            call_id = result.call_id
        answer = await outcome(api, call_id)
    async with client(api, timeout=10.0) as http:
        metrics = (await http.get("/metrics")).text

    assert (answer.status_code, answer.text) == (200, TRANSFER)
    (ended,) = [
        r.getMessage()
        for r in caplog.records
        if r.getMessage().startswith(f"[call {call_id}] call ended after")
    ]
    assert ended.endswith(": transferred")
    assert calls_ended(metrics) == {"transferred": 1.0}


async def test_a_caller_hangup_and_a_failed_call(
    served: tuple[AudioSocketServer, OperationsApi],
) -> None:
    server, api = served
    hung_up = await place_call("127.0.0.1", server.port, [Silence(0.3), Hangup()])
    caller_answer = await outcome(api, hung_up.call_id)
    broken = await place_call(
        "127.0.0.1", server.port, [Silence(0.1), Dtmf("9"), WaitForHangup(5.0)]
    )
    error_answer = await outcome(api, broken.call_id)
    assert (caller_answer.status_code, caller_answer.text) == (200, "caller")
    assert broken.hung_up_by == "bot"
    assert (error_answer.status_code, error_answer.text) == (200, "error")


async def test_an_unknown_call_is_404_unknown(
    served: tuple[AudioSocketServer, OperationsApi],
) -> None:
    _, api = served
    answer = await outcome(api, str(uuid.uuid4()))
    assert (answer.status_code, answer.text) == (404, "unknown")


async def test_the_outcome_outlives_the_call_until_its_retention() -> None:
    bot = keys_bot()
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0"), ["keys"], outcome_retention_s=1.0)
    await api.start()
    try:
        async with running_bot(bot) as server:
            result = await place_call(
                "127.0.0.1", server.port, [Silence(0.1), Dtmf("#"), WaitForHangup(5.0)]
            )
            await until(lambda: not server.calls, what="the call is over")
        kept = await outcome(api, result.call_id)
        await asyncio.sleep(1.3)
        dropped = await outcome(api, result.call_id)
    finally:
        await api.stop()
    assert (kept.status_code, kept.text) == (200, "hangup")
    assert (dropped.status_code, dropped.text) == (404, "unknown")


async def test_the_outcome_needs_the_bearer_token_when_one_is_set() -> None:
    api = OperationsApi(HttpSettings(listen="127.0.0.1:0", token=SecretStr("s3cret")), ["keys"])
    api.outcomes.record("call-1", "hangup")
    await api.start()
    try:
        without = await outcome(api, "call-1")
        wrong = await outcome(api, "call-1", Authorization="Bearer nope")
        right = await outcome(api, "call-1", Authorization="Bearer s3cret")
    finally:
        await api.stop()
    assert without.status_code == wrong.status_code == 401
    assert (right.status_code, right.text) == (200, "hangup")


def test_the_log_keeps_at_most_its_size_and_forgets_after_retention() -> None:
    now = [0.0]
    log = OutcomeLog(retention_s=60.0, max_entries=3, clock=lambda: now[0])
    for n in range(5):
        log.record(f"call-{n}", "hangup")
        now[0] += 1.0
    assert len(log) == 3
    assert log.get("call-0") is None and log.get("call-1") is None
    assert log.get("call-4") == "hangup"
    now[0] = 62.5  # call-2 ended at 2.0 and call-3 at 3.0: only call-2 is past 60 s
    assert log.get("call-2") is None
    assert log.get("call-3") == "hangup"


# --- Redis: any worker can answer -------------------------------------------------------------


async def test_with_redis_another_worker_answers_from_the_calls_record(redis_port: int) -> None:
    import redis.asyncio as redis

    url = f"redis://127.0.0.1:{redis_port}/0"
    raw = redis.Redis(port=redis_port)
    bot = keys_bot(f"session_store: {{redis: {{url: '{url}'}}}}\n")
    other_worker = RedisSessionStore(url, ttl_s=1800)
    await other_worker.start()
    try:
        async with running_bot(bot) as server:
            result = await place_call(
                "127.0.0.1", server.port, [Silence(0.1), Dtmf("0"), WaitForHangup(5.0)]
            )
        # This API saw none of the bot's calls: it answers from Redis alone.
        api = OperationsApi(
            HttpSettings(listen="127.0.0.1:0"), ["keys"], shared_record=other_worker.fetch
        )
        await api.start()
        try:
            answer = await outcome(api, result.call_id)
            unknown = await outcome(api, str(uuid.uuid4()))
        finally:
            await api.stop()
        key = KEY_PREFIX + result.call_id
        record = json.loads(await raw.get(key))
        ttl = await raw.ttl(key)
    finally:
        await other_worker.close()
        await bot.close()
        await raw.aclose()
    assert len(api.outcomes) == 0
    assert (answer.status_code, answer.text) == (200, TRANSFER)
    assert (unknown.status_code, unknown.text) == (404, "unknown")
    assert record["state"] == "ended" and record["outcome"] == TRANSFER
    assert "history" not in record, "an ended call's dialogue is not kept for its outcome"
    assert 0 < ttl <= 300


# --- asking while the call is still ending ----------------------------------------------------


async def test_a_call_still_ending_on_another_worker_is_waited_for() -> None:
    """Asterisk may ask before the worker that carried the call has written its outcome."""
    records: list[dict[str, Any] | None] = [
        {"call_id": "c1", "state": "transferring", "outcome": None},
        {"call_id": "c1", "state": "transferring", "outcome": None},
        {"call_id": "c1", "state": "ended", "outcome": TRANSFER},
    ]

    async def shared_record(call_id: str) -> dict[str, Any] | None:
        return records.pop(0) if len(records) > 1 else records[0]

    lookup = OutcomeLookup(OutcomeLog(), CallTracker(), shared_record=shared_record, wait_s=5.0)
    assert await lookup.outcome("c1") == TRANSFER
    assert len(records) == 1, "it asked again until the outcome was there"


async def test_a_call_that_goes_on_is_unknown_after_the_wait() -> None:
    tracker = CallTracker()
    tracker.call_started(Call(call_id="c2", bot="keys"))
    lookup = OutcomeLookup(OutcomeLog(), tracker, wait_s=0.3)
    assert await lookup.outcome("c2") is None
    tracker.call_ended(Call(call_id="c2", bot="keys"), "end")
    assert await lookup.outcome("c2") is None, "a call nobody has is not waited for"
