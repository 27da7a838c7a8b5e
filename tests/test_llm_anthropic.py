"""Anthropic through the official SDK against a local server speaking the real SSE stream."""

from __future__ import annotations

import asyncio

import pytest
from fakes.anthropic_sse import FakeHTTPServer, Reply, anthropic_error, anthropic_reply
from fakes.llm_chain import converse
from helpers import LOOKUP_TOOL, TTFB, observing

from voxpipe.bots.bot import Bot
from voxpipe.frames import HangupFrame, LLMTextFrame, ToolCallFrame
from voxpipe.pipelines.settings import ProviderError


def bot_yaml(base_url: str, extra: str = "", tools: str = "") -> str:
    return f"""
name: desk
pipeline:
  - llm:
      provider: anthropic
      model: claude-test
      system: "You are the order desk of ACME."
      api_key: test-key
      base_url: "{base_url}"
      temperature: 0.2
      backoff_s: 0.01
{extra}
{tools}
"""


async def test_streams_text_chunks_to_the_tts() -> None:
    ttfb = TTFB()
    with observing(ttfb):
        async with FakeHTTPServer() as api:
            api.add(anthropic_reply("Your order ", "ships tomorrow. ", "Anything else?"))
            async with await converse(bot_yaml(api.url)) as c:
                await c.say("where is my order")
                said = await c.replies(1)
    assert said == ["Your order ships tomorrow. Anything else?"]
    assert [f.text for f in c.listener.of(LLMTextFrame)] == [
        "Your order ",
        "ships tomorrow. ",
        "Anything else?",
    ]
    body = api.requests[0].json
    assert api.requests[0].path == "/v1/messages"
    headers = api.requests[0].headers
    assert "test-key" in (headers.get("x-api-key"), headers.get("authorization", "")[7:])
    assert body["model"] == "claude-test" and body["stream"] is True
    assert body["system"] == "You are the order desk of ACME."
    assert body["temperature"] == 0.2
    assert body["messages"] == [{"role": "user", "content": "where is my order"}]
    assert c.call.history[-1] == {
        "role": "assistant",
        "content": "Your order ships tomorrow. Anything else?",
    }
    assert [(k, p) for k, p, _ in ttfb.seen] == [("llm", "anthropic")]


async def test_tool_use_round_trip_through_an_http_tool() -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        orders.add(Reply(body={"order": "A12345", "status": "ships tomorrow"}))
        api.add(
            anthropic_reply(
                "Let me check.",
                tool=("toolu_01", "lookup_order", ['{"order_', 'id": "A12345"}']),
            ),
            anthropic_reply("Order A12345 ships tomorrow."),
        )
        yaml_text = bot_yaml(api.url, tools=LOOKUP_TOOL.format(url=orders.url))
        async with await converse(yaml_text) as c:
            await c.say("order A12345")
            said = await c.replies(2)
    assert said == ["Let me check.", "Order A12345 ships tomorrow."]
    assert orders.requests[0].path == "/orders/A12345"
    first, second = (r.json for r in api.requests)
    assert {t["name"] for t in first["tools"]} == {"lookup_order", "hangup"}
    lookup = next(t for t in first["tools"] if t["name"] == "lookup_order")
    assert lookup["input_schema"]["properties"] == {"order_id": {"type": "string"}}
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": [
            {"type": "text", "text": "Let me check."},
            {
                "type": "tool_use",
                "id": "toolu_01",
                "name": "lookup_order",
                "input": {"order_id": "A12345"},
            },
        ],
    }
    result = second["messages"][-1]["content"][0]
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_01"
    assert "ships tomorrow" in result["content"]
    (tool_frame,) = c.listener.of(ToolCallFrame)
    assert tool_frame.arguments == {"order_id": "A12345"}
    assert c.call.history[-1]["content"] == "Let me check. Order A12345 ships tomorrow."


async def test_a_tool_error_goes_back_to_the_model() -> None:
    async with FakeHTTPServer() as api:
        api.add(
            anthropic_reply(tool=("toolu_02", "lookup_order", ['{"order_id": 42}'])),
            anthropic_reply("I could not find that order."),
        )
        yaml_text = bot_yaml(api.url, tools=LOOKUP_TOOL.format(url="http://127.0.0.1:9"))
        async with await converse(yaml_text) as c:
            await c.say("order forty two")
            said = await c.replies(1)
    assert said == ["I could not find that order."]
    result = api.requests[1].json["messages"][-1]["content"][0]
    assert result["content"] == ("error: invalid arguments: order_id: expected string, got int")


async def test_overloaded_is_retried_with_backoff() -> None:
    async with FakeHTTPServer() as api:
        api.add(anthropic_error(529), anthropic_error(500, "api_error"), anthropic_reply("Hi."))
        async with await converse(bot_yaml(api.url)) as c:
            await c.say("hello")
            said = await c.replies(1)
    assert said == ["Hi."]
    assert len(api.requests) == 3


async def test_outage_speaks_the_filler_then_retries_the_turn() -> None:
    async with FakeHTTPServer() as api:
        api.add(*[anthropic_error(529)] * 3, anthropic_reply("Back again. How can I help?"))
        async with await converse(bot_yaml(api.url)) as c:
            await c.say("hello")
            said = await c.replies(2)
    assert said == ["Sorry, I'm having a technical problem.", "Back again. How can I help?"]
    assert c.call.history == [
        {"role": "user", "content": "hello"},
        {"role": "assistant", "content": "Back again. How can I help?"},
    ]


