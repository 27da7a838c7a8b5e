"""What a processor type may rely on from the bot that runs it, and what a transport needs.

``ProcessorSettings.prepare(ctx)`` and ``create(call, ctx)`` receive a ``BotContext``; nothing
else of the application reaches a processor. The application's ``Bot`` (``voxpipe.bots``)
satisfies both protocols; a test or a plugin may hand in any object that does.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.processor import FrameProcessor
    from voxpipe.pipelines.settings import Settings
    from voxpipe.pipelines.task import PipelineTask


class BotContext(Protocol):
    """The bot as its processors see it.

    ``shared`` is where ``prepare`` keeps what every call of the bot uses (a loaded model, an
    API client; closed by the bot at shutdown when it has ``aclose``/``close``/``__aexit__`` or
    is an executor). The rest is read-only: the bot's name (for logs), the audio rate inside the
    pipeline, the greeting, the ``tools:`` the bot declares, and the standby lines (what the
    bot's steps say when something fails, which a voice keeps synthesised).
    """

    @property
    def shared(self) -> dict[str, Any]:
        """What every call of the bot shares, filled by the steps' ``prepare``."""
        ...

    @property
    def name(self) -> str:
        """The bot's name."""
        ...

    @property
    def sample_rate(self) -> int:
        """The audio rate inside the pipeline."""
        ...

    @property
    def greeting(self) -> str | None:
        """What the bot says when a call starts, with ``{caller.x}`` templates unrendered."""
        ...

    @property
    def tools(self) -> Mapping[str, Settings]:
        """The tools the bot declares (``tools:``), by name."""
        ...

    @property
    def standby_lines(self) -> Sequence[str]:
        """Lines the bot's steps speak when something fails (``ProcessorSettings.standby_lines``
        of every step): a voice synthesises them at ``prepare`` and keeps them."""
        ...


class CallHost(BotContext, Protocol):
    """The bot as a transport sees it: it makes a call, settles who is calling, and builds the
    call's pipeline around the transport's input and output processors."""

    @property
    def speech_stop_s(self) -> float:
        """Silence after which the caller counts as stopped (the VAD's), 0 without a VAD."""
        ...

    def new_call(self, call_id: str | None = None) -> Call:
        """A fresh call of this bot."""
        ...

    async def start_call(self, call: Call) -> None:
        """Settle who is calling before the call's pipeline is built."""
        ...

    def create_pipeline(
        self,
        call: Call,
        head: list[FrameProcessor] | None = None,
        tail: list[FrameProcessor] | None = None,
    ) -> PipelineTask:
        """One call's pipeline: ``head``, the bot's chain, ``tail``."""
        ...
