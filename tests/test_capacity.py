"""Capacity as callers meet it: late transcripts answered, a filler instead of dead air, model
workers that die mid-utterance, calls refused cleanly beyond the limit, and a burst of callers
of the demo losing no turn.

Every call is a simulated caller over real AudioSocket with the recorded caller audio; the
models run in the process-wide model pool (two workers), shared with the other test modules.
"""

from __future__ import annotations

import asyncio
import math
import os
import signal
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from fakes.slow_models import registry
from helpers import AUDIO, observing

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.conversation.state import CallState, state_of
from voxpipe.http.metrics import Metrics
from voxpipe.http.state import CallTracker, ServiceState
from voxpipe.models.shared import models_of
from voxpipe.pipelines.call import Call
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Hangup,
    Say,
    Silence,
    WaitForBot,
    load_wav,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import Kind, encode
from voxpipe.transports.audiosocket.server import AudioSocketServer

REPO = Path(__file__).resolve().parents[1]
ASKED = "I would like to check the status of my order"
REPLY = "Sure. What is your order number?"
MENU = "#JSGF V1.0; grammar menu; public <a> = [please] (yes | no | transfer me to an operator);"


class Turns(events.Observer):
    """Lost turns, late replies and refusals, as the metrics would count them."""

    def __init__(self) -> None:
        self.lost: list[str] = []
        self.late: list[str] = []
        self.rejected: list[str] = []

    def turn_lost(self, call: Call, reason: str) -> None:
        self.lost.append(reason)

    def reply_late(self, call: Call) -> None:
        self.late.append(call.call_id)

    def call_rejected(self, reason: str) -> None:
        self.rejected.append(reason)


@pytest.fixture
def turns() -> Iterator[Turns]:
    with observing(Turns()) as observer:
        yield observer


def slow_desk(delay_s: float, *, tts: str = "{provider: piper}", extra: str = "") -> Bot:
    """An order desk whose speech-to-text takes ``delay_s`` per utterance in its worker."""
    return Bot.from_yaml(
        f"""
name: slow-desk
transport: {{audiosocket: {{sample_rate: 8000, max_calls: 5}}}}
models: {{workers: 2}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - slow_stt: {{delay_s: {delay_s}, text: "{ASKED}"}}
  - llm:
      provider: scripted
      intents: [{{keywords: [order], reply: "{REPLY}"}}]{extra}
  - tts: {tts}
""",
        registry=registry(),
    )


def speech_end(result: CallResult) -> float:
    """When the caller's (first) utterance ended, in the call's time."""
    said = next(e for e in result.timeline if e.who == "caller" and e.what.startswith("speaks"))
    return said.t + float(said.what.split()[1])


def keep_calls(server: AudioSocketServer) -> list[Call]:
    calls: list[Call] = []

    async def keep(call: Call) -> None:
        calls.append(call)

    server.on_call_start.append(keep)
    return calls


# --- late transcripts and the filler ---------------------------------------------------------


async def test_a_transcript_later_than_any_deadline_is_answered_after_the_filler(
    turns: Turns,
) -> None:
    # 5.5 s of decoding: the old final_timeout_s (5 s) would have dropped these words.
    bot = slow_desk(5.5)
    caller = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    with observing(Metrics()) as metrics:
        async with running_bot(bot) as server:
            calls = keep_calls(server)
            result = await place_call(
                "127.0.0.1", server.port, [Silence(0.3), Say(caller), Silence(9.0), Hangup()]
            )
    stopped = speech_end(result)
    after = [
        (start - stopped, end - start) for start, end in result.bot_segments if start > stopped
    ]
    # The filler about a second after the VAD's stop (600 ms after the last word), while the
    # transcript was still being decoded; then, once it came, the answer.
    filler_at, filler_s = after[0]
    assert 1.0 < filler_at < 3.0 and filler_s < 1.5
    assert any(at > 5.5 for at, _ in after[1:])
    (call,) = calls
    assert call.history[-2:] == [
        {"role": "user", "content": ASKED},
        {"role": "assistant", "content": REPLY},
    ]
    assert turns.late == [call.call_id]
    assert turns.lost == []
    text = metrics.render().decode()
    assert 'voxpipe_late_replies_total{bot="slow-desk"} 1.0' in text
    assert 'voxpipe_turns_lost_total{bot="slow-desk",reason="stt"} 0.0' in text


