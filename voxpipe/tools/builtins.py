"""The built-in tools: ``hangup`` (say goodbye, then hang up) and ``transfer``."""

from __future__ import annotations

from typing import Any

from voxpipe.frames import HangupFrame, TransferFrame
from voxpipe.tools.toolbox import Tool, ToolOutcome


class HangupTool(Tool):
    """Ends the call politely: the bot says ``goodbye``, the transport plays it, then hangs up."""

    default_description = "End the call when the caller is done or asks to hang up."

    @property
    def announcement(self) -> str | None:
        return None  # the goodbye is part of the outcome

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        return ToolOutcome(
            "the call is ending",
            say=self.settings.goodbye or "Goodbye.",
            frame=HangupFrame(reason="hangup tool"),
        )


class TransferTool(Tool):
    """Asks for a blind transfer to ``context``/``extension`` after the ``say`` line.

    The transport (or ARI controller) carries the ``TransferFrame`` out.
    """

    default_description = "Transfer the caller to a human operator."

    @property
    def announcement(self) -> str | None:
        return None  # the `say` line is part of the outcome, spoken before the transfer

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        context = self.settings.context or "default"
        extension = self.settings.extension or "0"
        return ToolOutcome(
            f"transfer to {context}/{extension} requested",
            say=self.settings.say or "Please hold while I transfer you.",
            frame=TransferFrame(context=context, extension=extension),
        )
