"""The per-call runner: links a call's processors, feeds them frames and ends the call.

Frames enter at the head of the chain either directly (``await task.push_frame(frame)``, what a
transport's reader does) or through the head queue (``task.queue_frame(frame)``), where system
frames overtake queued data and control frames. An interruption is one synchronous step: the head
queue and every processor drop their queued interruptible work before anything else runs.
"""

from __future__ import annotations

import asyncio
import collections
import itertools
import logging
import types
from collections.abc import Coroutine, Sequence
from typing import Any

from voxpipe.frames import (
    DOWNSTREAM,
    UPSTREAM,
    CancelFrame,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    HangupFrame,
    InterruptionFrame,
    StartFrame,
    SystemFrame,
    interruptible,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor

log = logging.getLogger("voxpipe.pipeline")


class _Source(FrameProcessor):
    """The head of the chain: upstream frames that nobody consumed arrive here."""

    __slots__ = ("_owner",)

    def __init__(self, owner: PipelineTask) -> None:
        super().__init__(name="source")
        self._owner = owner

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if direction is UPSTREAM:
            await self._owner._on_upstream(frame)
        else:
            await self.push_frame(frame, direction)


class _Sink(FrameProcessor):
    """The tail of the chain: downstream frames that nobody consumed arrive here."""

    __slots__ = ("_owner",)

    def __init__(self, owner: PipelineTask) -> None:
        super().__init__(name="sink")
        self._owner = owner

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if direction is DOWNSTREAM:
            self._owner._on_downstream(frame)
        else:
            await self.push_frame(frame, direction)


def _culprit(exc: BaseException, default: str = "pipeline") -> str:
    """Name the innermost processor on the exception's traceback (or ``default``)."""
    name = default
    tb: types.TracebackType | None = exc.__traceback__
    while tb is not None:
        owner = tb.tb_frame.f_locals.get("self")
        if isinstance(owner, FrameProcessor):
            name = owner.name
        tb = tb.tb_next
    return name


class PipelineTask:
    """Runs one call through its chain of processors, from the start frame to the end."""

    def __init__(self, processors: Sequence[FrameProcessor], call: Call | None = None) -> None:
        self.call = call or Call()
        self.processors = list(processors)
        self._source = _Source(self)
        self._sink = _Sink(self)
        chain: list[FrameProcessor] = [self._source, *self.processors, self._sink]
        for upstream, downstream in itertools.pairwise(chain):
            upstream.link(downstream)
        self._queue: collections.deque[Frame] = collections.deque()
        self._system: collections.deque[Frame] = collections.deque()
        self._wakeup = asyncio.Event()
        self._tasks: set[asyncio.Task[Any]] = set()
        self._done: asyncio.Future[str] = asyncio.get_running_loop().create_future()
        self._finishing = False
        self.end_reason = ""
        self.error: str | None = None

    # --- running ---------------------------------------------------------------------------

    async def run(self) -> str:
        """Start every processor, send the start frame, and wait until the call ends.

        Returns why it ended ("end", "cancel: <reason>", "error: <what>").
        """
        for processor in self.processors:
            processor.attach(self)
        self._source.attach(self)
        self._sink.attach(self)
        try:
            for processor in self.processors:
                await processor.start()
            await self._source.push_frame(
                StartFrame(call_id=self.call.call_id, sample_rate=self.call.sample_rate)
            )
            # Only now: frames queued early (a greeting) must not overtake the start frame.
            self.create_task(self._run_queue(), owner=self._source, name="head-queue")
        except Exception as exc:
            self.fail(exc)
        try:
            return await self._done
        except asyncio.CancelledError:
            # The runner itself was cancelled (a server shutting down): processors still get
            # their ``cancel()`` so that sockets, streams and executors are released.
            if not self._finishing:
                self._finishing = True
                await self._cancel("pipeline task cancelled")
            raise
        finally:
            await self._cleanup()

    @property
    def done(self) -> bool:
        """Whether the call has ended."""
        return self._done.done()

    async def push_frame(self, frame: Frame, direction: Direction = DOWNSTREAM) -> None:
        """Deliver a frame at once at the head (downstream) or the tail (upstream).

        A processor that raises ends this call (as ``fail``), never the caller of this method:
        a transport's reader goes on reading until the call is cancelled.
        """
        if self.done:
            return
        try:
            if direction is DOWNSTREAM:
                await self._source.push_frame(frame, DOWNSTREAM)
            else:
                await self._sink.push_frame(frame, UPSTREAM)
        except Exception as exc:
            self.fail(exc)

    def queue_frame(self, frame: Frame) -> None:
        """Queue a frame at the head of the chain; system frames overtake the others."""
        if self.done:
            return
        (self._system if isinstance(frame, SystemFrame) else self._queue).append(frame)
        self._wakeup.set()

    async def _run_queue(self) -> None:
        system, queue = self._system, self._queue
        while True:
            if system:
                frame = system.popleft()
            elif queue:
                frame = queue.popleft()
            else:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            await self._source.push_frame(frame, DOWNSTREAM)

    # --- interruption, end, cancel, failure ---------------------------------------------------

    def interrupt(self) -> None:
        """The caller barged in: drop every queued interruptible frame in the chain, now."""
        kept = [f for f in self._queue if not interruptible(f)]
        self._queue.clear()
        self._queue.extend(kept)
        for processor in self.processors:
            processor.interrupt()
        self.queue_frame(InterruptionFrame())

    def end(self, reason: str = "") -> None:
        """End the call after everything already queued has been delivered."""
        self.queue_frame(EndFrame(reason=reason))

    def cancel(self, reason: str = "") -> None:
        """End the call at once, dropping whatever is queued."""
        if self.done or self._finishing:
            return
        self._finishing = True
        self.create_task(self._cancel(reason), owner=self._sink, name="cancel")

    def fail(self, exc: BaseException, source: str | None = None) -> None:
        """A processor raised: report it, and end this call (and only this call)."""
        if self.done or self._finishing:
            return
        source = source or _culprit(exc)
        self.error = f"{source}: {exc!r}"
        self.call.log.error("processor %s failed: %r", source, exc, exc_info=exc)
        self._finishing = True
        self.create_task(
            self._fail(ErrorFrame(str(exc), fatal=True, source=source)),
            owner=self._sink,
        )

    async def _fail(self, error: ErrorFrame) -> None:
        try:
            await self._sink.push_frame(error, UPSTREAM)
        except Exception:
            self.call.log.debug("error frame could not reach the transport", exc_info=True)
        await self._cancel(f"error: {error.source}: {error.error}", prefix="")

    async def _cancel(self, reason: str, prefix: str = "cancel: ") -> None:
        try:
            await self._source.push_frame(CancelFrame(reason=reason), DOWNSTREAM)
        except Exception:
            self.call.log.debug("cancel frame failed", exc_info=True)
        for processor in self.processors:
            try:
                await processor.cancel()
            except Exception:
                self.call.log.warning("%s failed to cancel", processor.name, exc_info=True)
        self._finish(prefix + reason)

    async def _stop_all(self, reason: str) -> None:
        for processor in self.processors:
            try:
                await processor.stop()
            except Exception:
                self.call.log.warning("%s failed to stop", processor.name, exc_info=True)
        self._finish(reason)

    def _finish(self, reason: str) -> None:
        if self._done.cancelled():  # the runner was cancelled: record why all the same
            self.end_reason = self.end_reason or reason
        elif not self._done.done():
            self.end_reason = reason
            self._done.set_result(reason)

    async def _cleanup(self) -> None:
        current = asyncio.current_task()
        pending = [t for t in self._tasks if t is not current and not t.done()]
        for task in pending:
            task.cancel()
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    # --- frames that reach either end ------------------------------------------------------

    async def _on_upstream(self, frame: Frame) -> None:
        """Requests that reached the head: an interruption flushes the chain, a fatal error
        ends the call, a hangup or an end is queued at the head (so that what is queued
        before it still plays), a cancel ends the call at once."""
        if isinstance(frame, InterruptionFrame):
            self.interrupt()
        elif isinstance(frame, ErrorFrame):
            if frame.fatal:
                if not self._finishing:
                    self.error = f"{frame.source}: {frame.error}"
                    self.call.log.error("fatal error from %s: %s", frame.source, frame.error)
                    self._finishing = True
                    self.create_task(
                        self._cancel(f"error: {frame.source}: {frame.error}", prefix=""),
                        owner=self._sink,
                    )
            else:
                self.call.log.warning("error from %s: %s", frame.source, frame.error)
                # Send it down the chain too: the processors after the one that failed (the
                # LLM, after speech-to-text) are the ones that can tell the caller and recover.
                self.queue_frame(frame)
        elif isinstance(frame, HangupFrame):
            self.queue_frame(HangupFrame(reason=frame.reason))
        elif isinstance(frame, EndFrame):
            self.end(frame.reason)
        elif isinstance(frame, CancelFrame):
            self.cancel(frame.reason)

    def _on_downstream(self, frame: Frame) -> None:
        if isinstance(frame, EndFrame | HangupFrame):
            if not self._finishing:
                self._finishing = True
                reason = frame.reason or "end"
                self.create_task(self._stop_all(reason), owner=self._sink, name="stop")
        elif isinstance(frame, CancelFrame):
            return

    # --- tasks -----------------------------------------------------------------------------

    def create_task(
        self, coro: Coroutine[Any, Any, Any], *, owner: FrameProcessor, name: str = ""
    ) -> asyncio.Task[Any]:
        """Start a task that belongs to this call; an exception in it fails the call."""
        task = asyncio.get_running_loop().create_task(coro, name=f"{self.call.call_id}:{name}")
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._task_done(t, owner))
        return task

    def _task_done(self, task: asyncio.Task[Any], owner: FrameProcessor) -> None:
        self._tasks.discard(task)
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            # The processor that raised, even when it ran on another's task (a downstream
            # processor called from a QueuedProcessor's worker); else the task's owner.
            owner_name = "pipeline" if owner in (self._source, self._sink) else owner.name
            self.fail(exc, source=_culprit(exc, owner_name))
