"""Tools: argument validation, http tools against a local server, Python tools, built-ins."""

from __future__ import annotations

import asyncio
from importlib.metadata import EntryPoint
from typing import Any

import pytest
from fakes.anthropic_sse import FakeHTTPServer, Reply

from voxpipe.frames import HangupFrame, TransferFrame
from voxpipe.tools import build_toolbox
from voxpipe.tools import python as python_tools
from voxpipe.tools.schema import validate
from voxpipe.tools.settings import ToolSettings
from voxpipe.tools.toolbox import ToolCall


def order_status(order_id: str) -> dict[str, Any]:
    """A Python tool (sync)."""
    return {"order_id": order_id, "status": "ships tomorrow"}


async def slow_tool() -> str:
    """A Python tool that never answers in time."""
    await asyncio.sleep(30)
    return "late"


def broken_tool() -> str:
    """A Python tool that raises."""
    raise RuntimeError("database is down")


def http_tool(url: str, **request: Any) -> dict[str, ToolSettings]:
    return {
        "lookup_order": ToolSettings.model_validate(
            {
                "description": "Look up an order.",
                "parameters": {"order_id": {"type": "string", "pattern": "^[A-Z][0-9]{5}$"}},
                "http": {"url": url + "/orders/{order_id}", **request},
            }
        )
    }


def test_schema_reports_each_problem() -> None:
    schema = {
        "type": "object",
        "properties": {"n": {"type": "integer", "minimum": 1}, "s": {"type": "string"}},
        "required": ["n", "s"],
    }
    assert validate({"n": 2, "s": "x"}, schema) == []
    problems = validate({"n": 0, "x": 1}, schema)
    assert "s: required argument is missing" in problems
    assert "n: must be at least 1" in problems
    assert "x: unknown argument" in problems
    assert validate({"n": True, "s": "x"}, schema) == ["n: expected integer, got bool"]


async def test_http_tool_fetches_the_order() -> None:
    async with FakeHTTPServer() as server:
        server.add(Reply(body={"status": "ships tomorrow"}))
        toolbox = build_toolbox(["lookup_order"], http_tool(server.url))
        outcome = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "A12345"}))
    assert not outcome.error
    assert "ships tomorrow" in outcome.result
    assert server.requests[0].method == "GET"
    assert server.requests[0].path == "/orders/A12345"


async def test_http_tool_sends_headers_and_a_json_body() -> None:
    tools = {
        "note": ToolSettings.model_validate(
            {
                "parameters": {"order_id": {"type": "string"}, "text": {"type": "string"}},
                "http": {"method": "POST", "url": "http://127.0.0.1:1/x", "headers": {}},
            }
        )
    }
    async with FakeHTTPServer() as server:
        server.add(Reply(body={"ok": True}))
        tools["note"] = tools["note"].model_copy(
            update={
                "http": tools["note"].http.model_copy(  # type: ignore[union-attr]
                    update={
                        "url": server.url + "/orders/{order_id}/notes",
                        "headers": {"Authorization": "Bearer s3cret"},
                    }
                )
            }
        )
        toolbox = build_toolbox(["note"], tools)
        outcome = await toolbox.run(ToolCall("1", "note", {"order_id": "A1", "text": "hi"}))
    assert not outcome.error, outcome.result
    request = server.requests[0]
    assert (request.method, request.path) == ("POST", "/orders/A1/notes")
    assert request.headers["authorization"] == "Bearer s3cret"
    assert request.json == {"text": "hi"}


async def test_bad_arguments_are_refused_before_any_request() -> None:
    async with FakeHTTPServer() as server:
        toolbox = build_toolbox(["lookup_order"], http_tool(server.url))
        wrong = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "../admin"}))
        missing = await toolbox.run(ToolCall("2", "lookup_order", {}))
    assert wrong.error and "order_id: does not match" in wrong.result
    assert missing.error and "order_id: required argument is missing" in missing.result
    assert server.requests == []


async def test_http_tool_times_out() -> None:
    async with FakeHTTPServer() as server:
        server.add(Reply(body={"status": "late"}, delay_s=3))
        toolbox = build_toolbox(["lookup_order"], http_tool(server.url, timeout_s=0.2))
        outcome = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "A12345"}))
    assert outcome.error
    assert "Timeout" in outcome.result


