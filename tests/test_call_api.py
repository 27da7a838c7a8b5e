"""The call API over real WebSockets (the ``websockets`` client against the bot's uvicorn):
a whole demo conversation, barge-in, every kind of bad input, the token, refusals, draining."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from call_api_client import CallClient, load_pcm
from helpers import AUDIO, free_port
from pydantic import Field
from websockets.asyncio.client import connect

from voxpipe.bots.bot import Bot
from voxpipe.bots.config import ConfigError
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.http import OperationsApi
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings
from voxpipe.records.service import records_of

ROOT = Path(__file__).resolve().parents[1]

ECHO = """
name: echo
transport:
  audiosocket: {listen: "127.0.0.1:0", sample_rate: 16000}
  websocket: {path: /api/v1/call, max_calls: 3, start_timeout_s: 1, max_message_bytes: 4096}
http: {listen: "127.0.0.1:0"%s}
pipeline:
  - echo: {passthrough: true}
"""


@contextlib.asynccontextmanager
async def serving(bot: Bot) -> AsyncIterator[OperationsApi]:
    """The bot's HTTP server with the call API, on a free loopback port."""
    await bot.prepare()
    api = OperationsApi.for_bot(bot)
    assert api is not None and api.call_api is not None
    await api.start()
    try:
        yield api
    finally:
        await api.stop()
        await bot.close()


def call_url(api: OperationsApi, query: str = "") -> str:
    return f"ws://127.0.0.1:{api.port}/api/v1/call{query}"


def sample(text: str, name: str) -> float:
    found = re.search(r"^" + re.escape(name) + r" (\S+)$", text, re.M)
    return float(found.group(1)) if found else 0.0


# --- a whole conversation ----------------------------------------------------------------------


def demo_bot(tmp_path: Path) -> Bot:
    text = (ROOT / "configs" / "demo.yaml").read_text()
    text = text.replace('listen: "0.0.0.0:9092"', 'listen: "127.0.0.1:0"')
    text, added = re.subn(r"(?m)^(    max_calls: .*\n)", r"\1  websocket: {}\n", text)
    assert added == 1, "configs/demo.yaml no longer has transport.audiosocket.max_calls"
    text += 'http: {listen: "127.0.0.1:0"}\n'
    text += "caller: {variables: [ACCOUNT]}\n"
    text += f'call_records: {{url: "sqlite+aiosqlite:///{tmp_path / "calls.db"}", '
    text += "migrate: true, flush_interval_s: 0.05}\n"
    return Bot.from_yaml(text)


