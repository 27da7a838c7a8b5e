"""Pipecat's LLM services as a bot's LLM (``pipecat: {role: llm}``), through their official SDKs
against the local SSE fakes: Pipecat's OpenAI service against the chat.completion.chunk fake,
its Anthropic service against the Messages API fake. voxpipe keeps the turns, the history, the
tools (declared in the bot file, run by voxpipe's toolbox) and the failure fillers."""

from __future__ import annotations

import asyncio

import pytest
from fakes.anthropic_sse import FakeHTTPServer, Reply, anthropic_reply
from fakes.llm_chain import converse
from fakes.openai_sse import openai_error, openai_reply
from helpers import LOOKUP_TOOL

from voxpipe.bots.bot import Bot
from voxpipe.frames import HangupFrame, LLMTextFrame, ToolCallFrame


def openai_bot(base_url: str, extra: str = "", tools: str = "") -> str:
    return f"""
name: desk
greeting: "ACME order desk, how can I help?"
pipeline:
  - pipecat:
      class: pipecat.services.openai.llm.OpenAILLMService
      args:
        api_key: sk-test
        base_url: "{base_url}/v1"
        settings: {{model: gpt-4o-mini}}
      system: "You are the order desk of ACME."
      backoff_s: 0.01
{extra}
{tools}
"""


def anthropic_bot(tools: str = "") -> str:
    # AnthropicLLMService takes no base URL: the SDK reads ANTHROPIC_BASE_URL (see the test).
    return f"""
name: desk
greeting: "ACME order desk, how can I help?"
pipeline:
  - pipecat:
      class: pipecat.services.anthropic.llm.AnthropicLLMService
      args: {{api_key: sk-ant-test, settings: {{model: claude-fake}}}}
      system: "You are the order desk of ACME."
      backoff_s: 0.01
{tools}
"""


async def test_openai_service_streams_the_reply_after_the_greeting() -> None:
    async with FakeHTTPServer() as api:
        api.add(openai_reply("It ", "ships ", "tomorrow."))
        async with await converse(openai_bot(api.url)) as c:
            await c.say("where is my order")
            said = await c.replies(2)
    assert said == ["ACME order desk, how can I help?", "It ships tomorrow."]
    assert [f.text for f in c.listener.of(LLMTextFrame)] == ["It ", "ships ", "tomorrow."]
    request = api.requests[0]
    assert request.path == "/v1/chat/completions"
    assert request.json["model"] == "gpt-4o-mini" and request.json["stream"] is True
    assert request.json["messages"] == [
        {"role": "system", "content": "You are the order desk of ACME."},
        {"role": "assistant", "content": "ACME order desk, how can I help?"},
        {"role": "user", "content": "where is my order"},
    ]
    assert c.call.history[-1] == {"role": "assistant", "content": "It ships tomorrow."}


async def test_openai_tool_calls_reach_voxpipes_toolbox_and_the_result_goes_back() -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        orders.add(Reply(body={"status": "ships tomorrow"}))
        api.add(
            openai_reply(tool=("call_7", "lookup_order", ['{"order_id"', ': "A12345"}'])),
            openai_reply("Order A12345 ships tomorrow."),
        )
        tools = LOOKUP_TOOL.format(url=orders.url)
        async with await converse(openai_bot(api.url, tools=tools)) as c:
            await c.say("order A12345")
            said = await c.replies(2)
    assert said[1] == "Order A12345 ships tomorrow."
    assert orders.requests[0].path == "/orders/A12345"
    first, second = (r.json for r in api.requests)
    schemas = {t["function"]["name"]: t["function"] for t in first["tools"]}
    assert set(schemas) == {"lookup_order", "hangup"}
    assert schemas["lookup_order"]["description"] == "Look up an order by its number."
    assert schemas["lookup_order"]["parameters"]["properties"] == {"order_id": {"type": "string"}}
    assert second["messages"][-2]["tool_calls"][0]["id"] == "call_7"
    assert second["messages"][-2]["tool_calls"][0]["function"]["name"] == "lookup_order"
    assert second["messages"][-1]["role"] == "tool"
    assert second["messages"][-1]["tool_call_id"] == "call_7"
    assert "ships tomorrow" in second["messages"][-1]["content"]
    (tool_call,) = c.listener.of(ToolCallFrame)
    assert tool_call.name == "lookup_order" and tool_call.arguments == {"order_id": "A12345"}


async def test_the_hangup_tool_called_by_a_pipecat_service_ends_the_call() -> None:
    async with FakeHTTPServer() as api:
        api.add(openai_reply("Goodbye.", tool=("call_1", "hangup", ["{}"])))
        tools = "      tools: [hangup]\n"
        async with await converse(openai_bot(api.url, extra=tools)) as c:
            await c.say("that's all, bye")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken()[1] == "Goodbye."


