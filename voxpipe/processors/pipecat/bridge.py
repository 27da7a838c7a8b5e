"""Runs one Pipecat processor for one voxpipe call, and translates frames both ways.

Imported only when a bot with a ``pipecat`` step is prepared (it imports Pipecat itself).

``PipecatHost`` links ``inlet -> the Pipecat processor -> outlet`` in a Pipecat ``Pipeline`` and
sets it up as a ``PipelineWorker`` would (a task manager, a clock, the call's audio rates), then
sends it a Pipecat ``StartFrame``. The inlet and outlet run in Pipecat's direct mode: a frame
the service pushes reaches the host's callback at once, on the service's own task. Frames keep
their Pipecat family: a voxpipe frame with no Pipecat equivalent travels through the service
inside a carrier frame of its family, so it keeps its place behind the service's queued work.

Translation (``to_pipecat`` / ``from_pipecat``): caller audio, the VAD's started/stopped
speaking (as Pipecat's ``VADUser*`` and ``User*`` pair), interim and final transcriptions,
text, LLM text and response markers, speech requests, bot audio (resampled to the pipeline
rate, with its ``Utterance`` kept), DTMF and interruptions. A voxpipe frame that comes back out
of the service unchanged is given back as the very same voxpipe frame.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from pipecat.audio.dtmf.types import KeypadEntry
from pipecat.clocks.system_clock import SystemClock
from pipecat.frames import frames as pf
from pipecat.pipeline.pipeline import Pipeline
from pipecat.processors.frame_processor import (
    FrameDirection,
    FrameProcessor,
    FrameProcessorSetup,
)
from pipecat.utils.asyncio.task_manager import TaskManager

from voxpipe import frames as vx
from voxpipe.processors.audio import resample_pcm16

log = logging.getLogger("voxpipe.pipecat")

DOWN = FrameDirection.DOWNSTREAM
UP = FrameDirection.UPSTREAM

Callback = Callable[[pf.Frame], Awaitable[None]]


# --- carriers: voxpipe frames travelling through a Pipecat processor ----------------------------


@dataclass
class CarriedSystemFrame(pf.SystemFrame):
    """A voxpipe system frame with no Pipecat equivalent, passing through a Pipecat processor."""

    frame: Any = None


@dataclass
class CarriedDataFrame(pf.DataFrame):
    """A voxpipe data frame with no Pipecat equivalent (dropped by an interruption, as it
    would be in voxpipe)."""

    frame: Any = None


@dataclass
class CarriedControlFrame(pf.ControlFrame):
    """A voxpipe control frame with no Pipecat equivalent (keeps its order)."""

    frame: Any = None


@dataclass
class Marker(pf.ControlFrame):
    """Sent behind a request (a context, a sentence): when it comes out, the request is over."""

    token: int = 0
    start: bool = False


def carry(frame: vx.Frame) -> pf.Frame:
    """``frame`` inside the carrier of its family."""
    if isinstance(frame, vx.SystemFrame):
        return CarriedSystemFrame(frame=frame)
    if isinstance(frame, vx.DataFrame):
        return CarriedDataFrame(frame=frame)
    return CarriedControlFrame(frame=frame)


# --- translation ----------------------------------------------------------------------------------


class Translator:
    """Translates one call's frames; remembers what it sent in, to give the same frames back."""

    __slots__ = ("_companions", "_origin", "_utterances", "sample_rate")

    def __init__(self, sample_rate: int) -> None:
        self.sample_rate = sample_rate
        self._origin: dict[int, vx.Frame] = {}
        self._companions: set[int] = set()
        self._utterances: dict[int, vx.Utterance | None] = {}

    def to_pipecat(self, frame: vx.Frame) -> list[pf.Frame]:
        """The Pipecat frames standing for a voxpipe frame (downstream)."""
        if type(frame) is vx.InputAudioFrame:
            return [pf.InputAudioRawFrame(frame.audio, frame.sample_rate, frame.channels)]
        if isinstance(frame, vx.UserStartedSpeakingFrame):
            return self._pair(
                frame, pf.VADUserStartedSpeakingFrame(), pf.UserStartedSpeakingFrame()
            )
        if isinstance(frame, vx.UserStoppedSpeakingFrame):
            return self._pair(
                frame, pf.VADUserStoppedSpeakingFrame(), pf.UserStoppedSpeakingFrame()
            )
        if isinstance(frame, vx.OutputAudioFrame):
            out = pf.OutputAudioRawFrame(frame.audio, frame.sample_rate, frame.channels)
            self._utterances[out.id] = frame.utterance
            return [out]
        if isinstance(frame, vx.InterruptionFrame):
            return [self._same(frame, pf.InterruptionFrame())]
        if isinstance(frame, vx.TranscriptionFrame):
            return [self._same(frame, pf.TranscriptionFrame(frame.text, "", _now()))]
        if isinstance(frame, vx.InterimTranscriptionFrame):
            return [self._same(frame, pf.InterimTranscriptionFrame(frame.text, "", _now()))]
        if isinstance(frame, vx.TTSSpeakFrame):
            return [self._same(frame, pf.TTSSpeakFrame(frame.text))]
        if isinstance(frame, vx.LLMTextFrame):
            return [self._same(frame, pf.LLMTextFrame(frame.text))]
        if type(frame) is vx.TextFrame:
            return [self._same(frame, pf.TextFrame(frame.text))]
        if isinstance(frame, vx.LLMResponseStartFrame):
            return [self._same(frame, pf.LLMFullResponseStartFrame())]
        if isinstance(frame, vx.LLMResponseEndFrame):
            return [self._same(frame, pf.LLMFullResponseEndFrame())]
        if isinstance(frame, vx.DTMFFrame) and frame.digit in _KEYS:
            return [self._same(frame, pf.InputDTMFFrame(KeypadEntry(frame.digit)))]
        return [carry(frame)]

    def _same(self, frame: vx.Frame, out: pf.Frame) -> pf.Frame:
        self._origin[out.id] = frame
        return out

    def _pair(self, frame: vx.Frame, vad: pf.Frame, turn: pf.Frame) -> list[pf.Frame]:
        # Pipecat's speech services listen to the VAD's frames, its aggregators to the turn's:
        # both go in, and the voxpipe frame comes back once.
        self._origin[turn.id] = frame
        self._companions.add(vad.id)
        return [vad, turn]

    def from_pipecat(self, frame: pf.Frame) -> vx.Frame | None:
        """The voxpipe frame standing for a Pipecat frame (None: nothing to pass on)."""
        if isinstance(frame, CarriedSystemFrame | CarriedDataFrame | CarriedControlFrame):
            return frame.frame  # type: ignore[no-any-return]
        origin = self._origin.pop(frame.id, None)
        if origin is not None:
            return origin
        if frame.id in self._companions:
            self._companions.discard(frame.id)
            return None
        if isinstance(frame, pf.InputAudioRawFrame):
            return vx.InputAudioFrame(frame.audio, frame.sample_rate, frame.num_channels)
        if isinstance(frame, pf.OutputAudioRawFrame):
            utterance = self._utterances.pop(frame.id, None)
            audio = frame.audio
            if frame.num_channels == 1 and frame.sample_rate != self.sample_rate:
                audio = resample_pcm16(audio, frame.sample_rate, self.sample_rate)
                return vx.OutputAudioFrame(audio, self.sample_rate, utterance=utterance)
            return vx.OutputAudioFrame(
                audio, frame.sample_rate, frame.num_channels, utterance=utterance
            )
        if isinstance(frame, pf.TranscriptionFrame):
            return vx.TranscriptionFrame(frame.text, _language(frame.language))
        if isinstance(frame, pf.InterimTranscriptionFrame):
            return vx.InterimTranscriptionFrame(frame.text, _language(frame.language))
        if isinstance(frame, pf.UserStartedSpeakingFrame | pf.VADUserStartedSpeakingFrame):
            return vx.UserStartedSpeakingFrame()
        if isinstance(frame, pf.UserStoppedSpeakingFrame | pf.VADUserStoppedSpeakingFrame):
            return vx.UserStoppedSpeakingFrame()
        if isinstance(frame, pf.LLMTextFrame):
            return vx.LLMTextFrame(frame.text)
        if isinstance(frame, pf.LLMFullResponseStartFrame):
            return vx.LLMResponseStartFrame()
        if isinstance(frame, pf.LLMFullResponseEndFrame):
            return vx.LLMResponseEndFrame()
        if isinstance(frame, pf.TTSSpeakFrame):
            return vx.TTSSpeakFrame(frame.text)
        if type(frame) is pf.TextFrame:
            return vx.TextFrame(frame.text)
        if isinstance(frame, pf.InputDTMFFrame):
            return vx.DTMFFrame(str(frame.button.value))
        if isinstance(frame, pf.InterruptionFrame):
            return vx.InterruptionFrame()
        return None

    def forget(self) -> None:
        """Drop what an interruption flushed from the service (it will not come back)."""
        self._origin.clear()
        self._companions.clear()
        self._utterances.clear()


