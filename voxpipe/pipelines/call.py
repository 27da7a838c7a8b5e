"""The per-call context every processor of a call shares: identity, logger, dialogue history."""

from __future__ import annotations

import logging
import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Protocol

from voxpipe.caller_context import CallerContext
from voxpipe.frames import Utterance


class CallLogger(logging.LoggerAdapter):  # type: ignore[type-arg]
    """A logger that names the call (and the bot) on every line."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = kwargs.setdefault("extra", {})
        extra.update(self.extra or {})
        return f"[call {self.extra['call_id'] if self.extra else '-'}] {msg}", kwargs


class CallController(Protocol):
    """Carries out call control on the Asterisk side (ARI), when the call has one."""

    async def transfer(self, context: str, extension: str, priority: int = 1) -> None:
        """Blind-transfer the caller to ``context``/``extension``."""

    async def hangup(self) -> None:
        """Hang up the caller's channel."""


@dataclass(slots=True, eq=False)
class SpeechLedger:
    """What the bot sent to be spoken in the reply it is speaking, and what the caller heard.

    The LLM opens a ledger page for each stretch of its speech (``begin``, with the list it
    keeps for that reply); text-to-speech records each sentence it sends (``sent``); the output
    transport counts the frames played on each ``Utterance``, so its ``spoken_text()`` is what
    reached the caller.
    """

    utterances: list[Utterance] = field(default_factory=list)

    def begin(self, utterances: list[Utterance]) -> None:
        """Record the sentences sent from now on in ``utterances`` (a new reply)."""
        self.utterances = utterances

    def sent(self, utterance: Utterance) -> None:
        """A sentence of the reply went to the caller (its audio carries ``utterance``)."""
        self.utterances.append(utterance)


@dataclass(slots=True, eq=False)
class Call:
    """One phone call: what every processor in that call's pipeline may read and update.

    ``history`` is the dialogue in the form the LLM processors use, provider-neutral and
    JSON-ready: ``{"role": "user" | "assistant", "content": str}`` messages (the assistant's
    text as the caller heard it) and, for each round of tool calls, just before the text of the
    reply that made it, ``{"role": "tool", "calls": [{"id": str, "name": str, "arguments":
    dict, "result": str}]}`` (no ``content``). Each provider renders tool entries in its own
    shape (Anthropic: tool_use / tool_result blocks; chat completions: tool_calls / tool).

    ``caller`` is who is calling (``voxpipe.caller_context``), when Asterisk told the bot.

    The channels between the call's processors are fields: ``speech`` (the reply being spoken:
    sent by text-to-speech, read by the LLM for its history), ``state`` (where the conversation
    stands, a ``voxpipe.conversation.state.CallState`` value, moved by the conversation tracker)
    and ``outcome`` (how the call ends, once decided: ``voxpipe.sessions.outcomes``). ``data``
    holds the rest (the trace id, the ARI channel, the time to build the pipeline).
    """

    call_id: str = field(default_factory=lambda: str(uuid.uuid4()))
    bot: str = ""
    sample_rate: int = 16000
    started_at: float = field(default_factory=time.monotonic)
    history: list[dict[str, Any]] = field(default_factory=list)
    speech: SpeechLedger = field(default_factory=SpeechLedger)
    state: str = "connected"
    outcome: str | None = None
    data: dict[str, Any] = field(default_factory=dict)
    controller: CallController | None = None
    caller: CallerContext | None = None
    log: CallLogger = field(init=False)

    def __post_init__(self) -> None:
        self.log = CallLogger(
            logging.getLogger("voxpipe.call"),
            {"call_id": self.call_id, "bot": self.bot},
        )

    @property
    def duration_s(self) -> float:
        """Seconds since the call started."""
        return time.monotonic() - self.started_at
