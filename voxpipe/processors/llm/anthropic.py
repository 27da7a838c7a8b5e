"""``anthropic``: Claude through the official ``anthropic`` SDK, streaming, with tool use.

The SDK's own retries are turned off: the LLM base retries with its backoff and knows whether
the caller already heard part of the reply.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.llm.base import LLMBaseSettings
from voxpipe.processors.llm.client import LLMClient, SDKClient, ToolRound, import_sdk
from voxpipe.tools.toolbox import ToolCall, ToolSpec, parse_arguments

if TYPE_CHECKING:
    from voxpipe.pipelines.context import BotContext

CALL_OPENING = "(The call is connected.)"


class AnthropicSettings(LLMBaseSettings):
    """Anthropic Claude (streaming messages with tool use)."""

    provider: Literal["anthropic"] = Field(description="anthropic")
    model: str = Field("claude-sonnet-4-6", description="Model name.")
    system: str = Field("", description="System prompt.")
    max_tokens: int = Field(512, gt=0, description="Longest reply, in tokens.")
    temperature: float | None = Field(None, ge=0, le=1, description="Sampling temperature.")
    api_key: SecretStr | None = Field(
        None, description="API key; default: the ANTHROPIC_API_KEY environment variable."
    )
    base_url: str | None = Field(None, description="API base URL (a proxy, or a test server).")

    def make_client(self, ctx: BotContext) -> LLMClient:
        anthropic = import_sdk("anthropic", "anthropic")
        key = (
            self.api_key.get_secret_value()
            if self.api_key
            else os.environ.get("ANTHROPIC_API_KEY", "")
        )
        if not key:
            raise ProviderError(
                "llm anthropic: no API key; set ANTHROPIC_API_KEY "
                "or `api_key: ${ANTHROPIC_API_KEY}`"
            )
        sdk = anthropic.AsyncAnthropic(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        return AnthropicClient(self, sdk)


def anthropic_messages(
    history: list[dict[str, Any]], rounds: list[ToolRound]
) -> list[dict[str, Any]]:
    """The dialogue in the Messages API's shape: alternating roles, starting with the user.

    A ``tool`` history entry, like a round of the reply being generated, becomes an assistant
    message of ``tool_use`` blocks and a user message of ``tool_result`` blocks.
    """
    messages: list[dict[str, Any]] = []
    for message in history:
        if message["role"] == "tool":
            _add_round(messages, ToolRound.of(message))
        else:
            _add(messages, message["role"], message["content"])
    if messages and messages[0]["role"] != "user":
        messages.insert(0, {"role": "user", "content": CALL_OPENING})
    for r in rounds:
        _add_round(messages, r)
    return messages


def _add(messages: list[dict[str, Any]], role: str, content: str | list[dict[str, Any]]) -> None:
    """Append a message, joining it to the last one when both have the same role."""
    if not messages or messages[-1]["role"] != role:
        messages.append({"role": role, "content": content})
        return
    last = messages[-1]
    if isinstance(last["content"], str) and isinstance(content, str):
        last["content"] += "\n" + content
    else:
        last["content"] = _blocks(last["content"]) + _blocks(content)


def _blocks(content: str | list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"type": "text", "text": content}] if isinstance(content, str) else content


def _add_round(messages: list[dict[str, Any]], r: ToolRound) -> None:
    content: list[dict[str, Any]] = [{"type": "text", "text": r.text}] if r.text else []
    content += [
        {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments} for c in r.calls
    ]
    _add(messages, "assistant", content)
    results = [
        {"type": "tool_result", "tool_use_id": c.id, "content": result}
        for c, result in zip(r.calls, r.results, strict=True)
    ]
    _add(messages, "user", results)


class AnthropicClient(SDKClient[AnthropicSettings]):
    """Streams a Messages API response as text chunks and tool calls."""

    provider = "anthropic"

    async def request(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> Any:
        s = self.settings
        options: dict[str, Any] = {}
        if s.system:
            options["system"] = s.system
        if tools:
            options["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in tools
            ]
        if s.temperature is not None:
            options["extra_body"] = {"temperature": s.temperature}
        return await self.sdk.messages.create(
            model=s.model,
            max_tokens=s.max_tokens,
            messages=anthropic_messages(history, rounds),
            stream=True,
            **options,
        )

    async def read(self, response: Any) -> AsyncIterator[str | ToolCall]:
        tool: dict[str, str] | None = None
        async for event in response:
            if event.type == "content_block_start" and event.content_block.type == "tool_use":
                block = event.content_block
                tool = {"id": block.id, "name": block.name, "json": ""}
            elif event.type == "content_block_delta":
                if event.delta.type == "text_delta":
                    yield event.delta.text
                elif event.delta.type == "input_json_delta" and tool is not None:
                    tool["json"] += event.delta.partial_json
            elif event.type == "content_block_stop" and tool is not None:
                yield ToolCall(tool["id"], tool["name"], parse_arguments(tool["json"]))
                tool = None