async def test_a_whole_demo_conversation_over_the_call_api(tmp_path: Path) -> None:
    """A caller asks for an order's status, gives its number and says goodbye; the bot answers
    each turn, reports the transcript and latencies, hangs up, and the call is counted and
    recorded like an AudioSocket call."""
    bot = demo_bot(tmp_path)
    trace = "4bf92f3577b34da6a3ce929d0e0e4736"
    start = {
        "call_id": "7d3c0c52-5bd8-4d6e-9c5e-2b1f7d0a9c11",
        "trace_id": trace,
        "initial_vars": {"number": "+15551234567", "name": "Ada", "ACCOUNT": "A-7", "x": "dropped"},
    }
    async with serving(bot) as api, CallClient.open(call_url(api), start) as caller:
        accepted = await caller.event("call_accepted")
        assert accepted == {"call_id": start["call_id"], "trace_id": trace, "sample_rate": 16000}
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as http:
            listed = (await http.get("/calls")).json()
            assert [c["uuid"] for c in listed["calls"]] == [start["call_id"]]
            await caller.quiet()  # the greeting
            for wav, answer in [
                ("caller_order_status", "What is your order number?"),
                ("caller_order_number", "ships tomorrow"),
            ]:
                said = len(caller.got.transcript("bot"))
                caller.say(load_pcm(AUDIO / f"{wav}_16k.wav", 16000))
                await caller.wait_for(
                    lambda said=said, answer=answer: any(
                        answer in line for line in caller.got.transcript("bot")[said:]
                    )
                )
                await caller.quiet()
            caller.say(load_pcm(AUDIO / "caller_goodbye_16k.wav", 16000))
            ended = await caller.event("call_terminated")
            await caller.closed.wait()
            for _ in range(100):  # the call's end is reported once its socket has closed
                if not (await http.get("/calls")).json()["count"]:
                    break
                await asyncio.sleep(0.05)
            metrics = (await http.get("/metrics")).text
    assert ended == {"reason": "hangup"}
    assert caller.close_code == 1000
    bot_lines = caller.got.transcript("bot")
    assert bot_lines[:2] == ["Hello, this is the ACME order desk.", "How can I help you?"]
    assert bot_lines[-2:] == ["Thank you for calling ACME.", "Goodbye."]
    heard = " ".join(caller.got.transcript("caller")).lower()
    assert "order" in heard and "bye" in heard
    latencies = caller.got.named("turn_latency")
    assert len(latencies) >= 3 and all(0 < t["ms"] < 10_000 for t in latencies)
    # The bot paces its audio: never more than a moment ahead of real time.
    first = caller.got.audio[0][0]
    sent = 0
    for at, size, _ in caller.got.audio:
        sent += size
        assert sent / 2 / 16000 <= at - first + 0.5
    assert sample(metrics, 'voxpipe_calls_total{bot="acme-order-desk"}') == 1
    assert (
        sample(metrics, 'voxpipe_calls_ended_total{bot="acme-order-desk",reason="hangup_tool"}')
        == 1
    )
    assert sample(metrics, 'voxpipe_calls_active{bot="acme-order-desk"}') == 0

    bot2 = demo_bot(tmp_path)  # the same database, read back
    await bot2.prepare()
    try:
        records = records_of(bot2)
        assert records is not None
        record = await records.get_call(start["call_id"])
    finally:
        await bot2.close()
    assert record is not None
    assert (record["way_in"], record["caller_number"], record["caller_name"]) == (
        "websocket",
        "+15551234567",
        "Ada",
    )
    assert record["trace_id"] == trace
    assert record["context"]["variables"] == {"ACCOUNT": "A-7"}
    assert record["outcome"] == "hangup"
    assert any("ships tomorrow" in turn["text"] for turn in record["turns"])


# --- barge-in ----------------------------------------------------------------------------------

LONG_GREETING = (
    "Welcome to the ACME order desk, where we track every parcel from the warehouse to your "
    "door, tell you when it ships, when it arrives, and what to do if it is late."
)

BARGE_IN = f"""
name: barge
greeting: "{LONG_GREETING}"
transport:
  audiosocket: {{listen: "127.0.0.1:0", sample_rate: 16000}}
  websocket: {{}}
http: {{listen: "127.0.0.1:0"}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - barge_in: {{min_speech_ms: 300, protect_greeting: false}}
  - llm: {{provider: scripted, fallback: "Sorry?"}}
  - tts: {{provider: tone, word_ms: 200}}
"""


@pytest.mark.parametrize("rate", [16000, 8000])
async def test_the_caller_talks_over_the_bot_and_gets_stop_audio_then_silence(rate: int) -> None:
    """The bot stops at once: stop_audio, the client drops its queue, no more of the cut
    greeting arrives, and the transcript shows the bot's sentence that was cut."""
    async with (
        serving(Bot.from_yaml(BARGE_IN)) as api,
        CallClient.open(call_url(api), {"sample_rate": rate}, rate=rate) as caller,
    ):
        await caller.wait_for(lambda: sum(voiced for _, _, voiced in caller.got.audio) >= 25)
        speech = load_pcm(AUDIO / f"caller_interrupt_{rate // 1000}k.wav", rate)
        caller.say(speech)
        await caller.event("stop_audio", timeout_s=10)
        (stopped_at,) = [t for t, name, _ in caller.got.events if name == "stop_audio"]
        await asyncio.sleep(0.6)  # the caller is still talking
        assert caller.speaking, "the caller's utterance should outlast this check"
    after = [size for t, size, voiced in caller.got.audio if t > stopped_at and voiced]
    assert after == [], "bot audio kept coming after stop_audio"
    assert caller.got.transcript("bot")[0].startswith("Welcome to the ACME order desk")
    # Real-time pacing: at the barge-in the client held no more than a couple of frames.
    assert caller.dropped <= 3 * 2 * rate // 50


# --- bad input ---------------------------------------------------------------------------------

