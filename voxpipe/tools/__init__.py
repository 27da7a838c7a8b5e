"""Tools an LLM may call: built-ins (hangup, transfer), HTTP requests and Python plugins.

``build_toolbox`` makes an LLM step's tools from the bot's ``tools:`` block; ``toolbox`` has
what every tool shares (``Tool``, ``Toolbox``, ``ToolCall``), which the tool modules build on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Mapping

    from voxpipe.pipelines.settings import Settings
    from voxpipe.tools.toolbox import Tool, Toolbox


def build_toolbox(
    names: list[str], declared: Mapping[str, Settings], timeout_s: float = 10.0
) -> Toolbox:
    """Build the tools named by an LLM step; Python tools are resolved now, to fail fast."""
    from voxpipe.tools.builtins import HangupTool, TransferTool
    from voxpipe.tools.http import HttpTool
    from voxpipe.tools.python import PythonTool
    from voxpipe.tools.settings import ToolSettings
    from voxpipe.tools.toolbox import Toolbox

    tools: dict[str, Tool] = {}
    for name in names:
        settings = declared.get(name) or ToolSettings.model_validate({})
        if not isinstance(settings, ToolSettings):
            raise TypeError(f"tool {name!r}: {type(settings).__name__} is no ToolSettings")
        tool: Tool
        if settings.http is not None:
            tool = HttpTool(name, settings)
        elif settings.python is not None:
            tool = PythonTool(name, settings)
        elif name == "hangup":
            tool = HangupTool(name, settings)
        elif name == "transfer":
            tool = TransferTool(name, settings)
        else:
            raise ValueError(f"tool {name!r} is not declared under `tools:`")
        tools[name] = tool
    return Toolbox(tools, timeout_s)
