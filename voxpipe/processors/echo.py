"""``echo``: the caller hears themselves, for checking an Asterisk setup end to end."""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from voxpipe.frames import Direction, Frame, InputAudioFrame, OutputAudioFrame
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


class Echo(FrameProcessor):
    """Turns every frame of caller audio into bot audio, and passes the caller audio on."""

    __slots__ = ("passthrough",)

    def __init__(self, passthrough: bool) -> None:
        super().__init__(name="echo")
        self.passthrough = passthrough

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if type(frame) is InputAudioFrame:
            await self.push_frame(
                OutputAudioFrame(frame.audio, frame.sample_rate, frame.channels), direction
            )
            if not self.passthrough:
                return
        await self.push_frame(frame, direction)


class EchoSettings(ProcessorSettings):
    """Echo the caller's audio back to them."""

    passthrough: bool = Field(
        True, description="Also pass the caller's audio on to later processors (a VAD, say)."
    )

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return Echo(self.passthrough)
