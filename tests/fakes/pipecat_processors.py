"""Small Pipecat processors for the pipecat step's tests (`class: fakes.pipecat_processors.X`)."""

from __future__ import annotations

from pipecat.frames import frames as pf
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor


class Shout(FrameProcessor):  # type: ignore[misc]
    """Upper-cases final transcriptions; reports an error when the caller says 'fail' and
    interrupts the bot when the caller says 'stop'."""

    def __init__(self, *, suffix: str = "!", times: int = 1) -> None:
        super().__init__()
        self.suffix = suffix
        self.times = times

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, pf.TranscriptionFrame):
            if frame.text == "fail":
                await self.push_error("the caller said fail")
                return
            if frame.text == "stop":
                await self.push_frame(pf.InterruptionFrame(), FrameDirection.UPSTREAM)
                return
            text = frame.text.upper() + self.suffix * self.times
            await self.push_frame(pf.TranscriptionFrame(text, frame.user_id, frame.timestamp))
            return
        await self.push_frame(frame, direction)