async def test_outage_with_hangup_says_goodbye_and_hangs_up() -> None:
    extra = """      retries: 0
      on_error: {say: "One moment, technical trouble.", then: hangup, goodbye: "Goodbye."}"""
    async with FakeHTTPServer() as api:
        api.add(anthropic_error(500, "api_error"))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken() == ["One moment, technical trouble.", "Goodbye."]
    assert len(api.requests) == 1


async def test_a_stalled_stream_times_out_and_is_retried() -> None:
    extra = """      timeout_s: 0.3
      retries: 1"""
    async with FakeHTTPServer() as api:
        api.add(anthropic_reply("never", stall_after=2), anthropic_reply("Sorry for the wait."))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            said = await c.replies(1)
    assert said == ["Sorry for the wait."]
    assert len(api.requests) == 2


async def test_a_stream_that_stalls_mid_reply_is_not_repeated() -> None:
    extra = """      timeout_s: 0.3
      on_error: {then: hangup}"""
    async with FakeHTTPServer() as api:
        api.add(anthropic_reply("Your order ", "ships", stall_after=5))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken() == [
        "Your order ships",
        "Sorry, I'm having a technical problem.",
        "Please call again later. Goodbye.",
    ]
    assert len(api.requests) == 1


async def test_prepare_fails_fast_without_an_api_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    bot = Bot.from_yaml(bot_yaml("http://127.0.0.1:9").replace("      api_key: test-key\n", ""))
    with pytest.raises(ProviderError, match="no API key"):
        await bot.prepare()


async def test_an_interruption_cancels_the_reply_at_once() -> None:
    greeting = 'greeting: "ACME, hello."\n'
    async with FakeHTTPServer() as api:
        api.add(anthropic_reply("Your order ", "ships", "tomorrow.", stall_after=5))
        async with await converse(greeting + bot_yaml(api.url)) as c:
            await c.replies(1)
            await c.say("where is my order")
            await c.listener.wait_for(lambda: len(c.listener.of(LLMTextFrame)) == 2)
            c.task.interrupt()
            await asyncio.sleep(0.05)
            assert c.call.history == [
                {"role": "assistant", "content": "ACME, hello."},
                {"role": "user", "content": "where is my order"},
            ]
            api.add(anthropic_reply("Yes?"))
            await c.say("sorry, go on")
            said = await c.replies(2)
    assert said[-1] == "Yes?"
    assert api.requests[1].json["messages"] == [
        {"role": "user", "content": "(The call is connected.)"},
        {"role": "assistant", "content": "ACME, hello."},
        {"role": "user", "content": "where is my order\nsorry, go on"},
    ]


async def test_an_error_event_inside_the_stream_is_retried() -> None:
    overloaded = Reply(
        events=[
            anthropic_reply().events[0],
            ("error", {"type": "error", "error": {"type": "overloaded_error", "message": "x"}}),
        ]
    )
    async with FakeHTTPServer() as api:
        api.add(overloaded, anthropic_reply("Hello again."))
        async with await converse(bot_yaml(api.url)) as c:
            await c.say("hello")
            said = await c.replies(1)
    assert said == ["Hello again."]
    assert len(api.requests) == 2


async def test_the_next_turn_still_shows_the_tool_call_and_its_result() -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        orders.add(Reply(body={"order": "A12345", "status": "ships tomorrow"}))
        api.add(
            anthropic_reply(
                "Let me check.",
                tool=("toolu_03", "lookup_order", ['{"order_id": "A12345"}']),
            ),
            anthropic_reply("Order A12345 ships tomorrow."),
            anthropic_reply("It ships tomorrow, as I said."),
        )
        yaml_text = bot_yaml(api.url, tools=LOOKUP_TOOL.format(url=orders.url))
        async with await converse(yaml_text) as c:
            await c.say("order A12345")
            await c.replies(2)
            await c.say("when again?")
            said = await c.replies(3)
    assert said[-1] == "It ships tomorrow, as I said."
    assert len(orders.requests) == 1
    messages = api.requests[2].json["messages"]
    assert messages[0] == {"role": "user", "content": "order A12345"}
    assert messages[1] == {
        "role": "assistant",
        "content": [
            {
                "type": "tool_use",
                "id": "toolu_03",
                "name": "lookup_order",
                "input": {"order_id": "A12345"},
            }
        ],
    }
    (result,) = messages[2]["content"]
    assert messages[2]["role"] == "user"
    assert result["type"] == "tool_result" and result["tool_use_id"] == "toolu_03"
    assert "ships tomorrow" in result["content"]
    assert messages[3:] == [
        {"role": "assistant", "content": "Let me check. Order A12345 ships tomorrow."},
        {"role": "user", "content": "when again?"},
    ]
    tool_entry = c.call.history[1]
    assert tool_entry["role"] == "tool"
    assert tool_entry["calls"][0]["name"] == "lookup_order"


async def test_a_turn_that_fails_twice_gets_one_filler_then_the_goodbye() -> None:
    extra = "      retries: 0"
    async with FakeHTTPServer() as api:
        api.add(anthropic_error(529), anthropic_error(529))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken() == [
        "Sorry, I'm having a technical problem.",
        "Please call again later. Goodbye.",
    ]
    assert len(api.requests) == 2
