"""The tools one LLM step may call, built from the bot's ``tools:`` block and ``llm.tools``.

Every tool has a spec (name, description, JSON Schema of its arguments) that the providers
send to the model, and ``run(arguments)`` giving a ``ToolOutcome``: the text result that goes
back to the model, plus what the bot says and the frame it sends (a hangup, a transfer). A tool
that fails reports the failure as its result: a tool never raises into the call.
"""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from voxpipe.caller_context import CallerContext, render_arguments
from voxpipe.tools.schema import object_schema, validate

if TYPE_CHECKING:
    from voxpipe.frames import Frame
    from voxpipe.tools.settings import ToolSettings

BUILTIN_TOOLS = ("hangup", "transfer")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    """What the model is told about a tool."""

    name: str
    description: str
    parameters: dict[str, Any]


@dataclass(frozen=True, slots=True)
class ToolCall:
    """The model asked for a tool: its call id (provider-given), name and arguments."""

    id: str
    name: str
    arguments: dict[str, Any]


@dataclass(slots=True)
class ToolOutcome:
    """What running a tool produced.

    ``result`` goes back to the model; ``say`` is spoken by the bot; ``frame`` (a hangup or
    transfer) is sent downstream after it and ends the reply. ``Toolbox.run`` fills in the
    ``arguments`` the tool ran with (the caller context filled in) and ``duration_ms``.
    """

    result: str
    say: str | None = None
    frame: Frame | None = None
    error: bool = False
    arguments: dict[str, Any] | None = None
    duration_ms: float = 0.0


class Tool:
    """A callable tool. Subclasses implement ``invoke`` with already validated arguments."""

    default_description = ""

    def __init__(self, name: str, settings: ToolSettings) -> None:
        self.name = name
        self.settings = settings
        self.spec = ToolSpec(
            name=name,
            description=settings.description or self.default_description,
            parameters=object_schema(dict(settings.parameters), settings.required),
        )

    @property
    def announcement(self) -> str | None:
        """What the bot says before the tool runs ("Let me look that up."): its ``say``."""
        return self.settings.say

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        """Do the tool's work."""
        raise NotImplementedError


@dataclass
class Toolbox:
    """The tools of one LLM step, by name."""

    tools: dict[str, Tool] = field(default_factory=dict)
    timeout_s: float = 10.0

    @property
    def specs(self) -> list[ToolSpec]:
        """The specs to send to the model."""
        return [tool.spec for tool in self.tools.values()]

    def announcement(self, name: str) -> str | None:
        """What the bot says before running tool ``name``, if anything."""
        tool = self.tools.get(name)
        return tool.announcement if tool is not None else None

    async def run(self, call: ToolCall, caller: CallerContext | None = None) -> ToolOutcome:
        """Validate the arguments and run the tool; every failure becomes an error result.

        ``{caller.number}``, ``{customer.name}``... in the arguments' text take the values of
        ``caller`` (the call's caller context) first.
        """
        started = time.perf_counter()
        arguments = render_arguments(call.arguments, caller)
        outcome = await self._run(call.name, arguments)
        outcome.arguments = arguments
        outcome.duration_ms = (time.perf_counter() - started) * 1000
        return outcome

    async def _run(self, name: str, arguments: dict[str, Any]) -> ToolOutcome:
        tool = self.tools.get(name)
        if tool is None:
            return ToolOutcome(f"error: there is no tool named {name!r}", error=True)
        problems = validate(arguments, tool.spec.parameters)
        if problems:
            return ToolOutcome("error: invalid arguments: " + "; ".join(problems), error=True)
        try:
            async with asyncio.timeout(self.timeout_s):
                return await tool.invoke(arguments)
        except TimeoutError:
            return ToolOutcome(f"error: the tool timed out after {self.timeout_s:g} s", error=True)
        except Exception as exc:
            return ToolOutcome(f"error: {type(exc).__name__}: {exc}", error=True)


def as_text(value: Any) -> str:
    """A tool's return value as the text the model reads (JSON for structured values)."""
    if isinstance(value, str):
        return value
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return json.dumps(value, ensure_ascii=False, default=str)


def parse_arguments(text: str) -> dict[str, Any]:
    """Streamed tool arguments (JSON text) as a dict; malformed JSON becomes ``{}``, which the
    schema check then reports to the model."""
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return {}
    return value if isinstance(value, dict) else {}