BAD_FIRST = [
    ("not json", '{"event": "call_start"', "bad_json", 1007),
    ("no event", '{"payload": {}}', "bad_message", 1008),
    ("another event first", '{"event": "dtmf", "payload": {"digit": "1"}}', "bad_message", 1008),
    ("audio first", b"\x00\x00" * 160, "audio_before_call_start", 1008),
    (
        "a bad rate",
        '{"event": "call_start", "payload": {"sample_rate": 11025}}',
        "bad_message",
        1008,
    ),
    (
        "bad variables",
        '{"event": "call_start", "payload": {"initial_vars": [1]}}',
        "bad_message",
        1008,
    ),
    (
        "a bad call id",
        '{"event": "call_start", "payload": {"call_id": "a b"}}',
        "bad_message",
        1008,
    ),
    ("too large", b"\x00" * 8192, "too_large", 1009),
]

BAD_LATER = [
    ("not json", "nope", "bad_json", 1007),
    ("an unknown event", '{"event": "ping"}', "bad_message", 1008),
    ("call_start again", '{"event": "call_start"}', "bad_message", 1008),
    ("a bad digit", '{"event": "dtmf", "payload": {"digit": "X"}}', "bad_message", 1008),
    ("half a sample", b"\x00" * 641, "bad_audio", 1008),
    ("too large", b"\x00" * 8192, "too_large", 1009),
]


async def _refused(url: str, message: str | bytes) -> tuple[dict[str, Any], int | None]:
    """Send ``message`` first; the error event and the close code that answer it."""
    async with connect(url, ping_interval=None) as ws:
        await ws.send(message)
        error = json.loads(await ws.recv())
        with contextlib.suppress(Exception):
            await ws.recv()
        assert error["event"] == "error"
        return error["payload"], ws.close_code


async def test_every_bad_input_gets_an_error_event_and_a_close_and_nothing_else_is_hurt() -> None:
    async with serving(Bot.from_yaml(ECHO % "")) as api:
        url = call_url(api)
        trace = {"X-Trace-ID": "0af76519-16cd-43dd-8448-eb211c80319c"}
        async with CallClient.open(url, {"call_id": "good"}, additional_headers=trace) as good:
            accepted = await good.event("call_accepted")
            assert accepted["trace_id"] == "0af7651916cd43dd8448eb211c80319c"  # the header's
            for what, message, reason, code in BAD_FIRST:
                payload, closed = await _refused(url, message)
                assert (payload["reason"], closed) == (reason, code), what
                assert payload["message"], what
            for what, message, reason, code in BAD_LATER:
                async with CallClient.open(url, {}, stream=False) as bad:
                    await bad.event("call_accepted")
                    await bad.ws.send(message)
                    error = await bad.event("error")
                    await bad.closed.wait()
                assert (error["reason"], bad.close_code) == (reason, code), what
            async with connect(url, ping_interval=None) as silent:  # never sends call_start
                error = json.loads(await silent.recv())
                assert error["payload"]["reason"] == "no_call_start"
            # The good call still echoes, and still counts as the only call.
            echoed = len(good.got.audio)
            good.say(b"\x10\x27" * 3200)
            await good.wait_for(lambda: len(good.got.audio) > echoed + 10)
            assert list(api.call_api.calls) == ["good"]  # type: ignore[union-attr]
            await good.send_event("call_terminated", {"reason": "done"})
            await good.closed.wait()
        assert good.close_code == 1000
        assert api.call_api.calls == {}  # type: ignore[union-attr]


# --- the token ---------------------------------------------------------------------------------


async def test_the_token_goes_in_a_header_a_subprotocol_or_the_query() -> None:
    async with serving(Bot.from_yaml(ECHO % ', token: "s3cret"')) as api:
        url = call_url(api)
        ways: list[dict[str, Any]] = [
            {"additional_headers": {"Authorization": "Bearer s3cret"}},
            {"subprotocols": ["voxpipe.call.v1", "bearer.s3cret"]},
            {"url": call_url(api, "?token=s3cret")},
        ]
        for way in ways:
            kwargs = dict(way)
            async with CallClient.open(kwargs.pop("url", url), {}, **kwargs) as caller:
                await caller.event("call_accepted")
                if "subprotocols" in way:
                    assert caller.ws.subprotocol == "voxpipe.call.v1"
        for way in [
            {},
            {"additional_headers": {"Authorization": "Bearer wrong"}},
            {"subprotocols": ["voxpipe.call.v1", "bearer.wrong"]},
        ]:
            async with connect(url, ping_interval=None, **way) as ws:  # type: ignore[arg-type]
                error = json.loads(await ws.recv())
                with contextlib.suppress(Exception):
                    await ws.recv()
            assert error["payload"]["reason"] == "unauthorized"
            assert ws.close_code == 1008
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{api.port}") as http:
            assert (await http.get("/health")).status_code == 401  # the rest is unchanged