_KEYS = {entry.value for entry in KeypadEntry}


async def _close_client(processor: Any) -> None:
    """Close the SDK client a hosted service built for its call (Pipecat leaves that to the
    garbage collector, which closes it later, on a loop that may be gone)."""
    close = getattr(getattr(processor, "_client", None), "close", None)
    if callable(close):
        result = close()
        if inspect.isawaitable(result):
            await result


def _now() -> str:
    from pipecat.utils.time import time_now_iso8601

    return str(time_now_iso8601())


def _language(language: Any) -> str:
    return "" if language is None else str(getattr(language, "value", language))


def error_text(frame: pf.ErrorFrame) -> str:
    """A Pipecat error frame's message, naming the processor that reported it."""
    source = getattr(frame.processor, "name", "") if frame.processor is not None else ""
    return f"{source}: {frame.error}" if source else str(frame.error)


# --- the host -------------------------------------------------------------------------------------


class _WorkerShim:
    """What a processor may ask of the ``PipelineWorker`` it runs in: a hosted one has none."""

    app_resources: Any = None
    worker_runner: Any = None
    name = "voxpipe"


class _Inlet(FrameProcessor):
    """The head of the hosted pipeline: upstream frames from the service leave here."""

    def __init__(self, host: PipecatHost) -> None:
        super().__init__(name=f"{host.name}::inlet", enable_direct_mode=True)
        self._host = host

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == DOWN:
            await self.push_frame(frame, direction)
        else:
            await self._host._deliver(self._host.on_upstream, frame)