async def test_a_prompt_reply_gets_no_filler(turns: Turns) -> None:
    bot = slow_desk(0.1)
    caller = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    async with running_bot(bot) as server:
        calls = keep_calls(server)
        result = await place_call(
            "127.0.0.1", server.port, [Silence(0.3), Say(caller), Silence(4.0), Hangup()]
        )
    stopped = speech_end(result)
    after = [start - stopped for start, _ in result.bot_segments if start > stopped]
    assert after and after[0] < 1.6  # the answer itself, before the filler was due
    assert calls[0].history[-1] == {"role": "assistant", "content": REPLY}
    assert turns.late == []


# --- model workers dying mid-utterance -------------------------------------------------------


async def test_a_model_worker_killed_while_decoding_is_replaced_and_the_call_goes_on(
    turns: Turns,
) -> None:
    bot = Bot.load(REPO / "configs" / "demo.yaml")
    caller = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    killed: list[int] = []

    async def kill_the_decoding_worker(pool: Any) -> None:
        # After the greeting (its sentences are synthesised once), the next model job is the
        # caller's utterance.
        await until(lambda: calls and state_of(calls[0]) is CallState.LISTENING, 30)
        async with asyncio.timeout(30):  # the worker busy at this moment: kept as it is found
            while not (busy := pool.pids(busy=True)):  # noqa: ASYNC110 - the pool signals nothing
                await asyncio.sleep(0.005)
        os.kill(busy[0], signal.SIGKILL)
        killed.append(busy[0])

    async with running_bot(bot, max_calls=2) as server:
        calls = keep_calls(server)
        pool = models_of(bot)
        restarts = pool.stats()["restarts"]
        killer = asyncio.create_task(kill_the_decoding_worker(pool))
        result = await place_call(
            "127.0.0.1",
            server.port,
            [WaitForBot(10), Say(caller), WaitForBot(20, quiet_s=1.5), Hangup()],
        )
        await killer
    assert killed and pool.stats()["restarts"] == restarts + 1
    assert calls[0].history[1:3] == [
        {"role": "user", "content": "Hello, I would like to check the status of my order."},
        {"role": "assistant", "content": "Sure. What is your order number?"},
    ]
    assert result.hung_up_by == "caller"
    assert turns.lost == []


async def test_workers_killed_mid_utterance_of_a_streaming_decoder_lose_no_words(
    turns: Turns,
) -> None:
    bot = Bot.from_yaml(
        """
name: sphinx-desk
transport: {audiosocket: {sample_rate: 16000, max_calls: 2}}
models: {workers: 2}
pipeline:
  - vad: {aggressiveness: 2, start_ms: 200, stop_ms: 600}
  - stt: {provider: pocketsphinx, grammar: "MENU"}
  - llm:
      provider: scripted
      intents: [{keywords: [operator], reply: "Of course."}]
  - tts: {provider: piper}
""".replace("MENU", MENU)
    )
    caller = load_wav(AUDIO / "caller_operator_16k.wav", 16000)
    async with running_bot(bot) as server:
        calls = keep_calls(server)
        pool = models_of(bot)
        call = asyncio.create_task(
            place_call(
                "127.0.0.1",
                server.port,
                [Silence(0.3), Say(caller), WaitForBot(30, quiet_s=1.0), Hangup()],
                rate=16000,
            )
        )
        # Halfway through the sentence, its decoder's worker (and the other) die. Timed from
        # the call's start on the bot (connecting can take a while on a busy machine).
        await until(lambda: len(calls) == 1, 30)
        await asyncio.sleep(0.3 + len(caller) / 2 / 16000 / 2)
        for pid in pool.pids():
            os.kill(pid, signal.SIGKILL)
        await call
    assert calls[0].history[-2:] == [
        {"role": "user", "content": "please transfer me to an operator"},
        {"role": "assistant", "content": "Of course."},
    ]
    assert turns.lost == []


async def test_a_decode_that_fails_twice_is_a_lost_turn_with_a_warning_and_the_filler(
    turns: Turns, caplog: pytest.LogCaptureFixture
) -> None:
    bot = slow_desk(30.0, tts="{provider: tone}", extra="\n      filler_after_ms: null")
    caller = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    async with running_bot(bot) as server:
        pool = models_of(bot)

        async def kill_twice() -> None:
            killed: set[int] = set()
            async with asyncio.timeout(40):
                while len(killed) < 2:
                    for pid in pool.pids(busy=True):
                        if pid not in killed:
                            os.kill(pid, signal.SIGKILL)
                            killed.add(pid)
                    await asyncio.sleep(0.01)

        killer = asyncio.create_task(kill_twice())
        with observing(Metrics()) as metrics:
            result = await place_call(
                "127.0.0.1", server.port, [Silence(0.3), Say(caller), Silence(5.0), Hangup()]
            )
        await killer
    assert turns.lost == ["stt"]
    assert 'voxpipe_turns_lost_total{bot="slow-desk",reason="stt"} 1.0' in metrics.render().decode()
    assert "the caller's words are lost" in caplog.text
    # The on_error filler, in tones: "Sorry, I'm having a technical problem." is six words.
    stopped = speech_end(result)
    assert [start for start, _ in result.bot_segments if start > stopped]


