"""``llm``: the bot's brain. Providers: scripted (offline), anthropic, openai_compatible."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from voxpipe.processors.llm.anthropic import AnthropicSettings
from voxpipe.processors.llm.openai_compatible import OpenAICompatibleSettings
from voxpipe.processors.llm.scripted import ScriptedSettings

LLMSettings = Annotated[
    ScriptedSettings | AnthropicSettings | OpenAICompatibleSettings,
    Field(discriminator="provider"),
    "Language model that answers the caller, streaming, with tools.",
]

__all__ = ["AnthropicSettings", "LLMSettings", "OpenAICompatibleSettings", "ScriptedSettings"]
