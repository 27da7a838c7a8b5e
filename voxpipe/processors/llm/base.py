"""Settings every LLM provider has, and how a step's LLM is prepared and built for a call.

The processor is ``voxpipe.processors.llm.processor.LLMProcessor`` (turn-taking, the greeting,
streaming, tools and failures); a provider implements the client contract of
``voxpipe.processors.llm.client``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

from pydantic import Field

from voxpipe.caller_context import render, uses_context
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings, ProviderError, Settings
from voxpipe.processors.llm.client import (
    LLMClient,
    ProviderFailed,
    SDKClient,
    ToolRound,
    import_sdk,
)
from voxpipe.processors.llm.processor import LLMProcessor, keys_text
from voxpipe.tools import build_toolbox

# What a provider module needs, in one place: the settings here, the client contract and the
# processor from their modules.
__all__ = [
    "LLMBaseSettings",
    "LLMClient",
    "LLMProcessor",
    "OnErrorSettings",
    "ProviderFailed",
    "SDKClient",
    "ToolRound",
    "import_sdk",
    "keys_text",
]

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


class OnErrorSettings(Settings):
    """What the bot does when its LLM (or speech) provider fails during a call."""

    say: str = Field(
        "Sorry, I'm having a technical problem.", description="The filler the bot speaks."
    )
    then: Literal["retry", "hangup"] = Field(
        "retry",
        description="retry: try the turn once more (a second failure hangs up); "
        "hangup: say `goodbye` and hang up.",
    )
    goodbye: str = Field(
        "Please call again later. Goodbye.", description="Said before hanging up after a failure."
    )


class LLMBaseSettings(ProcessorSettings):
    """Settings every LLM provider has."""

    tools: list[str] = Field(
        default_factory=list, description="Names of the tools the model may call (see `tools:`)."
    )
    timeout_s: float = Field(
        10.0, gt=0, description="Give up on a request when the provider sends nothing this long."
    )
    retries: int = Field(2, ge=0, description="Retries of a failed request before `on_error`.")
    backoff_s: float = Field(
        0.5, ge=0, description="Wait before the first retry; doubled for each further one."
    )
    max_tool_rounds: int = Field(
        4, ge=0, description="Model requests that may follow tool results within one reply."
    )
    tool_timeout_s: float = Field(10.0, gt=0, description="Timeout of one tool call.")
    filler: str = Field(
        "One moment.",
        description="What the bot says when its reply is late (see `filler_after_ms`); kept "
        "synthesised, so it plays at once.",
    )
    filler_after_ms: int | None = Field(
        1500,
        ge=0,
        le=30000,
        description="How long after the caller stops speaking the bot waits for its reply to "
        "start playing before it says `filler`: at most once per turn, never over the caller "
        "(null: never).",
    )
    on_error: OnErrorSettings = Field(
        default_factory=OnErrorSettings,  # type: ignore[arg-type]
        description="What to do when the provider fails mid-call.",
    )

    def standby_lines(self) -> list[str]:
        """The ``on_error`` filler and goodbye, and the filler for late replies (a classifier
        speaks none of them)."""
        if getattr(self, "kind", "llm") != "llm":
            return []
        lines = [self.on_error.say, self.on_error.goodbye]
        if self.filler_after_ms is not None:
            lines.append(self.filler)
        return lines

    def make_client(self, ctx: BotContext) -> LLMClient:
        """Build the provider's client (import its SDK here); raise ``ProviderError``."""
        raise NotImplementedError

    async def prepare(self, ctx: BotContext) -> None:
        try:
            toolbox = build_toolbox(self.tools, ctx.tools, self.tool_timeout_s)
        except Exception as exc:
            raise ProviderError(f"llm tools: {exc}") from exc
        ctx.shared[f"llm:{id(self)}"] = (self.make_client(ctx), toolbox)

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        shared = ctx.shared.get(f"llm:{id(self)}")
        if shared is None:
            raise ProviderError("the LLM was not prepared (call bot.prepare() first)")
        client, toolbox = shared
        system = getattr(self, "system", None)
        if isinstance(client, SDKClient) and uses_context(system):
            # The system prompt names the caller: this call gets a client of its own prompt.
            personal = self.model_copy(update={"system": render(system or "", call.caller)})
            client = type(client)(personal, client.sdk)
        greeting = ctx.greeting
        return LLMProcessor(
            self, client, toolbox, greeting=greeting and render(greeting, call.caller)
        )
