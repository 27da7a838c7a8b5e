"""Keys the caller presses reach the conversation: gathered by a ``dtmf`` step (terminator,
max_digits, timeout), matched by scripted intents, seen by an LLM provider as ``[pressed 1]``,
interrupting the bot, and recorded as ``dtmf`` turns in the call records."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic_sse import FakeHTTPServer
from fakes.llm_chain import converse
from fakes.openai_sse import openai_reply
from helpers import observing

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import ConfigError, parse_bot
from voxpipe.frames import DTMFFrame
from voxpipe.pipelines.call import Call
from voxpipe.records.service import records_of
from voxpipe.transports.audiosocket.caller import (
    Dtmf,
    Silence,
    WaitForBot,
    WaitForHangup,
    place_call,
)

KEYS_DESK = """
name: keys
greeting: "Welcome."
pipeline:
{dtmf}
  - llm:
      provider: scripted
      intents:
        - {{dtmf: "0", reply: "Operator."}}
        - {{regex: '(?P<n>\\d{{3,}})', reply: "Number {{n}}."}}
      fallback: "Other."
"""


def users(call: Call) -> list[str]:
    return [m["content"] for m in call.history if m["role"] == "user"]


async def press(c: Any, keys: str, gap_s: float = 0.01) -> None:
    for key in keys:
        await c.task.push_frame(DTMFFrame(key))
        await asyncio.sleep(gap_s)


async def test_without_a_dtmf_step_each_key_is_an_input_and_an_intent_can_match_it() -> None:
    async with await converse(KEYS_DESK.format(dtmf="")) as c:
        await c.replies(1)
        await press(c, "0", 0.0)
        said = await c.replies(2)
        await press(c, "5", 0.0)
        said = await c.replies(3)
    assert said == ["Welcome.", "Operator.", "Other."]
    assert users(c.call) == ["[pressed 0]", "[pressed 5]"]


async def test_keys_are_gathered_until_the_terminator_which_is_left_out() -> None:
    step = '  - dtmf: {terminator: "#", timeout_ms: 10000}'
    async with await converse(KEYS_DESK.format(dtmf=step)) as c:
        await c.replies(1)
        await press(c, "12345#")
        said = await c.replies(2)
    assert said[1] == "Number 12345."
    assert users(c.call) == ["[pressed 12345]"]


async def test_keys_are_gathered_up_to_max_digits() -> None:
    step = "  - dtmf: {max_digits: 3, terminator: null, timeout_ms: 10000}"
    async with await converse(KEYS_DESK.format(dtmf=step)) as c:
        await c.replies(1)
        await press(c, "123456")
        said = await c.replies(3)
    assert said[1:] == ["Number 123.", "Number 456."]
    assert users(c.call) == ["[pressed 123]", "[pressed 456]"]


async def test_keys_are_delivered_after_the_timeout_and_the_terminator_alone_is_an_input() -> None:
    step = '  - dtmf: {terminator: "#", timeout_ms: 300}'
    async with await converse(KEYS_DESK.format(dtmf=step)) as c:
        await c.replies(1)
        await press(c, "42")
        await asyncio.sleep(0.1)
        assert users(c.call) == [], "still gathering: the timeout is 300 ms after the last key"
        said = await c.replies(2, timeout_s=5)
        await press(c, "#")
        said = await c.replies(3)
    assert said[1:] == ["Other.", "Other."]
    assert users(c.call) == ["[pressed 42]", "[pressed #]"]


async def test_a_key_of_at_once_pressed_first_is_answered_without_waiting_the_timeout() -> None:
    # The timeout is a minute: an answer within seconds can only come from at_once.
    step = '  - dtmf: {terminator: "#", timeout_ms: 60000, at_once: "0*"}'
    async with await converse(KEYS_DESK.format(dtmf=step)) as c:
        await c.replies(1)
        await press(c, "0")
        said = await c.replies(2, timeout_s=15)
        assert users(c.call) == ["[pressed 0]"]
        # After other keys, a key of at_once is gathered as usual (an order number with a 0).
        await press(c, "1230#")
        said = await c.replies(3, timeout_s=15)
        await press(c, "*")
        said = await c.replies(4, timeout_s=15)
    assert said[1:] == ["Operator.", "Number 1230.", "Other."]
    assert users(c.call) == ["[pressed 0]", "[pressed 1230]", "[pressed *]"]


async def test_without_at_once_a_single_key_waits_for_the_timeout() -> None:
    step = '  - dtmf: {terminator: "#", timeout_ms: 60000}'
    async with await converse(KEYS_DESK.format(dtmf=step)) as c:
        await c.replies(1)
        await press(c, "0")
        await asyncio.sleep(1.0)
        assert users(c.call) == [], "still gathering: nothing says 0 is a whole input"
        await press(c, "#")
        said = await c.replies(2, timeout_s=15)
    assert said[1] == "Operator."
    assert users(c.call) == ["[pressed 0]"]


def test_bad_dtmf_settings_are_reported_with_file_line_and_column() -> None:
    text = KEYS_DESK.format(dtmf='  - dtmf: {terminator: "##", max_digits: 0}')
    text = text.replace('{dtmf: "0", reply', '{dtmf: "0x", reply')
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "keys.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert any(p.startswith("keys.yaml:5:") and "terminator is one key" in p for p in problems), (
        problems
    )
    assert any("max_digits" in p and "greater than or equal to 1" in p for p in problems)
    assert any("intents[0]" in p and "`dtmf` is keys" in p for p in problems), problems
    text = KEYS_DESK.format(dtmf='  - dtmf: {at_once: "0x?"}')
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "keys.yaml")
    (problem,) = [str(p) for p in caught.value.problems]
    assert problem.startswith("keys.yaml:5:") and "at_once" in problem, problem
    assert "at_once lists keys 0-9, *, # or A-D (got '?X')" in problem, problem


async def test_an_llm_provider_sees_the_keys_as_the_callers_input() -> None:
    async with FakeHTTPServer() as api:
        api.add(openai_reply("Order 123 ships tomorrow."))
        text = f"""