async def test_oversized_response_is_refused() -> None:
    async with FakeHTTPServer() as server:
        server.add(Reply(body={"blob": "x" * 5000}))
        toolbox = build_toolbox(["lookup_order"], http_tool(server.url, max_response_bytes=1000))
        outcome = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "A12345"}))
    assert outcome.error
    assert "too large" in outcome.result
    assert "xxxx" not in outcome.result


async def test_disallowed_host_is_never_contacted() -> None:
    async with FakeHTTPServer() as server:
        tools = http_tool(server.url, allowed_hosts=["orders.example"])
        toolbox = build_toolbox(["lookup_order"], tools)
        outcome = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "A12345"}))
    assert outcome.error
    assert "'127.0.0.1' is not allowed" in outcome.result
    assert server.requests == []


async def test_http_error_status_is_reported_to_the_model() -> None:
    async with FakeHTTPServer() as server:
        server.add(Reply(status=404, body={"detail": "no such order"}))
        toolbox = build_toolbox(["lookup_order"], http_tool(server.url))
        outcome = await toolbox.run(ToolCall("1", "lookup_order", {"order_id": "A99999"}))
    assert outcome.error
    assert outcome.result.startswith("error: HTTP 404")
    assert "no such order" in outcome.result


async def test_python_tool_by_module_path() -> None:
    tools = {
        "status": ToolSettings.model_validate(
            {"parameters": {"order_id": {"type": "string"}}, "python": "test_tools:order_status"}
        )
    }
    toolbox = build_toolbox(["status"], tools)
    outcome = await toolbox.run(ToolCall("1", "status", {"order_id": "A1"}))
    assert outcome.result == '{"order_id": "A1", "status": "ships tomorrow"}'


async def test_python_tool_from_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    plugin = EntryPoint("order_status", "test_tools:order_status", "voxpipe.tools")
    monkeypatch.setattr(
        python_tools,
        "entry_points",
        lambda group: [plugin] if group == "voxpipe.tools" else [],
    )
    tools = {
        "status": ToolSettings.model_validate(
            {"parameters": {"order_id": {"type": "string"}}, "python": "order_status"}
        )
    }
    outcome = await build_toolbox(["status"], tools).run(
        ToolCall("1", "status", {"order_id": "B2"})
    )
    assert "B2" in outcome.result and not outcome.error


async def test_python_tool_failures_become_results() -> None:
    tools = {
        "slow": ToolSettings.model_validate({"python": "test_tools:slow_tool"}),
        "broken": ToolSettings.model_validate({"python": "test_tools:broken_tool"}),
    }
    toolbox = build_toolbox(["slow", "broken"], tools, timeout_s=0.2)
    slow = await toolbox.run(ToolCall("1", "slow", {}))
    broken = await toolbox.run(ToolCall("2", "broken", {}))
    unknown = await toolbox.run(ToolCall("3", "nope", {}))
    assert slow.error and "timed out" in slow.result
    assert broken.error and "database is down" in broken.result
    assert unknown.error and "no tool named 'nope'" in unknown.result


def test_missing_python_tool_fails_when_building() -> None:
    tools = {"gone": ToolSettings.model_validate({"python": "test_tools:no_such_function"})}
    with pytest.raises(AttributeError):
        build_toolbox(["gone"], tools)


async def test_builtins_say_then_hang_up_or_transfer() -> None:
    tools = {
        "hangup": ToolSettings.model_validate({"goodbye": "Bye now."}),
        "transfer": ToolSettings.model_validate(
            {"context": "operators", "extension": "100", "say": "Connecting you."}
        ),
    }
    toolbox = build_toolbox(["hangup", "transfer"], tools)
    hangup = await toolbox.run(ToolCall("1", "hangup", {}))
    transfer = await toolbox.run(ToolCall("2", "transfer", {}))
    assert hangup.say == "Bye now." and isinstance(hangup.frame, HangupFrame)
    assert transfer.say == "Connecting you."
    assert transfer.frame == TransferFrame(context="operators", extension="100")
    assert [spec.name for spec in toolbox.specs] == ["hangup", "transfer"]
