"""Frame processors: the links of a bot's chain.

A processor receives frames in ``process_frame`` and passes them on with ``push_frame``, which is a
direct call into the neighbour: no queue and no task per hop. Processors whose work takes time
(synthesis, a network request) derive from ``QueuedProcessor`` and handle their data and control
frames in order on one task of their own, while system frames still pass straight through.
"""

from __future__ import annotations

import asyncio
import collections
import logging
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any

from voxpipe.frames import (
    DOWNSTREAM,
    UPSTREAM,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    SystemFrame,
    interruptible,
)

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.task import PipelineTask

log = logging.getLogger("voxpipe.pipeline")


class FrameProcessor:
    """One link of the chain. Override ``process_frame``; forward what you do not consume."""

    __slots__ = ("_call", "_next", "_prev", "_task", "name")

    def __init__(self, *, name: str | None = None) -> None:
        self.name = name or type(self).__name__
        self._next: FrameProcessor | None = None
        self._prev: FrameProcessor | None = None
        self._task: PipelineTask | None = None
        self._call: Call | None = None

    # --- wiring ----------------------------------------------------------------------------

    def link(self, downstream: FrameProcessor) -> None:
        """Make ``downstream`` this processor's next link."""
        self._next = downstream
        downstream._prev = self

    def attach(self, task: PipelineTask) -> None:
        """Called once when the processor joins a running call's task."""
        self._task = task
        self._call = task.call

    @property
    def task(self) -> PipelineTask:
        """The call's pipeline task (set when the call starts)."""
        if self._task is None:
            raise RuntimeError(f"{self.name} is not part of a running pipeline")
        return self._task

    @property
    def call(self) -> Call:
        """The call this processor serves."""
        return self.task.call

    # --- lifecycle hooks (override as needed) -------------------------------------------------

    async def start(self) -> None:
        """Prepare for the call, before the first frame. Raising here fails the call's start."""

    async def stop(self) -> None:
        """Release resources after the call ended normally (the end frame has drained)."""

    async def cancel(self) -> None:
        """Release resources at once (caller hung up, error, shutdown). Default: ``stop()``."""
        await self.stop()

    def interrupt(self) -> None:
        """Drop queued interruptible work at once (the caller barged in). Must not block."""

    # --- frames ----------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        """Handle one frame. The default passes every frame on unchanged."""
        await self.push_frame(frame, direction)

    async def push_frame(self, frame: Frame, direction: Direction = DOWNSTREAM) -> None:
        """Pass a frame to the neighbour in ``direction``."""
        target = self._next if direction is DOWNSTREAM else self._prev
        if target is not None:
            await target.process_frame(frame, direction)

    async def push_error(self, error: str, *, fatal: bool = False, kind: str = "") -> None:
        """Report a failure upstream; a fatal one ends the call (``kind``: ``ErrorFrame``)."""
        frame = ErrorFrame(error=error, fatal=fatal, source=self.name, kind=kind)
        await self.push_frame(frame, UPSTREAM)

    def create_task(self, coro: Coroutine[Any, Any, Any], name: str = "") -> asyncio.Task[Any]:
        """Start a background task owned by the call: cancelled when the call ends, and a
        failure in it ends the call like an exception in ``process_frame``."""
        return self.task.create_task(coro, owner=self, name=name or self.name)

    def __repr__(self) -> str:
        return f"<{self.name}>"


class QueuedProcessor(FrameProcessor):
    """A processor that handles data and control frames in order on a task of its own.

    Use it when handling a frame takes time (speech synthesis, a request to a provider) so
    that the rest of the chain, and system frames in particular, never wait on it. An
    interruption drops every queued data frame and cancels the one being handled; control
    frames (an end frame, a transfer) keep their place. Override ``handle_frame``.
    """

    __slots__ = ("_current", "_queue", "_wakeup", "_worker")

    def __init__(self, *, name: str | None = None) -> None:
        super().__init__(name=name)
        self._queue: collections.deque[tuple[Frame, Direction]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._worker: asyncio.Task[Any] | None = None
        self._current: Frame | None = None

    def attach(self, task: PipelineTask) -> None:
        # The worker starts here rather than in ``start()``, so that a subclass overriding
        # ``start()`` without calling ``super()`` still gets its frames handled.
        super().attach(task)
        self._worker = self.create_task(self._run(), name=f"{self.name}.worker")

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, SystemFrame):
            await self.handle_system_frame(frame, direction)
            return
        self._queue.append((frame, direction))
        self._wakeup.set()

    async def handle_system_frame(self, frame: SystemFrame, direction: Direction) -> None:
        """Handle a system frame at once, ahead of the queue. The default passes it on."""
        await self.push_frame(frame, direction)

    async def handle_frame(self, frame: Frame, direction: Direction) -> None:
        """Handle one data or control frame, in order. The default passes it on."""
        await self.push_frame(frame, direction)

    @property
    def queued(self) -> int:
        """How many frames wait in this processor's queue."""
        return len(self._queue)

    def interrupt(self) -> None:
        kept = [item for item in self._queue if not interruptible(item[0])]
        self._queue.clear()
        self._queue.extend(kept)
        if self._current is not None and interruptible(self._current) and self._worker is not None:
            # Abandon the frame in hand; the worker restarts with what is left.
            self._worker.cancel()
            self._worker = self.create_task(self._run(), name=f"{self.name}.worker")

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            frame, direction = queue.popleft()
            self._current = frame
            try:
                await self.handle_frame(frame, direction)
            finally:
                self._current = None
            if isinstance(frame, EndFrame) and direction is DOWNSTREAM:
                return

    async def stop(self) -> None:
        if self._worker is not None and not self._worker.done():
            self._worker.cancel()
