"""openai_compatible through the official SDK against a local chat.completion.chunk SSE server."""

from __future__ import annotations

import pytest
from fakes.anthropic_sse import FakeHTTPServer, Reply
from fakes.llm_chain import converse
from fakes.openai_sse import openai_error, openai_reply
from helpers import LOOKUP_TOOL

from voxpipe.bots.bot import Bot
from voxpipe.frames import HangupFrame, LLMTextFrame, ToolCallFrame
from voxpipe.pipelines.settings import ProviderError


def bot_yaml(base_url: str, extra: str = "", tools: str = "") -> str:
    return f"""
name: desk
greeting: "ACME order desk, how can I help?"
pipeline:
  - llm:
      provider: openai_compatible
      model: llama3.2
      base_url: "{base_url}/v1"
      system: "You are the order desk of ACME."
      backoff_s: 0.01
{extra}
{tools}
"""


async def test_streams_text_after_the_greeting() -> None:
    async with FakeHTTPServer() as api:
        api.add(openai_reply("It ", "ships ", "tomorrow."))
        async with await converse(bot_yaml(api.url)) as c:
            await c.say("where is my order")
            said = await c.replies(2)
    assert said == ["ACME order desk, how can I help?", "It ships tomorrow."]
    assert [f.text for f in c.listener.of(LLMTextFrame)] == ["It ", "ships ", "tomorrow."]
    request = api.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.json["stream"] is True and request.json["model"] == "llama3.2"
    assert request.json["messages"] == [
        {"role": "system", "content": "You are the order desk of ACME."},
        {"role": "assistant", "content": "ACME order desk, how can I help?"},
        {"role": "user", "content": "where is my order"},
    ]


async def test_tool_call_deltas_round_trip_through_an_http_tool() -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        orders.add(Reply(body={"status": "ships tomorrow"}))
        api.add(
            openai_reply(tool=("call_7", "lookup_order", ['{"order_id"', ': "A12345"}'])),
            openai_reply("Order A12345 ships tomorrow."),
        )
        async with await converse(bot_yaml(api.url, tools=LOOKUP_TOOL.format(url=orders.url))) as c:
            await c.say("order A12345")
            said = await c.replies(2)
    assert said[1] == "Order A12345 ships tomorrow."
    assert orders.requests[0].path == "/orders/A12345"
    first, second = (r.json for r in api.requests)
    assert {t["function"]["name"] for t in first["tools"]} == {"lookup_order", "hangup"}
    assert second["messages"][-2] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_7",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id": "A12345"}'},
            }
        ],
    }
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_7"
    assert "ships tomorrow" in second["messages"][-1]["content"]
    assert c.listener.of(ToolCallFrame)[0].name == "lookup_order"


async def test_the_model_can_hang_up() -> None:
    async with FakeHTTPServer() as api:
        api.add(openai_reply(tool=("call_1", "hangup", ["{}"])))
        tools = "      tools: [hangup]\ntools:\n  hangup: {goodbye: 'Bye from ACME.'}"
        async with await converse(bot_yaml(api.url, tools=tools)) as c:
            await c.say("that's all, thanks")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken()[-1] == "Bye from ACME."
    assert len(api.requests) == 1


async def test_server_error_is_retried_then_the_filler_is_spoken() -> None:
    extra = "      retries: 1"
    async with FakeHTTPServer() as api:
        api.add(openai_error(500), openai_error(503), openai_error(500), openai_reply("Hello."))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            said = await c.replies(3)
    assert said[1:] == ["Sorry, I'm having a technical problem.", "Hello."]
    assert len(api.requests) == 4


async def test_a_silent_server_times_out() -> None:
    extra = """      timeout_s: 0.3
      retries: 0
      on_error: {then: hangup}"""
    async with FakeHTTPServer() as api:
        api.add(Reply(body={}, delay_s=5))
        async with await converse(bot_yaml(api.url, extra)) as c:
            await c.say("hello")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken()[1:] == [
        "Sorry, I'm having a technical problem.",
        "Please call again later. Goodbye.",
    ]


async def test_prepare_fails_fast_with_an_empty_api_key() -> None:
    bot = Bot.from_yaml(bot_yaml("http://127.0.0.1:9", '      api_key: ""'))
    with pytest.raises(ProviderError, match="api_key is empty"):
        await bot.prepare()


async def test_the_next_turn_still_shows_the_tool_call_and_its_result() -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        orders.add(Reply(body={"status": "ships tomorrow"}))
        api.add(
            openai_reply(tool=("call_9", "lookup_order", ['{"order_id": "A12345"}'])),
            openai_reply("Order A12345 ships tomorrow."),
            openai_reply("Tomorrow, as I said."),
        )
        async with await converse(bot_yaml(api.url, tools=LOOKUP_TOOL.format(url=orders.url))) as c:
            await c.say("order A12345")
            await c.replies(2)
            await c.say("when again?")
            said = await c.replies(3)
    assert said[-1] == "Tomorrow, as I said."
    messages = api.requests[2].json["messages"]
    assert messages[2] == {"role": "user", "content": "order A12345"}
    assert messages[3] == {
        "role": "assistant",
        "content": None,
        "tool_calls": [
            {
                "id": "call_9",
                "type": "function",
                "function": {"name": "lookup_order", "arguments": '{"order_id": "A12345"}'},
            }
        ],
    }
    assert messages[4]["role"] == "tool" and messages[4]["tool_call_id"] == "call_9"
    assert "ships tomorrow" in messages[4]["content"]
    assert messages[5:] == [
        {"role": "assistant", "content": "Order A12345 ships tomorrow."},
        {"role": "user", "content": "when again?"},
    ]
