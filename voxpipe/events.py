"""Process-wide call events, for metrics and the HTTP API.

Processors and transports report what happens (``events.emit.call_started(call)``); observers
(the Prometheus metrics, tests) subscribe with ``events.subscribe(observer)``. With no observer
subscribed, reporting an event costs one empty loop.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call


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