name: desk
greeting: "Enter your order number, then the pound key."
pipeline:
  - dtmf: {{terminator: "#"}}
  - llm:
      provider: openai_compatible
      model: llama3.2
      base_url: "{api.url}/v1"
      system: "You are the order desk of ACME."
"""
        async with await converse(text) as c:
            await c.replies(1)
            await press(c, "123#")
            said = await c.replies(2)
    assert said[1] == "Order 123 ships tomorrow."
    assert api.requests[0].json["messages"] == [
        {"role": "system", "content": "You are the order desk of ACME."},
        {"role": "assistant", "content": "Enter your order number, then the pound key."},
        {"role": "user", "content": "[pressed 123]"},
    ]


# --- over AudioSocket ---------------------------------------------------------------------------

LONG = " ".join(["This is a long greeting that goes on and on for a good while."] * 3)


class BargeIns(events.Observer):
    def __init__(self) -> None:
        self.count = 0
        self.turns: list[tuple[str, str]] = []

    def barge_in(self, call: Call) -> None:
        self.count += 1

    def turn(self, call: Call, turn: events.Turn) -> None:
        self.turns.append((turn.speaker, turn.text))


async def test_a_key_pressed_over_the_bot_interrupts_it_and_is_still_answered() -> None:
    bot = Bot.from_yaml(
        f"""
name: keys
greeting: "{LONG}"
transport: {{audiosocket: {{sample_rate: 8000, keepalive_s: 0.5}}}}
pipeline:
  - dtmf: {{terminator: "#"}}
  - barge_in: {{protect_greeting: false}}
  - llm: {{provider: scripted, intents: [{{dtmf: "7", reply: "Seven."}}], fallback: "Other."}}
  - tts: {{provider: tone, word_ms: 150}}
"""
    )
    calls: list[Call] = []

    async def keep(call: Call) -> None:
        calls.append(call)

    with observing(BargeIns()) as seen:
        async with running_bot(bot) as server:
            server.on_call_start.append(keep)
            result = await place_call(
                "127.0.0.1",
                server.port,
                [Silence(1.0), Dtmf("7#"), WaitForBot(10, quiet_s=0.6)],
            )
    assert seen.count == 1
    greeting_words = len(LONG.split())
    assert result.bot_audio_s() < greeting_words * 0.15, "the greeting was cut short"
    (call,) = calls
    assert users(call) == ["[pressed 7]"]
    assert call.history[-1] == {"role": "assistant", "content": "Seven."}
    assert ("dtmf", "7") in seen.turns


async def test_keys_are_dtmf_turns_in_the_call_records(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"
    bot = Bot.from_yaml(
        f"""
name: keys
greeting: "Enter your order number."
transport: {{audiosocket: {{sample_rate: 8000, keepalive_s: 0.5}}}}
pipeline:
  - dtmf: {{terminator: "#"}}
  - llm:
      provider: scripted
      tools: [hangup]
      intents:
        - {{regex: '(?P<n>\\d{{3,}})', reply: "Order {{n}} ships tomorrow."}}
        - {{dtmf: "9", tool: {{name: hangup}}}}
  - tts: {{provider: tone, word_ms: 40}}
tools: {{hangup: {{goodbye: "Goodbye."}}}}
call_records: {{url: "{url}", migrate: true, flush_interval_s: 0.05}}
"""
    )
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1",
            server.port,
            [
                WaitForBot(5, quiet_s=0.3),
                Dtmf("555#"),
                WaitForBot(5, quiet_s=0.3),
                Dtmf("9#"),
                WaitForHangup(10),
            ],
        )
        assert result.hung_up_by == "bot"
        records = records_of(bot)
        assert records is not None
        record: dict[str, Any] | None = None
        async with asyncio.timeout(15):
            while record is None or record.get("outcome") is None:
                await asyncio.sleep(0.1)
                record = await records.get_call(result.call_id)
    await bot.close()
    turns = [(t["speaker"], t["text"]) for t in record["turns"]]
    assert turns == [
        ("bot", "Enter your order number."),
        ("dtmf", "555"),
        ("bot", "Order 555 ships tomorrow."),
        ("dtmf", "9"),
        ("bot", "Goodbye."),
    ]
    starts = [t["started_at"] for t in record["turns"]]
    assert starts == sorted(starts)
