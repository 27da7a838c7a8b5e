"""The contract between the LLM processor and a provider: ``LLMClient.stream`` (or, over an
official SDK, ``SDKClient.request``/``read``), the tool rounds of a reply, ``ProviderFailed``."""

from __future__ import annotations

import importlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from voxpipe.pipelines.settings import ProviderError
from voxpipe.tools.toolbox import ToolCall, ToolSpec

if TYPE_CHECKING:
    from voxpipe.processors.llm.base import LLMBaseSettings

SettingsT = TypeVar("SettingsT", bound="LLMBaseSettings")


@dataclass(slots=True)
class ToolRound:
    """One finished round of a reply that called tools: its text, the calls and their results."""

    text: str
    calls: list[ToolCall]
    results: list[str]

    def message(self) -> dict[str, Any]:
        """This round's calls and results as a provider-neutral history entry (see ``Call``)."""
        return {
            "role": "tool",
            "calls": [
                {"id": c.id, "name": c.name, "arguments": c.arguments, "result": result}
                for c, result in zip(self.calls, self.results, strict=True)
            ],
        }

    @classmethod
    def of(cls, message: dict[str, Any]) -> ToolRound:
        """The round a ``tool`` history entry records (its text is in the assistant's entry)."""
        calls = message["calls"]
        return cls(
            "",
            [ToolCall(c["id"], c["name"], c["arguments"]) for c in calls],
            [c["result"] for c in calls],
        )


class LLMClient(Protocol):
    """A provider's connection, shared by every call of a bot."""

    provider: str

    def stream(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> AsyncIterator[str | ToolCall]:
        """Stream one model response: text chunks, then any complete tool calls."""
        ...


def import_sdk(provider: str, package: str) -> Any:
    """Import a provider's official SDK when a bot first uses it; say which extra installs it."""
    try:
        return importlib.import_module(package)
    except ImportError as exc:
        raise ProviderError(
            f"llm {provider}: the {package} package is missing; pip install 'voxpipe[{package}]'"
        ) from exc


class SDKClient(Generic[SettingsT]):
    """An ``LLMClient`` over a provider's official SDK client, shared by every call of a bot."""

    provider: str

    def __init__(self, settings: SettingsT, sdk: Any) -> None:
        self.settings = settings
        self.sdk = sdk

    async def stream(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> AsyncIterator[str | ToolCall]:
        response = await self.request(history, rounds, tools)
        try:
            async for item in self.read(response):
                yield item
        finally:
            await response.close()

    async def request(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> Any:
        """Start one streaming request through the SDK; return its response stream."""
        raise NotImplementedError

    def read(self, response: Any) -> AsyncIterator[str | ToolCall]:
        """Turn the SDK's streamed events into text chunks and complete tool calls."""
        raise NotImplementedError


class ProviderFailed(Exception):
    """A request failed after its retries."""
