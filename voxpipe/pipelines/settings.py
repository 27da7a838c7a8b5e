"""The base of every processor type's settings model.

A processor type is its settings model: the model validates the YAML, documents every key
(field descriptions), generates the JSON Schema, and builds the processor for each call.
"""

from __future__ import annotations

import difflib
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, ConfigDict

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.pipelines.processor import FrameProcessor


class Settings(BaseModel):
    """Base for every settings block: unknown keys are errors, values are immutable.

    Numbers given for text settings are read as text (``extension: 100``, or a numeric
    ``${VAR}``), as a user of YAML expects.
    """

    model_config = ConfigDict(
        extra="forbid",
        frozen=True,
        validate_default=True,
        coerce_numbers_to_str=True,
        defer_build=True,
    )


class ProcessorSettings(Settings):
    """Settings of one processor type (or one provider of it).

    Subclasses set ``type_name`` (the YAML key, set by the registry for providers) and implement
    ``create``. Heavy libraries are imported inside ``prepare``/``create``, never at module level,
    so that loading and validating a bot stays fast.
    """

    type_name: ClassVar[str] = ""

    async def prepare(self, ctx: BotContext) -> None:
        """Load what every call shares (a model, a client) once, before the bot takes calls;
        keep it in ``ctx.shared``.

        Raise ``ProviderError`` with a clear message when the provider cannot start.
        """

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        """Build this processor for one call. Must be cheap: it runs for every call."""
        raise NotImplementedError(f"{type(self).__name__} does not build a processor")

    def standby_lines(self) -> list[str]:
        """Lines this step speaks when something fails (an LLM's ``on_error`` filler): the
        bot gathers them (``BotContext.standby_lines``) for its voice to keep synthesised."""
        return []


class ProviderError(Exception):
    """A provider could not start (missing package, model or credentials)."""


def did_you_mean(word: str, choices: list[str]) -> str:
    """`` (did you mean 'x'?)`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
