"""``silence_timeout``: prompt a silent caller, then say goodbye and hang up.

The clock runs only while neither side speaks: the caller speaking (VAD), the bot speaking
(``BotStartedSpeakingFrame`` .. ``BotStoppedSpeakingFrame``) or a key press stop it, and it
restarts from zero when both fall silent. While the call is ``processing`` (the caller's turn is
being answered) the bot does not prompt. After ``after_s`` of silence the bot speaks the prompt;
after ``max_prompts`` unanswered prompts and ``after_s`` more, it speaks the goodbye and hangs up.
Any caller speech answers the prompts. ``max_call_s`` caps the whole call with its own goodbye.

Prompts and goodbyes are queued at the head of the pipeline, so text-to-speech speaks them
wherever this processor sits; the ``HangupFrame`` follows the goodbye and takes effect once the
goodbye has been played.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import Field

from voxpipe import events
from voxpipe.conversation.state import CallState, state_of
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    CancelFrame,
    Direction,
    DTMFFrame,
    EndFrame,
    Frame,
    HangupFrame,
    InputAudioFrame,
    OutputAudioFrame,
    StartFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext

_AUDIO = (InputAudioFrame, OutputAudioFrame)


class SilenceTimeout(FrameProcessor):
    """Counts silence while the call is idle and acts on it."""

    __slots__ = (
        "_bot_speaking",
        "_call_timer",
        "_done",
        "_prompts",
        "_timer",
        "_user_speaking",
        "settings",
    )

    def __init__(self, settings: SilenceTimeoutSettings) -> None:
        super().__init__(name="silence_timeout")
        self.settings = settings
        self._timer: asyncio.TimerHandle | None = None
        self._call_timer: asyncio.TimerHandle | None = None
        self._bot_speaking = False
        self._user_speaking = False
        self._prompts = 0
        self._done = False

    @property
    def prompts(self) -> int:
        """Prompts spoken since the caller last spoke."""
        return self._prompts

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        kind = type(frame)
        if kind not in _AUDIO:
            self._observe(frame)
        await self.push_frame(frame, direction)

    def _observe(self, frame: Frame) -> None:
        if isinstance(frame, StartFrame):
            self._restart()
            if self.settings.max_call_s is not None:
                loop = asyncio.get_running_loop()
                self._call_timer = loop.call_later(self.settings.max_call_s, self._too_long)
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._user_speaking = True
            self._prompts = 0
            self._pause()
        elif isinstance(frame, UserStoppedSpeakingFrame):
            self._user_speaking = False
            self._restart()
        elif isinstance(frame, BotStartedSpeakingFrame):
            self._bot_speaking = True
            self._pause()
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._bot_speaking = False
            self._restart()
        elif isinstance(frame, DTMFFrame):
            self._prompts = 0
            self._restart()
        elif isinstance(frame, EndFrame | HangupFrame | CancelFrame):
            self._finish()

    def _pause(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _restart(self) -> None:
        """Start counting silence from zero, if nobody is speaking."""
        self._pause()
        if self._done or self._bot_speaking or self._user_speaking:
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.settings.after_s, self._silence)

    def _silence(self) -> None:
        self._timer = None
        if self._done:
            return
        if state_of(self.call) is CallState.PROCESSING:
            # The caller spoke and the bot is working on its answer: that is not silence.
            self._restart()
            return
        if self._prompts < self.settings.max_prompts:
            self._prompts += 1
            self.call.log.info(
                "caller silent for %.1f s: prompt %d", self.settings.after_s, self._prompts
            )
            self.task.queue_frame(TTSSpeakFrame(self.settings.prompt))
            # If nothing is spoken (no text-to-speech), the next silence still counts.
            self._restart()
            return
        self.call.log.info("caller silent after %d prompt(s): hanging up", self._prompts)
        events.emit.silence_hangup(self.call)
        self._goodbye(self.settings.goodbye, "silence")

    def _too_long(self) -> None:
        self._call_timer = None
        if not self._done:
            self.call.log.info("call reached max_call_s=%s: hanging up", self.settings.max_call_s)
            self._goodbye(self.settings.max_call_goodbye, "max_call_s")

    def _goodbye(self, text: str, reason: str) -> None:
        self._finish()
        if text:
            self.task.queue_frame(TTSSpeakFrame(text))
        self.task.queue_frame(HangupFrame(reason=reason))

    def _finish(self) -> None:
        self._done = True
        self._pause()
        if self._call_timer is not None:
            self._call_timer.cancel()
            self._call_timer = None

    async def stop(self) -> None:
        self._finish()


class SilenceTimeoutSettings(ProcessorSettings):
    """Prompt a silent caller, then hang up; also cap the call's length."""

    after_s: float = Field(
        10.0, gt=0, description="Silence (nobody speaking) before each prompt, in seconds."
    )
    prompt: str = Field("Are you still there?", description="What the bot says to a silent caller.")
    max_prompts: int = Field(
        1, ge=0, description="Unanswered prompts before the bot says goodbye and hangs up."
    )
    goodbye: str = Field(
        "I can't hear you, so I'll hang up now. Goodbye.",
        description="Said before hanging up on a silent caller (empty: just hang up).",
    )
    max_call_s: float | None = Field(
        None, gt=0, description="Longest the call may last, in seconds (unset: no limit here)."
    )
    max_call_goodbye: str = Field(
        "We have reached the time limit for this call. Goodbye.",
        description="Said before hanging up when max_call_s is reached (empty: just hang up).",
    )

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return SilenceTimeout(self)
