"""Python tools: a function from the ``voxpipe.tools`` entry point group or ``module:function``.

The function gets the validated arguments as keyword arguments and may be sync (run in a worker
thread, so it cannot stall other calls) or async. Its return value goes back to the model as
text (JSON for structured values). It is resolved when the bot is prepared, so a missing
function stops ``serve`` before it accepts calls.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any

from voxpipe.tools.settings import ToolSettings
from voxpipe.tools.toolbox import Tool, ToolOutcome, as_text

ENTRY_POINT_GROUP = "voxpipe.tools"


def resolve(ref: str) -> Callable[..., Any]:
    """The function named by an entry point in ``voxpipe.tools`` or by ``module:function``."""
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if ep.name == ref:
            loaded: Callable[..., Any] = ep.load()
            return loaded
    module, sep, attr = ref.partition(":")
    if not sep:
        raise ValueError(f"no entry point {ref!r} in {ENTRY_POINT_GROUP} (or give module:function)")
    target: Any = importlib.import_module(module)
    for part in attr.split("."):
        target = getattr(target, part)
    if not callable(target):
        raise ValueError(f"{ref!r} is not callable")
    return target  # type: ignore[no-any-return]


class PythonTool(Tool):
    """Calls a Python function with the model's arguments."""

    def __init__(self, name: str, settings: ToolSettings) -> None:
        super().__init__(name, settings)
        assert settings.python is not None
        self.function = resolve(settings.python)

    async def invoke(self, arguments: dict[str, Any]) -> ToolOutcome:
        if inspect.iscoroutinefunction(self.function):
            value = await self.function(**arguments)
        else:
            value = await asyncio.to_thread(self.function, **arguments)
            if inspect.isawaitable(value):
                value = await value
        return ToolOutcome(as_text(value))
