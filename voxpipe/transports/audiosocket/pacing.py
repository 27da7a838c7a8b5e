"""One 20 ms clock for every call in the process.

Asterisk plays what it receives as it arrives, so bot audio must leave at real time: one frame
every 20 ms on a monotonic clock. A timer per call would cost 500 sleeping tasks and 500 wake-ups
per slot at 500 calls; one ticker wakes once per slot and calls each paced output's ``tick``, a
plain function that sends what is due by then (each output keeps its own schedule, so audio
that arrives at real time can also leave the moment it arrives, between two passes). That is
what lets one process carry many calls.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Protocol

FRAME_S = 0.02
# After a stall longer than this (a blocked loop), an output's schedule restarts from now rather
# than sending the missed slots in a burst.
MAX_CATCH_UP_S = 0.1

log = logging.getLogger("voxpipe.audiosocket")


class Paced(Protocol):
    """Something that sends at most one frame per slot."""

    def tick(self, now: float) -> None:
        """A pass of the clock at ``now`` (``time.monotonic()``): send what is due."""


class Ticker:
    """Calls ``tick`` on every subscriber once per slot, for as long as it has subscribers.

    A pass that comes late (the loop was busy) tells the outputs the real time, and each
    sends what it missed up to ``MAX_CATCH_UP_S``; the passes keep their 20 ms grid.
    """

    def __init__(self, period_s: float = FRAME_S) -> None:
        self.period_s = period_s
        self._subscribers: dict[Paced, None] = {}
        self._task: asyncio.Task[None] | None = None

    def subscribe(self, paced: Paced) -> None:
        """Start calling ``paced.tick`` every slot (starts the clock if it was idle)."""
        self._subscribers[paced] = None
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run(), name="audio-ticker")

    def unsubscribe(self, paced: Paced) -> None:
        """Stop calling ``paced.tick``; the clock stops when nobody is left."""
        self._subscribers.pop(paced, None)
        if not self._subscribers and self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        clock = time.monotonic  # not loop.time(): uvloop's stands still while a pass runs
        period = self.period_s
        slot = clock() + period
        while self._subscribers:
            await asyncio.sleep(max(0.0, slot - clock()))
            now = clock()
            self._serve(now)
            slot += period
            if slot <= now:  # passes were missed: the next one keeps the grid
                slot += (now - slot) // period * period + period

    def _serve(self, now: float) -> None:
        for paced in list(self._subscribers):
            try:
                paced.tick(now)
            except Exception:
                log.exception("paced output failed; it is no longer served")
                self._subscribers.pop(paced, None)


_tickers: dict[asyncio.AbstractEventLoop, Ticker] = {}


def ticker() -> Ticker:
    """The ticker of the running event loop (one per process in practice)."""
    loop = asyncio.get_running_loop()
    found = _tickers.get(loop)
    if found is None:
        for old in [old for old in _tickers if old.is_closed()]:
            del _tickers[old]
        found = _tickers[loop] = Ticker()
    return found
