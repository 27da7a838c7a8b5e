"""The conversation tracker: drives a call's state machine from the frames it sees.

``Bot.create_pipeline`` puts one just before the output transport, so it sees what the bot is about
to say going down (LLM responses, transfers, the end) and what the caller hears coming back up
(bot started/stopped speaking). It saves the call's record to the session store when the state
or the dialogue history changes, and removes it when the call ends normally. It also reports the
bot's turns, the keys the caller pressed and the tools the LLM called (``TurnLog``).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.conversation.state import CallState, move, state_of
from voxpipe.conversation.turns import TurnLog
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    DTMFFrame,
    DTMFInputFrame,
    Frame,
    InputAudioFrame,
    InterruptionFrame,
    LLMResponseStartFrame,
    OutputAudioFrame,
    StartFrame,
    ToolCallFrame,
    TranscriptionFrame,
    TransferFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.sessions.store import SessionStore

_AUDIO = (InputAudioFrame, OutputAudioFrame)


class ConversationTracker(FrameProcessor):
    """Moves the call through its states and keeps the session store up to date."""

    __slots__ = (
        "_greeting_left",
        "_greeting_text",
        "_history_mark",
        "_store",
        "_turn_ended_at",
        "_turns",
    )

    def __init__(self, store: SessionStore, *, greeting: str | None) -> None:
        super().__init__(name="conversation")
        self._store = store
        # Words of the greeting whose audio text-to-speech has not finished producing: the
        # greeting lasts until they all have been played, even across pauses between sentences.
        self._greeting_text = " ".join(greeting.split()) if greeting else ""
        self._greeting_left = len(self._greeting_text.split())
        self._history_mark: tuple[int, int] = (0, 0)
        # When the caller last stopped speaking, until the bot's next audio: the turn latency.
        self._turn_ended_at: float | None = None
        self._turns = TurnLog()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if type(frame) in _AUDIO:
            if type(frame) is OutputAudioFrame and frame.utterance is not None:
                self._turns.utterance(self.call, frame.utterance)
            await self.push_frame(frame, direction)
            return
        self._measure_turn(frame)
        self._log_turn(frame)
        target = self._next_state(frame)
        changed = target is not None and move(self.call, target)
        if self._history_changed() or changed:
            self._store.save(self.call)
        await self.push_frame(frame, direction)

    def _measure_turn(self, frame: Frame) -> None:
        """Report the time from the end of the caller's speech to the bot's first audio."""
        if isinstance(frame, UserStoppedSpeakingFrame) or _is_input(frame):
            self._turn_ended_at = time.monotonic()
        elif isinstance(frame, UserStartedSpeakingFrame):
            self._turn_ended_at = None
        elif isinstance(frame, BotStartedSpeakingFrame) and self._turn_ended_at is not None:
            latency = time.monotonic() - self._turn_ended_at
            events.emit.turn_latency(self.call, latency)
            self._turns.latency(latency)
            self._turn_ended_at = None

    def _log_turn(self, frame: Frame) -> None:
        """Feed the turn log: the caller speaking ends the bot's turn, and so on."""
        if isinstance(frame, UserStartedSpeakingFrame):
            events.emit.caller_started_speaking(self.call)
        elif isinstance(frame, UserStoppedSpeakingFrame | TranscriptionFrame):
            self._turns.close(self.call)
        elif isinstance(frame, InterruptionFrame):
            self._turns.close(self.call, cut_short=True)
        elif isinstance(frame, BotStoppedSpeakingFrame):
            self._turns.bot_stopped()
        elif isinstance(frame, DTMFFrame):
            self._turns.digit(self.call, frame.digit, collected=frame.collected)
        elif isinstance(frame, DTMFInputFrame):
            self._turns.keys(self.call, frame.digits)
        elif isinstance(frame, ToolCallFrame):
            self._turns.tool(self.call, frame)

    def _next_state(self, frame: Frame) -> CallState | None:
        """The state this frame leads to from the current one, if any."""
        state = state_of(self.call)
        if isinstance(frame, StartFrame):
            return CallState.GREETING if self._greeting_text else CallState.LISTENING
        if isinstance(frame, TTSStoppedFrame):
            if state is CallState.GREETING:
                self._greeting_left -= len(frame.text.split())
                if self._greeting_text.endswith(frame.text):
                    self._greeting_left = 0  # the last sentence (an unspeakable one was skipped)
            return None
        if isinstance(frame, TranscriptionFrame) or _is_input(frame):
            return CallState.PROCESSING if state is CallState.LISTENING else None
        if isinstance(frame, LLMResponseStartFrame):
            # A reply beginning during the greeting means the greeting is over.
            return CallState.PROCESSING if state in _BEFORE_REPLY else None
        if isinstance(frame, BotStartedSpeakingFrame):
            return CallState.SPEAKING if state in _BEFORE_SPEECH else None
        if isinstance(frame, BotStoppedSpeakingFrame):
            if state is CallState.GREETING:
                return CallState.LISTENING if self._greeting_left <= 0 else None
            return CallState.LISTENING if state is CallState.SPEAKING else None
        if isinstance(frame, InterruptionFrame):
            return CallState.LISTENING if state in _CUT_SHORT else None
        if isinstance(frame, TransferFrame):
            return CallState.TRANSFERRING
        return None

    def _history_changed(self) -> bool:
        history = self.call.history
        mark = (len(history), len(str(history[-1].get("content", ""))) if history else 0)
        if mark == self._history_mark:
            return False
        self._history_mark = mark
        return True

    async def stop(self) -> None:
        self._turns.close(self.call, cut_short=True)
        move(self.call, CallState.ENDED)
        self._store.end(self.call)

    async def cancel(self) -> None:
        self._turns.close(self.call, cut_short=True)
        # A failed call keeps its last record (until the TTL) for whoever investigates it.
        move(self.call, CallState.ENDED)
        self._store.end(self.call, keep=self.task.error is not None)


_BEFORE_REPLY = frozenset({CallState.LISTENING, CallState.GREETING})
_BEFORE_SPEECH = frozenset({CallState.LISTENING, CallState.PROCESSING})
_CUT_SHORT = frozenset({CallState.GREETING, CallState.PROCESSING})


def create_tracker(call: Call, store: SessionStore, greeting: str | None) -> ConversationTracker:
    """The tracker for one call: the bot's session store, and whether (and what) it greets."""
    from voxpipe.caller_context import render

    return ConversationTracker(store, greeting=greeting and render(greeting, call.caller))


def _is_input(frame: Frame) -> bool:
    """Keys the LLM takes as the caller's turn: an input a ``dtmf`` step gathered, or a key
    no such step took."""
    return isinstance(frame, DTMFInputFrame) or (
        isinstance(frame, DTMFFrame) and not frame.collected
    )
