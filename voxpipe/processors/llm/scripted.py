"""``scripted``: a deterministic LLM whose intents are declared in YAML (the offline demo's brain).

The caller's latest turn is matched against each intent in order: an intent matches when any
of its ``keywords`` appears as a whole word (or phrase), its ``regex`` matches (case-
insensitive), or the turn is exactly its ``dtmf`` keys (``[pressed 0]``). The first match gives
the reply and/or a tool call; ``{name}`` in the reply, the tool arguments and ``after_tool``
takes the regex group ``name`` (or ``{1}``, ``{2}``...), and ``after_tool`` may use
``{result}``, the tool's result. No intent matching gives ``fallback``. Tool arguments may also
use the caller context (``{caller.number}``), which the toolbox fills.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field, model_validator

from voxpipe.caller_context import FIELD as CALLER_FIELD
from voxpipe.pipelines.settings import Settings
from voxpipe.processors.llm.base import LLMBaseSettings
from voxpipe.processors.llm.client import LLMClient, ToolRound
from voxpipe.processors.llm.processor import keys_text
from voxpipe.tools.toolbox import ToolCall, ToolSpec

if TYPE_CHECKING:
    from voxpipe.pipelines.context import BotContext

_FIELD = re.compile(r"\{(\w+)\}")


class ScriptedToolCall(Settings):
    """A tool the intent calls, with its arguments (templates)."""

    name: str = Field(description="The tool's name; it must be listed in `tools`.")
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Arguments; `{group}` takes a regex group."
    )


class Intent(Settings):
    """One thing the caller may say, and the bot's answer."""

    name: str = Field("", description="A name for logs.")
    keywords: list[str] = Field(
        default_factory=list, description="Words or phrases; any one of them matches."
    )
    regex: str | None = Field(None, description="A regular expression (case-insensitive).")
    dtmf: str | None = Field(
        None,
        description='Keys that match when the caller\'s turn is exactly them (`"0"`, or '
        '`"12"` gathered by a `dtmf` step); the LLM sees keys as `[pressed 0]`.',
    )
    reply: str | None = Field(None, description="What the bot says.")
    tool: ScriptedToolCall | None = Field(None, description="A tool called after the reply.")
    after_tool: str | None = Field(
        None, description="What the bot says once the tool answered; `{result}` is its result."
    )

    @model_validator(mode="after")
    def _check(self) -> Intent:
        if not self.keywords and not self.regex and not self.dtmf:
            raise ValueError("an intent needs `keywords`, `regex` or `dtmf`")
        if self.dtmf is not None and (
            not self.dtmf or set(self.dtmf.upper()) - set("0123456789*#ABCD")
        ):
            raise ValueError(f"`dtmf` is keys: 0-9, *, # or A-D (got {self.dtmf!r})")
        if self.reply is None and self.tool is None:
            raise ValueError("an intent needs a `reply`, a `tool`, or both")
        groups: set[str] = set()
        if self.regex is not None:
            try:
                compiled = re.compile(self.regex)
            except re.error as exc:
                raise ValueError(f"invalid regex: {exc}") from None
            groups = {str(i) for i in range(compiled.groups + 1)} | set(compiled.groupindex)
        self._check_fields(groups)
        return self

    def _check_fields(self, groups: set[str]) -> None:
        """Every ``{field}`` a template uses must be filled by a match, or the caller would
        hear the braces read out."""
        templates = [("reply", self.reply), ("after_tool", self.after_tool)]
        if self.tool is not None:
            templates += [
                (f"tool.arguments.{k}", v)
                for k, v in self.tool.arguments.items()
                if isinstance(v, str)
            ]
        for where, template in templates:
            context = CALLER_FIELD.search(template or "")
            if context is not None and not where.startswith("tool."):
                raise ValueError(
                    f"{where} uses {context.group(0)}: the caller context fills the greeting, "
                    "system prompts and tool arguments, not scripted replies"
                )
            for field in _FIELD.findall(template or ""):
                if where == "after_tool" and field == "result":
                    continue
                if field not in groups:
                    known = ", ".join(sorted(groups)) or "none: the intent has no regex"
                    raise ValueError(
                        f"{where} uses {{{field}}}, which no group of `regex` fills "
                        f"(groups: {known})"
                    )
                if self.keywords:
                    raise ValueError(
                        f"{where} uses {{{field}}}, but a match by `keywords` fills no groups: "
                        "give such an intent a `regex` only"
                    )


class ScriptedSettings(LLMBaseSettings):
    """Scripted replies: intents matched by keywords or regular expressions; no network."""

    provider: Literal["scripted"] = Field(description="scripted")
    intents: list[Intent] = Field(default_factory=list, description="Intents, tried in order.")
    fallback: str = Field(
        "Sorry, I did not understand. Could you say that again?",
        description="The reply when no intent matches.",
    )

    @model_validator(mode="after")
    def _tools_listed(self) -> ScriptedSettings:
        for intent in self.intents:
            if intent.tool is not None and intent.tool.name not in self.tools:
                raise ValueError(
                    f"intent {intent.name or intent.keywords or intent.regex!r} calls tool "
                    f"{intent.tool.name!r}, which is not in `tools`"
                )
        return self

    def make_client(self, ctx: BotContext) -> LLMClient:
        return ScriptedClient(self.intents, self.fallback)


def fill(template: str, values: dict[str, str]) -> str:
    """Replace ``{name}`` by ``values[name]``; unknown fields stay as written."""
    return _FIELD.sub(lambda m: values.get(m.group(1), m.group(0)), template)


class ScriptedClient:
    """Answers from the intents; a tool's result may be read back with ``after_tool``."""

    provider = "scripted"

    def __init__(self, intents: list[Intent], fallback: str) -> None:
        self.fallback = fallback
        self.intents = [
            (
                intent,
                [re.compile(r"\b" + re.escape(k.lower()) + r"\b") for k in intent.keywords],
                re.compile(intent.regex, re.IGNORECASE) if intent.regex else None,
                keys_text(intent.dtmf.upper()) if intent.dtmf else None,
            )
            for intent in intents
        ]

    def match(self, text: str) -> tuple[Intent | None, dict[str, str]]:
        """The first intent matching ``text`` and the values its templates may use."""
        lowered = text.lower()
        for intent, keywords, regex, keys in self.intents:
            if keys is not None and text.strip() == keys:
                return intent, {}
            if regex is not None and (found := regex.search(text)) is not None:
                values = {str(i): g or "" for i, g in enumerate(found.groups(), start=1)}
                values.update({k: v or "" for k, v in found.groupdict().items()})
                values["0"] = found.group(0)
                return intent, values
            if any(k.search(lowered) for k in keywords):
                return intent, {}
        return None, {}

    async def stream(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> AsyncIterator[str | ToolCall]:
        text = next((m["content"] for m in reversed(history) if m["role"] == "user"), "")
        intent, values = self.match(text)
        if intent is None:
            if not rounds:
                yield self.fallback
            return
        if rounds:
            if intent.after_tool is not None:
                result = rounds[-1].results[0] if rounds[-1].results else ""
                yield fill(intent.after_tool, {**values, "result": result})
            return
        if intent.reply:
            yield fill(intent.reply, values)
        if intent.tool is not None:
            arguments = {
                k: fill(v, values) if isinstance(v, str) else v
                for k, v in intent.tool.arguments.items()
            }
            yield ToolCall(f"scripted-{len(history)}", intent.tool.name, arguments)