# --- admission -------------------------------------------------------------------------------


async def test_a_call_beyond_max_calls_is_refused_cleanly_and_counted_while_two_go_on() -> None:
    bot = Bot.load(REPO / "configs" / "echo.yaml")
    metrics = Metrics()
    tracker = CallTracker()
    state = ServiceState([bot.name], tracker)
    tone = load_wav(AUDIO / "caller_yes_8k.wav", 8000)
    with observing(metrics), observing(tracker):
        async with running_bot(bot, max_calls=2) as server:
            state.capacity = server.load
            assert (await state.health())[0] == 200
            script = [Silence(1.5), Say(tone), Silence(1.0), Hangup()]
            two = [
                asyncio.create_task(place_call("127.0.0.1", server.port, script)) for _ in range(2)
            ]
            await asyncio.sleep(1.0)
            status, body = await state.health()
            assert (status, body["status"]) == (503, "full")
            assert body["capacity"]["max_calls"] == 2 and body["capacity"]["active_calls"] == 2
            # The third caller, as Asterisk places it: the UUID, then audio.
            reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
            writer.write(encode(Kind.UUID, uuid.uuid4().bytes) + encode(Kind.AUDIO_8K, tone[:320]))
            await writer.drain()
            async with asyncio.timeout(1.0):
                ended = await reader.read(100)  # the end of the stream: no reset, no audio
            assert ended == b""
            writer.close()
            results = await asyncio.gather(*two)
            await asyncio.sleep(0.2)
            assert (await state.health())[0] == 200
    text = metrics.render().decode()
    assert 'voxpipe_calls_refused_total{reason="max_calls"} 1.0' in text
    for result in results:
        # Both went on after the refusal: each heard its whole "yes" echoed, and hung up itself.
        assert result.hung_up_by == "caller"
        assert any(start > 1.0 for start, _ in result.bot_segments)


async def test_max_calls_auto_is_measured_from_the_models_at_start() -> None:
    delay_s = 0.3
    bot = slow_desk(delay_s, tts="{provider: tone}")
    settings = bot.config.transport.audiosocket.model_copy(update={"max_calls": "auto"})
    server = AudioSocketServer(bot, settings.model_copy(update={"listen": "127.0.0.1:0"}))
    await bot.prepare()
    await server.start()
    try:
        capacity = server.capacity
        assert capacity is not None and capacity.stt == "slow"
        assert delay_s <= capacity.stt_s < delay_s + 0.2
        # Two workers; a turn may take 2.0 s, less the VAD's 0.6 s and 0.1 s of transport.
        assert server.max_calls == 2 * math.floor(1.3 / capacity.stt_s) == capacity.max_calls
        assert "max_calls auto" in capacity.describe()
    finally:
        await server.stop()


# --- a burst of callers -----------------------------------------------------------------------


async def test_a_burst_of_demo_callers_loses_no_turn(turns: Turns) -> None:
    bot = Bot.load(REPO / "configs" / "demo.yaml")
    status = load_wav(AUDIO / "caller_order_status_8k.wav", 8000)
    number = load_wav(AUDIO / "caller_order_number_8k.wav", 8000)
    script = [
        WaitForBot(15),
        Say(status),
        WaitForBot(20, quiet_s=1.5),
        Say(number),
        WaitForBot(20, quiet_s=1.5),
        Hangup(),
    ]
    async with running_bot(bot, max_calls=5) as server:
        calls = keep_calls(server)
        results = await asyncio.gather(
            *(place_call("127.0.0.1", server.port, script) for _ in range(5))
        )
    assert turns.lost == [] and turns.rejected == []
    assert all(result.hung_up_by == "caller" for result in results)
    for call in calls:
        said = [(m["role"], m["content"]) for m in call.history]
        assert [role for role, _ in said] == ["assistant", "user", "assistant", "user", "assistant"]
        assert said[1][1] == "Hello, I would like to check the status of my order."
        assert said[2][1] == "Sure. What is your order number?"
        assert "order number is" in said[3][1]
        assert said[4][1].startswith("Thank you. Order")
