"""``openai_compatible``: any chat completions endpoint through the official ``openai`` SDK.

Ollama, vLLM and the llama.cpp server speak this API; point ``base_url`` at them. Tools are sent
as functions; streamed ``tool_calls`` deltas are joined by their index.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, SecretStr

from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.llm.base import LLMBaseSettings
from voxpipe.processors.llm.client import LLMClient, SDKClient, ToolRound, import_sdk
from voxpipe.tools.toolbox import ToolCall, ToolSpec, parse_arguments

if TYPE_CHECKING:
    from voxpipe.pipelines.context import BotContext


class OpenAICompatibleSettings(LLMBaseSettings):
    """A chat completions endpoint (OpenAI, Ollama, vLLM, llama.cpp server) with tools."""

    provider: Literal["openai_compatible"] = Field(description="openai_compatible")
    model: str = Field(description="Model name as the server knows it, e.g. 'llama3.2'.")
    base_url: str = Field(
        "http://127.0.0.1:11434/v1", description="API base URL (default: a local Ollama)."
    )
    api_key: SecretStr = Field(
        SecretStr("not-needed"), description="API key; local servers accept any value."
    )
    system: str = Field("", description="System prompt.")
    max_tokens: int = Field(512, gt=0, description="Longest reply, in tokens.")
    temperature: float | None = Field(None, ge=0, le=2, description="Sampling temperature.")

    def make_client(self, ctx: BotContext) -> LLMClient:
        openai = import_sdk("openai_compatible", "openai")
        key = self.api_key.get_secret_value()
        if not key:
            raise ProviderError("llm openai_compatible: api_key is empty")
        sdk = openai.AsyncOpenAI(
            api_key=key, base_url=self.base_url, max_retries=0, timeout=self.timeout_s
        )
        return OpenAICompatibleClient(self, sdk)


def openai_messages(
    system: str, history: list[dict[str, Any]], rounds: list[ToolRound]
) -> list[dict[str, Any]]:
    """The dialogue in the chat completions shape, tool rounds included: a ``tool`` history
    entry, like a round of the reply being generated, becomes an assistant message with
    ``tool_calls`` and one ``tool`` message per result."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": system}] if system else []
    for m in history:
        if m["role"] == "tool":
            messages += _round_messages(ToolRound.of(m))
        else:
            messages.append({"role": m["role"], "content": m["content"]})
    for r in rounds:
        messages += _round_messages(r)
    return messages


def _round_messages(r: ToolRound) -> list[dict[str, Any]]:
    calls = [
        {
            "id": c.id,
            "type": "function",
            "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
        }
        for c in r.calls
    ]
    return [
        {"role": "assistant", "content": r.text or None, "tool_calls": calls},
        *(
            {"role": "tool", "tool_call_id": c.id, "content": result}
            for c, result in zip(r.calls, r.results, strict=True)
        ),
    ]


class OpenAICompatibleClient(SDKClient[OpenAICompatibleSettings]):
    """Streams a chat completion as text chunks and tool calls."""

    provider = "openai_compatible"

    async def request(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> Any:
        s = self.settings
        options: dict[str, Any] = {}
        if tools:
            options["tools"] = [
                {
                    "type": "function",
                    "function": {
                        "name": t.name,
                        "description": t.description,
                        "parameters": t.parameters,
                    },
                }
                for t in tools
            ]
        if s.temperature is not None:
            options["temperature"] = s.temperature
        return await self.sdk.chat.completions.create(
            model=s.model,
            messages=openai_messages(s.system, history, rounds),
            max_tokens=s.max_tokens,
            stream=True,
            **options,
        )

    async def read(self, response: Any) -> AsyncIterator[str | ToolCall]:
        calls: dict[int, dict[str, str]] = {}
        async for chunk in response:
            if not chunk.choices:
                continue
            delta = chunk.choices[0].delta
            if delta.content:
                yield delta.content
            for part in delta.tool_calls or ():
                slot = calls.setdefault(part.index, {"id": "", "name": "", "arguments": ""})
                slot["id"] = part.id or slot["id"]
                if part.function is not None:
                    slot["name"] += part.function.name or ""
                    slot["arguments"] += part.function.arguments or ""
        for index in sorted(calls):
            slot = calls[index]
            yield ToolCall(
                slot["id"] or f"call-{index}", slot["name"], parse_arguments(slot["arguments"])
            )
