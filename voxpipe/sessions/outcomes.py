"""How each call ended (its outcome), kept a few minutes so that the dialplan can ask for it.

With the ``AudioSocket()`` application or ``Dial(AudioSocket/...,g)`` the dialplan goes on
whenever the bot closes the socket, whether the bot meant a transfer or a goodbye. So the
transport settles the outcome on the call *before* it closes the socket, and the HTTP API
answers ``GET /calls/{uuid}/outcome`` with one line the dialplan uses as is:

- ``transfer,<context>,<extension>,<priority>``: the bot handed the caller on;
- ``hangup``: the bot ended the call (a goodbye, the silence timeout, ``max_call_s``);
- ``caller``: the caller hung up;
- ``error``: the call failed (a processor, the protocol, the server shutting down).

The first outcome settled wins: a caller who hangs up while the transfer line plays is a
``caller``. ``OutcomeLog`` keeps the outcomes of this process's calls after they end; with a
Redis session store the ended call's record carries it too, so any worker can answer.
"""

from __future__ import annotations

import collections
import time
from collections.abc import Callable
from typing import TYPE_CHECKING

from voxpipe.events import Observer

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

# How long an outcome stays known after its call ended, in seconds.
RETENTION_S = 300.0
# At most this many outcomes are kept in memory (the oldest go first).
MAX_OUTCOMES = 20_000
HANGUP = "hangup"
CALLER = "caller"
ERROR = "error"


def transfer(context: str, extension: str, priority: int = 1) -> str:
    """The outcome of a blind transfer, as the dialplan's ``Goto()`` takes it."""
    return f"transfer,{context},{extension},{priority}"


def settle(call: Call, outcome: str) -> None:
    """Record how ``call`` ends, unless that is already settled (the first decision wins)."""
    if call.outcome is None:
        call.outcome = outcome


def outcome_of(call: Call) -> str | None:
    """The call's settled outcome, or ``None`` while it is still open."""
    return call.outcome


class OutcomeLog(Observer):
    """The outcomes of this process's recent calls, by call UUID, for ``retention_s``.

    It is a ``voxpipe.events`` observer: each ``call_ended`` records the call's outcome (``error``
    when nothing settled one). At most ``max_entries`` are kept; older ones are dropped first.
    """

    def __init__(
        self,
        retention_s: float = RETENTION_S,
        max_entries: int = MAX_OUTCOMES,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.retention_s = retention_s
        self.max_entries = max_entries
        self._clock = clock
        self._outcomes: collections.OrderedDict[str, tuple[float, str]] = collections.OrderedDict()

    def call_ended(self, call: Call, reason: str) -> None:
        self.record(call.call_id, outcome_of(call) or ERROR)

    def record(self, call_id: str, outcome: str) -> None:
        """Remember ``outcome`` for ``call_id`` from now on."""
        self._outcomes.pop(call_id, None)
        self._outcomes[call_id] = (self._clock() + self.retention_s, outcome)
        while len(self._outcomes) > self.max_entries:
            self._outcomes.popitem(last=False)
        self._expire()

    def get(self, call_id: str) -> str | None:
        """The outcome of an ended call, while it is retained."""
        self._expire()
        entry = self._outcomes.get(call_id)
        return entry[1] if entry is not None else None

    def __len__(self) -> int:
        self._expire()
        return len(self._outcomes)

    def _expire(self) -> None:
        now = self._clock()
        outcomes = self._outcomes
        while outcomes and next(iter(outcomes.values()))[0] <= now:
            outcomes.popitem(last=False)