async def test_a_failing_service_makes_the_bot_say_its_filler_and_hang_up() -> None:
    async with FakeHTTPServer() as api:
        api.add(*[openai_error(400) for _ in range(3)])
        extra = (
            "      retries: 1\n"
            '      on_error: {say: "Sorry, I have a problem.", then: hangup, goodbye: "Bye now."}\n'
        )
        async with await converse(openai_bot(api.url, extra=extra)) as c:
            await c.say("where is my order")
            await c.listener.wait_for(lambda: bool(c.listener.of(HangupFrame)))
    assert c.listener.spoken()[1:] == ["Sorry, I have a problem.", "Bye now."]
    assert len(api.requests) == 2  # the request and its one retry


async def test_an_interruption_cancels_the_request_in_flight_and_the_next_turn_is_answered() -> (
    None
):
    async with FakeHTTPServer() as api:
        api.add(openai_reply("This reply ", "never ", "ends", stall_after=2))
        api.add(openai_reply("Sure."))
        async with await converse(openai_bot(api.url), play_fraction=1.0) as c:
            await c.say("tell me a story")
            await c.listener.wait_for(lambda: bool(c.listener.of(LLMTextFrame)))
            c.task.interrupt()
            await asyncio.sleep(0.05)
            await c.say("never mind, where is my order")
            said = await c.replies(2)
            await c.listener.wait_for(lambda: "Sure." in c.listener.spoken())
    assert c.listener.spoken()[-1] == "Sure."
    assert [f.text for f in c.listener.of(LLMTextFrame)] == ["This reply ", "Sure."]
    assert said[0] == "ACME order desk, how can I help?"
    last = api.requests[-1].json["messages"]
    assert last[-1] == {"role": "user", "content": "never mind, where is my order"}


async def test_anthropic_service_streams_text_and_round_trips_a_tool(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with FakeHTTPServer() as orders, FakeHTTPServer() as api:
        monkeypatch.setenv("ANTHROPIC_BASE_URL", api.url)
        orders.add(Reply(body={"status": "ships tomorrow"}))
        api.add(
            anthropic_reply(
                "Let me check.", tool=("toolu_1", "lookup_order", ['{"order_id": ', '"A1"}'])
            ),
            anthropic_reply("Order A1 ships tomorrow."),
        )
        tools = LOOKUP_TOOL.format(url=orders.url)
        async with await converse(anthropic_bot(tools=tools)) as c:
            await c.say("where is order A1")
            said = await c.replies(3)
            await c.listener.wait_for(lambda: "Order A1 ships tomorrow." in c.listener.spoken())
    assert said[1] == "Let me check."
    assert c.listener.spoken()[-1] == "Order A1 ships tomorrow."
    first, second = (r.json for r in api.requests)
    assert api.requests[0].path == "/v1/messages"
    assert first["model"] == "claude-fake"
    assert "You are the order desk of ACME." in str(first["system"])
    assert {t["name"] for t in first["tools"]} == {"lookup_order", "hangup"}
    assert first["messages"][-1]["role"] == "user"
    assert "where is order A1" in str(first["messages"][-1]["content"])
    tool_use = second["messages"][-2]["content"]
    assert any(b.get("type") == "tool_use" and b.get("id") == "toolu_1" for b in tool_use)
    results = second["messages"][-1]["content"]
    assert any(
        b.get("type") == "tool_result" and b.get("tool_use_id") == "toolu_1" for b in results
    )
    assert "ships tomorrow" in str(results)


def test_llm_keys_are_refused_on_other_roles_and_arguments_on_the_llm_role_are_checked() -> None:
    from voxpipe.bots.config import ConfigError

    text = """name: x
pipeline:
  - pipecat:
      class: pipecat.services.openai.llm.OpenAILLMService
      args: {api_key: k, temprature: 0.3}
  - pipecat:
      class: pipecat.services.openai.stt.OpenAISTTService
      tools: [hangup]
"""
    try:
        Bot.from_yaml(text, file="bot.yaml")
    except ConfigError as error:
        lines = [str(p) for p in error.problems]
    else:
        raise AssertionError("the bot loaded")
    assert lines[0].startswith("bot.yaml:5:")
    assert "pipeline[0].pipecat.args.temprature: OpenAILLMService takes no argument" in lines[0]
    assert "bot.yaml:8:" in lines[1] and "only a step with role: llm takes 'tools'" in lines[1]