class _Outlet(FrameProcessor):
    """The tail of the hosted pipeline: downstream frames from the service leave here."""

    def __init__(self, host: PipecatHost) -> None:
        super().__init__(name=f"{host.name}::outlet", enable_direct_mode=True)
        self._host = host

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if direction == UP:
            await self.push_frame(frame, direction)
            return
        host = self._host
        if isinstance(frame, pf.StartFrame):
            host.started.set()
        elif isinstance(frame, pf.EndFrame | pf.CancelFrame):
            host.ended.set()
        else:
            await host._deliver(host.on_downstream, frame)


class PipecatHost:
    """One Pipecat processor running inside one voxpipe call."""

    def __init__(
        self,
        processor: Any,
        *,
        sample_rate: int,
        on_downstream: Callback,
        on_upstream: Callback,
        on_failure: Callable[[BaseException], None],
    ) -> None:
        self.processor = processor
        self.name = str(processor.name)
        self.sample_rate = sample_rate
        self.on_downstream = on_downstream
        self.on_upstream = on_upstream
        self.on_failure = on_failure
        self.started = asyncio.Event()
        self.ended = asyncio.Event()
        self._inlet = _Inlet(self)
        self._outlet = _Outlet(self)
        self._pipeline = Pipeline([processor], source=self._inlet, sink=self._outlet)
        self._running = False
        self._closed = False

    async def start(self, timeout_s: float) -> None:
        """Set the pipeline up and start it; raise when it is not started within ``timeout_s``."""
        loop = asyncio.get_running_loop()
        clock = SystemClock()
        clock.start()
        setup = FrameProcessorSetup(
            clock=clock,
            task_manager=TaskManager(loop=loop),
            pipeline_worker=_WorkerShim(),  # type: ignore[arg-type]
            audio_in_sample_rate=self.sample_rate,
            audio_out_sample_rate=self.sample_rate,
        )
        self._running = True
        self._pipeline._setup_started()
        await self._pipeline.setup(setup)
        self._pipeline._setup_finished()
        start = pf.StartFrame(
            audio_in_sample_rate=self.sample_rate, audio_out_sample_rate=self.sample_rate
        )
        await self._pipeline.queue_frame(start)
        try:
            async with asyncio.timeout(timeout_s):
                await self.started.wait()
        except TimeoutError:
            raise TimeoutError(f"{self.name} did not start within {timeout_s:g} s") from None

    async def send(self, frame: pf.Frame, direction: FrameDirection = DOWN) -> None:
        """Hand a frame to the service (downstream from the inlet, upstream from the outlet)."""
        if not self._running:
            return
        if direction == DOWN:
            await self._inlet.queue_frame(frame, DOWN)
        else:
            await self._outlet.queue_frame(frame, UP)

    async def end(self, timeout_s: float) -> None:
        """Let the service finish what it holds (an ``EndFrame``), then release it."""
        if self._running and not self.ended.is_set():
            await self._pipeline.queue_frame(pf.EndFrame())
            try:
                async with asyncio.timeout(timeout_s):
                    await self.ended.wait()
            except TimeoutError:
                log.warning("%s did not finish within %g s; cancelled", self.name, timeout_s)
                await self.cancel()
                return
        await self._close()

    async def cancel(self) -> None:
        """Stop the service at once and release it."""
        if self._running and not self.ended.is_set():
            self.ended.set()
            try:
                await self._pipeline.queue_frame(pf.CancelFrame())
            except Exception:
                log.debug("%s: cancel frame failed", self.name, exc_info=True)
        await self._close()

    async def _close(self) -> None:
        if self._closed or not self._running:
            return
        self._closed = True
        self._running = False
        try:
            await self._pipeline.cleanup()
            await _close_client(self.processor)
        except Exception:
            log.warning("%s: cleanup failed", self.name, exc_info=True)

    async def _deliver(self, callback: Callback, frame: pf.Frame) -> None:
        """Run a callback on a frame from the service; a failure in voxpipe's code ends the
        call (Pipecat would only log it)."""
        try:
            await callback(frame)
        except Exception as exc:
            self.on_failure(exc)