# --- refusals and failures ---------------------------------------------------------------------


class UnreachableVoiceSettings(ProcessorSettings):
    """A voice whose server is down: each call's processor connects to it when the call starts."""

    port: int = Field(description="Where nobody listens.")

    def create(self, call: Any, bot: Any) -> FrameProcessor:
        return UnreachableVoice(self.port)


class UnreachableVoice(FrameProcessor):
    def __init__(self, port: int) -> None:
        super().__init__(name="tts.remote")
        self.port = port

    async def start(self) -> None:
        _, writer = await asyncio.open_connection("127.0.0.1", self.port)
        writer.close()


async def test_a_call_whose_voice_cannot_be_reached_gets_call_failed_with_the_reason() -> None:
    registry = Registry.default(plugins=False)
    registry.add(ProcessorType("remote_voice", UnreachableVoiceSettings, "test"))
    text = ECHO % "" + f"  - remote_voice: {{port: {free_port()}}}\n"
    async with serving(Bot.from_yaml(text, registry=registry)) as api:
        async with CallClient.open(call_url(api), {"call_id": "c1"}) as caller:
            failed = await caller.event("call_failed")
            await caller.closed.wait()
        assert failed["reason"] == "start_failed"
        assert "tts.remote" in failed["message"] and "Connect" in failed["message"]
        assert caller.close_code == 1011
        assert not caller.got.named("call_accepted") and not caller.got.audio
        assert api.call_api.calls == {}  # type: ignore[union-attr]


async def test_a_full_bot_refuses_with_call_failed_and_a_draining_one_too() -> None:
    async with serving(Bot.from_yaml(ECHO % "")) as api:
        url = call_url(api)
        assert api.call_api is not None
        async with contextlib.AsyncExitStack() as stack:
            running = []
            for i in range(3):
                caller = await stack.enter_async_context(CallClient.open(url, {"call_id": f"r{i}"}))
                await caller.event("call_accepted")
                running.append(caller)
                if i == 0:
                    async with CallClient.open(url, {"call_id": "r0"}) as twin:
                        duplicate = await twin.event("call_failed")
            async with CallClient.open(url, {}) as extra:
                full = await extra.event("call_failed")
                await extra.closed.wait()
            stopping = asyncio.create_task(api.call_api.stop(drain_s=0.3))
            await asyncio.sleep(0.05)
            async with CallClient.open(url, {}) as late:
                draining = await late.event("call_failed")
                await late.closed.wait()
            await stopping
            for caller in running:
                ended = await caller.event("call_terminated")
                await caller.closed.wait()
                assert ended["reason"] == "shutdown" and caller.close_code == 1001
    assert duplicate["reason"] == "duplicate_call_id"
    assert full == {"reason": "max_calls", "message": "the bot is busy (3 calls); call again"}
    assert extra.close_code == 1013
    assert draining["reason"] == "draining" and late.close_code == 1013


# --- configuration -----------------------------------------------------------------------------


def test_the_call_api_needs_the_http_server_and_the_page_needs_the_call_api() -> None:
    no_http = "name: x\ntransport:\n  websocket: {}\npipeline:\n  - echo: {}\n"
    with pytest.raises(ConfigError) as found:
        Bot.from_yaml(no_http, "bot.yaml")
    (problem,) = found.value.problems
    assert (problem.line, problem.path) == (3, "transport.websocket")
    assert "http:" in problem.message
    no_api = "name: x\nhttp:\n  web: true\npipeline:\n  - echo: {}\n"
    with pytest.raises(ConfigError) as found:
        Bot.from_yaml(no_api, "bot.yaml")
    (problem,) = found.value.problems
    assert (problem.line, problem.path) == (3, "http.web")
    bad_path = "name: x\ntransport:\n  websocket: {path: /}\nhttp: {}\npipeline:\n  - echo: {}\n"
    with pytest.raises(ConfigError) as found:
        Bot.from_yaml(bad_path, "bot.yaml")
    assert found.value.problems[0].path == "transport.websocket.path"
