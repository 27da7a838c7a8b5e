"""The answer to ``GET /calls/{uuid}/outcome``: how a call ended, for the dialplan.

Asterisk asks the moment the bot closes the socket, while the bot's side of the call may still
be winding down (or, with several workers, while the worker that carried it is still writing
its record to Redis). So a call still known to be in progress is waited for, briefly, rather
than answered ``unknown``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

from voxpipe.http.state import CallTracker
from voxpipe.sessions.outcomes import ERROR, OutcomeLog

# How long a request waits for the outcome of a call still in progress, and how often it looks.
WAIT_S = 2.0
POLL_S = 0.05

RecordFetcher = Callable[[str], Awaitable[dict[str, Any] | None]]


class OutcomeLookup:
    """Finds a call's outcome in this process's log, else in the shared session store."""

    def __init__(
        self,
        log: OutcomeLog,
        tracker: CallTracker,
        *,
        shared_record: RecordFetcher | None = None,
        wait_s: float = WAIT_S,
    ) -> None:
        self.log = log
        self.tracker = tracker
        self.shared_record = shared_record
        self.wait_s = wait_s

    async def outcome(self, call_id: str) -> str | None:
        """The call's outcome line; ``None`` for a call nobody knows, or still going on after
        ``wait_s``."""
        deadline = time.monotonic() + self.wait_s
        while True:
            found, live = await self._look(call_id)
            if found is not None:
                return found
            if not live or time.monotonic() >= deadline:
                return None
            await asyncio.sleep(POLL_S)

    async def _look(self, call_id: str) -> tuple[str | None, bool]:
        """(the outcome if known, whether the call is still in progress somewhere)."""
        found = self.log.get(call_id)
        if found is not None:
            return found, False
        live = call_id in self.tracker.calls
        if self.shared_record is None:
            return None, live
        try:
            record = await self.shared_record(call_id)
        except Exception:
            return None, live
        if record is None:
            return None, live
        outcome: str | None = record.get("outcome")
        if outcome is None and record.get("state") == "ended":
            outcome = ERROR  # a failed call's record, kept from before outcomes were settled
        return outcome, live or outcome is None
