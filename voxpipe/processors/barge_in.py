"""``barge_in``: the caller talks over the bot, and the bot stops.

While the bot speaks (between the ``BotStartedSpeakingFrame`` and ``BotStoppedSpeakingFrame``
that the output transport pushes upstream), caller speech that lasts ``min_speech_ms`` after
the VAD declared it started (and, when ``min_words`` is set, whose interim transcript has that
many words) interrupts: an ``InterruptionFrame`` goes upstream, and the pipeline task flushes
every processor in one step, the transport's outgoing audio included. Speech is measured in
audio time (the caller frames received), so the decision does not depend on the event loop.
A key the caller presses while the bot speaks interrupts at once. The greeting can be
protected. A pipeline without this processor never interrupts.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydantic import Field

from voxpipe import events
from voxpipe.conversation.state import CallState, state_of
from voxpipe.frames import (
    UPSTREAM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    DTMFFrame,
    Frame,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


class BargeIn(FrameProcessor):
    """Interrupts the bot when the caller speaks long enough over it."""

    __slots__ = (
        "_bot_speaking",
        "_fired",
        "_speech_ms",
        "_user_speaking",
        "_words",
        "min_speech_ms",
        "min_words",
        "protect_greeting",
    )

    def __init__(self, *, min_speech_ms: int, min_words: int, protect_greeting: bool) -> None:
        super().__init__(name="barge_in")
        self.min_speech_ms = min_speech_ms
        self.min_words = min_words
        self.protect_greeting = protect_greeting
        self._bot_speaking = False
        self._user_speaking = False
        self._speech_ms = 0.0
        self._words = 0
        self._fired = False

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        kind = type(frame)
        if kind is InputAudioFrame:
            await self.push_frame(frame, direction)
            if self._user_speaking:
                assert isinstance(frame, InputAudioFrame)
                self._speech_ms += len(frame.audio) * 500 / frame.sample_rate / frame.channels
                await self._check()
            return
        if kind is DTMFFrame:
            # A key pressed over the bot interrupts at once (before the key goes on, so that
            # the interruption cannot cancel the answer to it).
            await self._check(key=True)
        await self.push_frame(frame, direction)
        if kind is UserStartedSpeakingFrame:
            self._user_speaking = True
            self._speech_ms = 0.0
            self._words = 0
            await self._check()
        elif kind is UserStoppedSpeakingFrame:
            self._user_speaking = False
        elif kind is InterimTranscriptionFrame or kind is TranscriptionFrame:
            assert isinstance(frame, InterimTranscriptionFrame | TranscriptionFrame)
            self._words = len(frame.text.split())
            await self._check()
        elif kind is BotStartedSpeakingFrame:
            self._bot_speaking = True
            self._fired = False
            await self._check()
        elif kind is BotStoppedSpeakingFrame:
            self._bot_speaking = False

    async def _check(self, *, key: bool = False) -> None:
        """Interrupt once per stretch of bot speech, when the caller has said enough (or
        pressed a key)."""
        said_enough = (
            self._user_speaking
            and self._speech_ms >= self.min_speech_ms
            and self._words >= self.min_words
        )
        if (
            self._bot_speaking
            and (key or said_enough)
            and not self._fired
            and not (self.protect_greeting and state_of(self.call) is CallState.GREETING)
        ):
            self._fired = True
            if key:
                self.call.log.info("barge-in: the caller pressed a key")
            else:
                self.call.log.info("barge-in after %.0f ms of caller speech", self._speech_ms)
            events.emit.barge_in(self.call)
            await self.push_frame(InterruptionFrame(), UPSTREAM)


class BargeInSettings(ProcessorSettings):
    """Let the caller interrupt the bot by speaking over it."""

    enabled: bool = Field(True, description="Whether the caller can interrupt at all.")
    min_speech_ms: int = Field(
        300,
        ge=0,
        description="Caller speech needed over the bot, counted from the VAD's start, in ms.",
    )
    min_words: int = Field(
        0,
        ge=0,
        description="Words of interim transcript needed as well (0: speech alone is enough); "
        "needs an stt step before this one.",
    )
    protect_greeting: bool = Field(True, description="The greeting cannot be interrupted.")

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        if not self.enabled:
            return FrameProcessor(name="barge_in")
        return BargeIn(
            min_speech_ms=self.min_speech_ms,
            min_words=self.min_words,
            protect_greeting=self.protect_greeting,
        )
