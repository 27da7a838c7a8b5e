"""``dtmf``: gather the caller's keys into one input ("enter your order number, then pound").

Keys are gathered until the ``terminator`` (``#``; it is not part of the input), ``max_digits``
keys, or ``timeout_ms`` after the last key; then one ``DTMFInputFrame`` goes downstream, which
the LLM takes as the caller's turn ``[pressed 12345]``. Each key still travels on as a
``DTMFFrame`` (marked ``collected``), so the silence timer, barge-in and call records see it.
The terminator pressed alone is an input of its own (``[pressed #]``), and so is a key of
``at_once`` pressed first (a one-key menu choice, "press 0 for an operator", answered without
waiting ``timeout_ms``; pressed after other keys it is gathered as usual). Keys gathered when the
call ends are delivered first. Without this step, each key is an input of its own.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from pydantic import Field, field_validator

from voxpipe.frames import (
    DOWNSTREAM,
    CancelFrame,
    Direction,
    DTMFFrame,
    DTMFInputFrame,
    EndFrame,
    Frame,
    HangupFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


class DTMFCollector(FrameProcessor):
    """Gathers keys into one ``DTMFInputFrame``."""

    __slots__ = ("_digits", "_timer", "at_once", "max_digits", "terminator", "timeout_s")

    def __init__(
        self,
        *,
        max_digits: int | None,
        terminator: str | None,
        timeout_ms: int,
        at_once: str = "",
    ) -> None:
        super().__init__(name="dtmf")
        self.max_digits = max_digits
        self.terminator = terminator
        self.at_once = at_once
        self.timeout_s = timeout_ms / 1000
        self._digits = ""
        self._timer: asyncio.TimerHandle | None = None

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, DTMFFrame) and direction is DOWNSTREAM and not frame.collected:
            frame.collected = True
            await self.push_frame(frame, direction)
            await self._key(frame.digit)
            return
        if isinstance(frame, EndFrame | HangupFrame) and direction is DOWNSTREAM:
            await self._deliver()
        elif isinstance(frame, CancelFrame):
            self._disarm()
        await self.push_frame(frame, direction)

    async def _key(self, digit: str) -> None:
        self._disarm()
        if digit == self.terminator:
            if not self._digits:
                self._digits = digit
            await self._deliver()
            return
        if not self._digits and digit in self.at_once:
            self._digits = digit
            await self._deliver()
            return
        self._digits += digit
        if self.max_digits is not None and len(self._digits) >= self.max_digits:
            await self._deliver()
            return
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self.timeout_s, self._timed_out)

    def _timed_out(self) -> None:
        self._timer = None
        self.create_task(self._deliver(), name="dtmf.timeout")

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    async def _deliver(self) -> None:
        self._disarm()
        digits, self._digits = self._digits, ""
        if digits:
            self.call.log.info("caller entered %r", digits)
            await self.push_frame(DTMFInputFrame(digits))

    async def cancel(self) -> None:
        self._disarm()

    async def stop(self) -> None:
        self._disarm()


class DTMFSettings(ProcessorSettings):
    """Gather the caller's keys into one input (an order number, a menu choice)."""

    max_digits: int | None = Field(
        None, ge=1, le=64, description="Deliver the input once this many keys are in."
    )
    terminator: str | None = Field(
        "#",
        description="The key that ends the input (not part of it); null for none.",
    )
    timeout_ms: int = Field(
        3000,
        ge=100,
        le=60000,
        description="Deliver what was entered this long after the last key, in ms.",
    )

    at_once: str = Field(
        "",
        description="Keys that, pressed first, are a whole input at once (a one-key menu "
        'choice: "0" for an operator), without waiting timeout_ms; after other keys they are '
        'gathered as usual. E.g. "0*".',
    )

    @field_validator("at_once")
    @classmethod
    def _keys(cls, value: str) -> str:
        bad = sorted({k for k in value.upper() if k not in "0123456789*#ABCD"})
        if bad:
            raise ValueError(f"at_once lists keys 0-9, *, # or A-D (got {''.join(bad)!r})")
        return value.upper()

    @field_validator("terminator")
    @classmethod
    def _one_key(cls, value: str | None) -> str | None:
        if value is not None and (len(value) != 1 or value.upper() not in "0123456789*#ABCD"):
            raise ValueError(f"the terminator is one key: 0-9, *, # or A-D (got {value!r})")
        return None if value is None else value.upper()

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return DTMFCollector(
            max_digits=self.max_digits,
            terminator=self.terminator,
            timeout_ms=self.timeout_ms,
            at_once=self.at_once,
        )
