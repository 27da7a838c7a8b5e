"""The call state machine: where a conversation stands, kept in ``call.state``.

Connected -> Greeting -> Listening -> Processing -> Speaking -> (Listening | Transferring) -> Ended.
A transition that the machine does not allow is rejected and logged, never raised: a stray frame
must not end a call. Every accepted change is reported with ``events.emit.call_state``.
"""

from __future__ import annotations

import enum
from typing import TYPE_CHECKING

from voxpipe import events

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call


class CallState(enum.StrEnum):
    """The stages of a conversation."""

    CONNECTED = "connected"
    GREETING = "greeting"
    LISTENING = "listening"
    PROCESSING = "processing"
    SPEAKING = "speaking"
    TRANSFERRING = "transferring"
    ENDED = "ended"


S = CallState

ALLOWED: dict[CallState, frozenset[CallState]] = {
    S.CONNECTED: frozenset({S.GREETING, S.LISTENING, S.ENDED}),
    # Greeting -> Processing: a reply began (the caller spoke during the greeting).
    S.GREETING: frozenset({S.LISTENING, S.PROCESSING, S.TRANSFERRING, S.ENDED}),
    # Listening -> Speaking: the bot speaks without an LLM turn (a silence prompt).
    S.LISTENING: frozenset({S.PROCESSING, S.SPEAKING, S.TRANSFERRING, S.ENDED}),
    # Processing -> Listening: the turn produced no speech, or the caller cut it short.
    S.PROCESSING: frozenset({S.SPEAKING, S.LISTENING, S.TRANSFERRING, S.ENDED}),
    S.SPEAKING: frozenset({S.LISTENING, S.TRANSFERRING, S.ENDED}),
    # Transferring -> Listening: the transfer failed and the bot takes the caller back.
    S.TRANSFERRING: frozenset({S.LISTENING, S.ENDED}),
    S.ENDED: frozenset(),
}


def state_of(call: Call) -> CallState:
    """The call's current state (``connected`` before anything happened)."""
    state = call.state
    return state if isinstance(state, CallState) else CallState(state)


def can_move(call: Call, new: CallState) -> bool:
    """Whether ``new`` is a valid next state (staying put counts as valid)."""
    current = state_of(call)
    return new is current or new in ALLOWED[current]


def move(call: Call, new: CallState) -> bool:
    """Move the call to ``new``; return whether the state changed.

    Staying in the same state is a silent no-op. An invalid transition is logged and ignored.
    """
    current = state_of(call)
    if new is current:
        return False
    if new not in ALLOWED[current]:
        call.log.warning("call state: %s -> %s rejected", current.value, new.value)
        return False
    call.state = new
    call.log.debug("call state: %s -> %s", current.value, new.value)
    events.emit.call_state(call, new.value)
    return True
