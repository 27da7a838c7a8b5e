"""The bot's turns as the caller heard them, for ``events.turn`` (and so for call records).

The conversation tracker, just before the output transport, sees every sentence the bot's voice
speaks (each ``OutputAudioFrame`` carries its sentence's ``Utterance``): the greeting, replies,
tool announcements, silence prompts, fillers. Sentences in a row make one bot turn; the turn is
over when the caller has spoken (the VAD's stop, or a transcript), when the caller cut it
short (an interruption: what was played of it is then final), when the bot speaks again after
``PAUSE_S`` of quiet (silence prompts), or when the call ends. A turn
cut short records what the caller heard of it. A key the caller pressed is a ``dtmf`` turn
of its own, or, with a ``dtmf`` step, the keys it gathered into one input are (when the first
was pressed); either ends the bot's turn, as speech does.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from voxpipe import events
from voxpipe.events import ToolUse, Turn
from voxpipe.frames import ToolCallFrame, Utterance

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

# Bot speech after this long a quiet spell (the bot stopped speaking) is a new turn.
PAUSE_S = 1.0


class TurnLog:
    """Gathers the current bot turn and the keys being pressed; reports each when it is over."""

    __slots__ = (
        "_digits",
        "_digits_at",
        "_last",
        "_latency_ms",
        "_quiet_since",
        "_started_at",
        "_utterances",
    )

    def __init__(self) -> None:
        self._utterances: list[Utterance] = []
        self._last: Utterance | None = None
        self._started_at = 0.0
        self._latency_ms: float | None = None
        self._digits = ""
        self._digits_at = 0.0
        self._quiet_since: float | None = None

    def utterance(self, call: Call, utterance: Utterance) -> None:
        """A frame of bot audio for ``utterance`` is on its way to the caller."""
        if utterance is self._last:
            return
        self._last = utterance
        quiet = self._quiet_since
        if quiet is not None:
            self._quiet_since = None
            if time.monotonic() - quiet >= PAUSE_S:
                self.close(call)
        if not self._utterances:
            self._started_at = time.time()
        self._utterances.append(utterance)

    def bot_stopped(self) -> None:
        """The bot's audio stopped (its queue ran dry, or was dropped)."""
        self._quiet_since = time.monotonic()

    def latency(self, seconds: float) -> None:
        """The bot's first audio came ``seconds`` after the caller stopped speaking."""
        if self._latency_ms is None:
            self._latency_ms = round(seconds * 1000, 1)

    def digit(self, call: Call, digit: str, *, collected: bool = False) -> None:
        """The caller pressed a key (``collected``: a ``dtmf`` step gathers it into an input)."""
        if not self._digits:
            self._digits_at = time.time()
        if collected:
            self._digits += digit
            return
        self.close(call)
        events.emit.turn(call, Turn("dtmf", digit, started_at=time.time()))

    def keys(self, call: Call, digits: str) -> None:
        """A ``dtmf`` step delivered the keys it gathered as one input."""
        started = self._digits_at if self._digits else time.time()
        self._digits = ""
        self.close(call)
        events.emit.turn(call, Turn("dtmf", digits, started_at=started))

    def tool(self, call: Call, frame: ToolCallFrame) -> None:
        """The LLM called a tool."""
        use = ToolUse(
            frame.name, frame.arguments, frame.result, frame.duration_ms, frame.error, time.time()
        )
        events.emit.tool_call(call, use)

    def close(self, call: Call, *, cut_short: bool = False) -> None:
        """The bot's turn is over; ``cut_short``: interrupted, or the call ended, so what was
        played of it is all the caller heard. (Keys being gathered are reported by ``keys``.)"""
        utterances = self._utterances
        if not utterances:
            self._latency_ms = None
            return
        text = " ".join(u.text for u in utterances if u.text)
        heard: str | None = None
        if cut_short:
            heard = " ".join(t for t in (u.spoken_text() for u in utterances) if t)
            if heard == text:
                heard = None
        turn = Turn("bot", text, heard, self._started_at, self._latency_ms)
        self._utterances = []
        self._latency_ms = None
        events.emit.turn(call, turn)
