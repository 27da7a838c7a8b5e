"""Process-wide call events, for metrics and the HTTP API.

Processors and transports report what happens (``events.emit.call_started(call)``); observers
(the Prometheus metrics, tests) subscribe with ``events.subscribe(observer)``. With no observer
subscribed, reporting an event costs one empty loop.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call


@dataclass(slots=True)
class Turn:
    """One turn of a call's dialogue.

    ``speaker`` is ``caller`` (a final transcript, as the LLM took it), ``dtmf`` (keys the
    caller pressed) or ``bot`` (what the bot said, sentences as its voice spoke them); ``heard``
    is what the caller heard of a bot turn that was cut short (by the caller or the end of the
    call), else ``None``. ``started_at`` is a Unix time (for the caller: when they began to
    speak, filled in by whoever records the turn when the reporter does not know it);
    ``latency_ms`` is, for a bot turn, the wait from the end of the caller's speech to its
    first audio.
    """

    speaker: str
    text: str
    heard: str | None = None
    started_at: float | None = None
    latency_ms: float | None = None


@dataclass(slots=True)
class ToolUse:
    """A tool the LLM called: its arguments and result (``error``: the tool failed)."""

    name: str
    arguments: dict[str, Any]
    result: str
    duration_ms: float = 0.0
    error: bool = False
    at: float = field(default=0.0)


class Observer:
    """Override the events you care about; every method has a no-op default."""

    def call_started(self, call: Call) -> None:
        """A call was accepted and its pipeline started."""

    def call_ended(self, call: Call, reason: str) -> None:
        """A call ended (``reason``: who hung up, or the error)."""

    def call_rejected(self, reason: str) -> None:
        """A connection was refused (``max_calls``, ``allow_from``, bad first message, draining)."""

    def call_state(self, call: Call, state: str) -> None:
        """The call moved to a new conversation state."""

    def turn_latency(self, call: Call, seconds: float) -> None:
        """From the end of the caller's speech to the bot's first audio."""

    def turn_lost(self, call: Call, reason: str) -> None:
        """Words the caller said will never be answered (``reason``: which step lost them)."""

    def reply_late(self, call: Call) -> None:
        """The reply to the caller was late: the bot said its filler ("One moment.")."""

    def provider_ttfb(self, call: Call, kind: str, provider: str, seconds: float) -> None:
        """Time to first byte of an STT, LLM or TTS request (``kind`` is stt, llm or tts)."""

    def barge_in(self, call: Call) -> None:
        """The caller interrupted the bot."""

    def silence_hangup(self, call: Call) -> None:
        """The bot hung up on a silent caller."""

    def error(self, call: Call | None, kind: str) -> None:
        """Something failed (``kind``: protocol, provider, processor, ...)."""

    def caller_started_speaking(self, call: Call) -> None:
        """The caller began to speak (voice activity detection)."""

    def turn(self, call: Call, turn: Turn) -> None:
        """A turn of the dialogue is over (see ``Turn``)."""

    def tool_call(self, call: Call, use: ToolUse) -> None:
        """The LLM called a tool and got its result."""

    def records_dropped(self, count: int) -> None:
        """``count`` call records were dropped: the database was away longer than the buffer
        lasted."""


class _Emitter(Observer):
    """Fans each event out to every subscribed observer."""

    def __init__(self) -> None:
        self.observers: list[Observer] = []

    def __getattribute__(self, name: str) -> Any:
        if name.startswith("_") or name == "observers":
            return object.__getattribute__(self, name)
        observers = object.__getattribute__(self, "observers")

        def fan_out(*args: Any) -> None:
            for observer in observers:
                getattr(observer, name)(*args)

        return fan_out


emit: Observer = _Emitter()


def subscribe(observer: Observer) -> None:
    """Start sending events to ``observer``."""
    emit.observers.append(observer)  # type: ignore[attr-defined]


def unsubscribe(observer: Observer) -> None:
    """Stop sending events to ``observer``."""
    observers: list[Observer] = emit.observers  # type: ignore[attr-defined]
    if observer in observers:
        observers.remove(observer)
