"""Test a processor or a chain without a phone line: what plugin authors and voxpipe's tests use.

* ``run_frames(processors, frames)`` runs one call through a processor (or a chain of them), as
  the engine does (a ``PipelineTask`` and its ``Call``, the ``StartFrame`` first), sends the
  frames, ends the call and returns what came out each way: ``Outcome.down`` (what reached the
  tail) and ``Outcome.up`` (what reached the head).
* ``RunningChain`` is the same call kept open for a test to drive step by step (``send``,
  ``wait_for``, ``end``); ``build=`` runs a chain that something else assembles (a bot).
* ``Recorder`` keeps the frames that pass it; ``until(predicate)`` lets the event loop run until
  something holds, and fails with a clear message after a timeout.
* Fakes, one per interface, each a real implementation of it: ``FakeSTT`` (an ``STTProcessor``
  that turns each utterance into the next scripted transcript), ``FakeLLM`` (an ``LLMClient``
  with scripted replies and tool calls; ``FakeLLM.processor()`` is the LLM step over it) and
  ``FakeTTS`` (a ``TTSProcessor`` whose audio is a tone of ``word_ms`` per word).
* ``caller_says(text)`` and ``speech_frames(audio, rate)`` are the frames of a caller's turn.

Nothing here sleeps for a fixed time to let things happen: waits are on conditions, with a
timeout that only a failing test reaches.
"""

from __future__ import annotations

import asyncio
import collections
import copy
from collections.abc import AsyncIterator, Awaitable, Callable, Container, Iterable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, ClassVar, TypeVar

from voxpipe.frames import (
    DOWNSTREAM,
    UPSTREAM,
    Direction,
    EndFrame,
    Frame,
    InputAudioFrame,
    OutputAudioFrame,
    StartFrame,
    TextFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.llm.base import LLMBaseSettings
from voxpipe.processors.llm.client import ToolRound
from voxpipe.processors.llm.processor import LLMProcessor
from voxpipe.processors.stt.base import STTProcessor
from voxpipe.processors.tts.base import TTSProcessor
from voxpipe.tools.toolbox import Toolbox, ToolCall, ToolSpec

__all__ = [
    "FakeLLM",
    "FakeSTT",
    "FakeTTS",
    "LLMRequest",
    "Lost",
    "Outcome",
    "Recorder",
    "RunningChain",
    "ToolCall",
    "audio_ms",
    "caller_says",
    "run_frames",
    "speech_frames",
    "until",
]

FrameT = TypeVar("FrameT", bound=Frame)

DEFAULT_TIMEOUT_S = 10.0


async def until(
    predicate: Callable[[], object],
    timeout_s: float = DEFAULT_TIMEOUT_S,
    *,
    every: float = 0.01,
    what: str = "",
) -> None:
    """Let the event loop run until ``predicate()`` is true, checking every ``every`` seconds.

    Raises ``TimeoutError`` naming ``what`` (or the predicate) after ``timeout_s`` seconds. Use it
    for what has no event to await (a queue's length, a counter); a ``Recorder`` wakes its
    waiters on each frame instead.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        if loop.time() >= deadline:
            raise TimeoutError(f"not within {timeout_s:g} s: {what or _describe(predicate)}")
        await asyncio.sleep(every)


def _describe(predicate: Callable[..., object]) -> str:
    code = getattr(predicate, "__code__", None)
    if code is None:
        return repr(predicate)
    name = getattr(predicate, "__qualname__", "predicate")
    return f"{name} ({code.co_filename}:{code.co_firstlineno})"


class Recorder(FrameProcessor):
    """Keeps every frame that passes it, each way, and passes all of them on.

    ``down`` and ``up`` are the frames seen travelling downstream and upstream; ``frames`` is
    the list of the recorder's own ``direction`` (the one ``of`` and ``wait_for`` read unless
    told). Put one at the tail of a chain for what the chain sends on, one at the head
    (``Recorder(UPSTREAM)``) for what it sends back: errors, interruptions, hangups.
    """

    def __init__(
        self,
        direction: Direction = DOWNSTREAM,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        name: str | None = None,
    ) -> None:
        super().__init__(name=name or f"recorder.{direction.name.lower()}")
        self.direction = direction
        self.timeout_s = timeout_s
        self.down: list[Frame] = []
        self.up: list[Frame] = []
        self.arrived = asyncio.Event()

    @property
    def frames(self) -> list[Frame]:
        """The frames seen going this recorder's way, in order (the list itself: clearing it
        forgets them)."""
        return self.down if self.direction is DOWNSTREAM else self.up

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        (self.down if direction is DOWNSTREAM else self.up).append(frame)
        self.arrived.set()
        await self.push_frame(frame, direction)

    def of(self, kind: type[FrameT], direction: Direction | None = None) -> list[FrameT]:
        """The frames of type ``kind`` (subclasses too) seen going ``direction``, in order."""
        frames = self.frames if direction is None else self._list(direction)
        return [frame for frame in frames if isinstance(frame, kind)]

    def kinds(self, direction: Direction | None = None) -> list[type[Frame]]:
        """The type of every frame seen going ``direction``, in order."""
        frames = self.frames if direction is None else self._list(direction)
        return [type(frame) for frame in frames]

    def texts(self, direction: Direction | None = None) -> list[str]:
        """The text of every ``TextFrame`` (and subclass) seen going ``direction``."""
        return [frame.text for frame in self.of(TextFrame, direction)]

    def _list(self, direction: Direction) -> list[Frame]:
        return self.down if direction is DOWNSTREAM else self.up

    async def wait_for(
        self, predicate: Callable[[], object], timeout_s: float | None = None
    ) -> None:
        """Wait until ``predicate()`` holds, checked now and at each new frame; raise
        ``TimeoutError`` after ``timeout_s`` seconds (the recorder's own by default)."""
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            async with asyncio.timeout(limit):
                while not predicate():
                    self.arrived.clear()
                    await self.arrived.wait()
        except TimeoutError:
            raise TimeoutError(
                f"{self.name}: not within {limit:g} s: {_describe(predicate)}; "
                f"seen {[type(f).__name__ for f in self.frames][-12:]}"
            ) from None

    async def wait_for_kind(
        self,
        kind: type[FrameT],
        count: int = 1,
        *,
        direction: Direction | None = None,
        timeout_s: float | None = None,
    ) -> list[FrameT]:
        """Wait until ``count`` frames of type ``kind`` went ``direction``; return all of them."""
        await self.wait_for(lambda: len(self.of(kind, direction)) >= count, timeout_s)
        return self.of(kind, direction)


# A step of a script given to ``run_frames``: a frame to send, or a coroutine to await first.
Step = Frame | Callable[["RunningChain"], Awaitable[object]]


class RunningChain:
    """One call through a chain of processors, between two recorders, driven by test code.

    ``up`` (a ``Recorder(UPSTREAM)``) is at the head, ``down`` at the tail; ``task`` is the
    call's ``PipelineTask`` and ``call`` its ``Call``. ``start()`` (or ``async with``) runs it
    and returns once the ``StartFrame`` reached the tail (or the call failed to start:
    ``end_reason`` then says why). Leaving the ``async with`` cancels a call still running.

    ``build(up, down)``, when given, makes the task instead, for a chain that something else
    assembles, such as a bot's: it must put ``down`` last (the start is awaited there) and ``up``
    first if the test reads what comes back.
    """

    def __init__(
        self,
        processors: FrameProcessor | Sequence[FrameProcessor] = (),
        *,
        call: Call | None = None,
        build: Callable[[Recorder, Recorder], PipelineTask] | None = None,
        timeout_s: float = DEFAULT_TIMEOUT_S,
    ) -> None:
        self.processors = [processors] if isinstance(processors, FrameProcessor) else [*processors]
        self.up = Recorder(UPSTREAM, timeout_s=timeout_s)
        self.down = Recorder(DOWNSTREAM, timeout_s=timeout_s)
        self.timeout_s = timeout_s
        self._call = call
        self._build = build
        self._task: PipelineTask | None = None
        self.runner: asyncio.Task[str] | None = None
        self.sent_end: EndFrame | None = None

    @property
    def task(self) -> PipelineTask:
        """The call's pipeline task (once started)."""
        if self._task is None:
            raise RuntimeError("the chain has not started: call start() or use `async with`")
        return self._task

    @property
    def call(self) -> Call:
        """The call running through the chain."""
        return self.task.call

    @property
    def done(self) -> bool:
        """Whether the call has ended."""
        return self.runner is not None and self.runner.done()

    @property
    def end_reason(self) -> str:
        """Why the call ended ("end", "cancel: ...", "error: ..."), or "" while it runs."""
        return self.task.end_reason

    async def start(self) -> RunningChain:
        """Run the call; return once the start frame reached the tail or the call ended."""
        if self._build is not None:
            self._task = self._build(self.up, self.down)
        else:
            chain = [self.up, *self.processors, self.down]
            self._task = PipelineTask(chain, self._call or Call(bot="test"))
        runner = asyncio.create_task(self.task.run(), name=f"{self.call.call_id}:test-runner")
        self.runner = runner
        await until(
            lambda: runner.done() or any(type(f) is StartFrame for f in self.down.down),
            self.timeout_s,
            what="the start frame to reach the tail of the chain",
        )
        return self

    async def send(self, *frames: Frame, direction: Direction = DOWNSTREAM) -> None:
        """Deliver frames one by one, as a transport does: downstream at the head, upstream at
        the tail. Each returns once the chain took it (a queued processor may still hold it)."""
        for frame in frames:
            await self.task.push_frame(frame, direction)

    def queue(self, *frames: Frame) -> None:
        """Queue frames at the head (system frames overtake the others), as a greeting is."""
        for frame in frames:
            self.task.queue_frame(frame)

    async def until(self, predicate: Callable[[], object], timeout_s: float | None = None) -> None:
        """Wait until ``predicate()`` holds (polled): see ``until``."""
        await until(predicate, self.timeout_s if timeout_s is None else timeout_s)

    async def wait_for(
        self,
        kind: type[FrameT],
        count: int = 1,
        *,
        direction: Direction = DOWNSTREAM,
        timeout_s: float | None = None,
    ) -> list[FrameT]:
        """Wait until ``count`` frames of type ``kind`` came out ``direction`` (downstream: at the
        tail; upstream: at the head); return all of them."""
        recorder = self.down if direction is DOWNSTREAM else self.up
        return await recorder.wait_for_kind(kind, count, direction=direction, timeout_s=timeout_s)

    async def end(self, reason: str = "", timeout_s: float | None = None) -> str:
        """End the call after what is queued (an ``EndFrame`` at the head, as the engine does
        when a transport's caller leaves gracefully); wait until it ended; why it ended."""
        self.sent_end = EndFrame(reason=reason)
        self.task.queue_frame(self.sent_end)  # what ``task.end(reason)`` does, keeping the frame
        return await self.finished(timeout_s)

    async def cancel(self, reason: str = "test over", timeout_s: float | None = None) -> str:
        """End the call at once (``task.cancel``); wait until it ended; why it ended."""
        self.task.cancel(reason)
        return await self.finished(timeout_s)

    async def finished(self, timeout_s: float | None = None) -> str:
        """Wait until the call ended by itself (a hangup, a failure); why it ended."""
        assert self.runner is not None, "the chain has not started"
        limit = self.timeout_s if timeout_s is None else timeout_s
        try:
            return await asyncio.wait_for(asyncio.shield(self.runner), limit)
        except TimeoutError:
            raise TimeoutError(
                f"the call did not end within {limit:g} s; last frames at the tail: "
                f"{[type(f).__name__ for f in self.down.down][-12:]}"
            ) from None

    async def __aenter__(self) -> RunningChain:
        return await self.start()

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if self.runner is None:
            return
        if not self.runner.done():
            self.task.cancel("test over")
        try:
            await asyncio.wait_for(self.runner, self.timeout_s)
        except TimeoutError:
            self.runner.cancel()
            raise


@dataclass(slots=True)
class Outcome:
    """What came out of a ``run_frames`` call, each way, and how the call ended.

    ``down`` leaves out the call's ``StartFrame`` and the ``EndFrame`` that ``run_frames`` sent
    (every run has them); ``up`` is every frame that reached the head.
    """

    down: list[Frame]
    up: list[Frame]
    end_reason: str
    call: Call

    def of(self, kind: type[FrameT], direction: Direction = DOWNSTREAM) -> list[FrameT]:
        """The frames of type ``kind`` that came out ``direction``, in order."""
        frames = self.down if direction is DOWNSTREAM else self.up
        return [frame for frame in frames if isinstance(frame, kind)]

    def kinds(self, direction: Direction = DOWNSTREAM) -> list[type[Frame]]:
        """The type of every frame that came out ``direction``, in order."""
        return [type(frame) for frame in (self.down if direction is DOWNSTREAM else self.up)]

    def texts(self) -> list[str]:
        """The text of every ``TextFrame`` (and subclass) that came out downstream."""
        return [frame.text for frame in self.of(TextFrame)]


async def run_frames(
    processors: FrameProcessor | Sequence[FrameProcessor],
    frames: Iterable[Step],
    *,
    direction: Direction = DOWNSTREAM,
    call: Call | None = None,
    until: Callable[[RunningChain], object] | None = None,
    end: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Outcome:
    """Run one call through ``processors`` on ``frames``; what came out each way.

    The frames are sent in order (downstream from the head, or upstream from the tail with
    ``direction=UPSTREAM``); a step that is a function of the ``RunningChain`` is awaited in
    its place (``lambda chain: chain.wait_for(TranscriptionFrame)``). Then, once
    ``until(chain)`` holds (when given), the call ends: gracefully with an ``EndFrame`` that
    drains every queue (``end=True``), or cancelled at once. Raises ``TimeoutError`` when the
    start, ``until`` or the end takes longer than ``timeout_s`` seconds.
    """
    chain = RunningChain(processors, call=call, timeout_s=timeout_s)
    async with chain:
        if not chain.done:
            for step in frames:
                if isinstance(step, Frame):
                    await chain.send(step, direction=direction)
                else:
                    await step(chain)
            if until is not None:
                await chain.until(lambda: until(chain), timeout_s)
            if end:
                await chain.end()
            else:
                await chain.cancel()
    down = [f for f in chain.down.down if type(f) is not StartFrame and f is not chain.sent_end]
    return Outcome(down, list(chain.up.up), chain.end_reason, chain.call)


def caller_says(text: str) -> list[Frame]:
    """The frames of a caller's turn after speech-to-text: the VAD's start, the final
    transcript, the VAD's stop."""
    return [UserStartedSpeakingFrame(), TranscriptionFrame(text), UserStoppedSpeakingFrame()]


def speech_frames(
    audio: bytes, sample_rate: int, *, frame_ms: int = 20, vad_after_ms: int = 20
) -> list[Frame]:
    """The frames of a caller saying ``audio`` (PCM16 mono), as a VAD reports it: audio frames
    of ``frame_ms``, the VAD's start once ``vad_after_ms`` were heard, the stop after the last."""
    size = sample_rate * 2 * frame_ms // 1000
    chunks = [audio[i : i + size] for i in range(0, len(audio), size)]
    lead = vad_after_ms // frame_ms
    frames: list[Frame] = [InputAudioFrame(chunk, sample_rate) for chunk in chunks[:lead]]
    frames.append(UserStartedSpeakingFrame())
    frames += [InputAudioFrame(chunk, sample_rate) for chunk in chunks[lead:]]
    frames.append(UserStoppedSpeakingFrame())
    return frames


def audio_ms(frames: Iterable[Frame]) -> float:
    """Milliseconds of bot audio in ``frames`` (their ``OutputAudioFrame``s, PCM16)."""
    return sum(
        len(f.audio) / (2 * f.channels) * 1000 / f.sample_rate
        for f in frames
        if isinstance(f, OutputAudioFrame)
    )


# --- fakes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Lost:
    """In a ``FakeSTT`` script: no transcript will come for this utterance (the engine failed:
    the step calls ``lose_utterance(reason)``)."""

    reason: str = "scripted failure"


class FakeSTT(STTProcessor):
    """A speech-to-text step that turns each utterance into the next scripted transcript.

    Each time the caller stops speaking (the VAD's stop), the utterance is settled with the
    next entry of ``transcripts``: a string is its words (``push_final``; "" means none were
    heard), ``Lost(reason)`` loses it (``lose_utterance``). With ``interim``, the words come
    first as growing interim transcripts; with ``delay_s``, each result comes that much later
    (results keep the utterances' order). An utterance with nothing left in the script fails
    the call with a ``LookupError`` that says so. ``utterances`` is the audio each utterance
    held (its pre-roll included).
    """

    provider: ClassVar[str] = "fake"

    def __init__(
        self,
        transcripts: Iterable[str | Lost] = (),
        *,
        sample_rate: int = 16000,
        language: str = "en-US",
        preroll_ms: int = 300,
        delay_s: float = 0.0,
        interim: bool = False,
    ) -> None:
        super().__init__(language=language, preroll_ms=preroll_ms, sample_rate=sample_rate)
        self.script: collections.deque[str | Lost] = collections.deque(transcripts)
        self.delay_s = delay_s
        self.interim = interim
        self.utterances: list[bytes] = []
        self._audio = bytearray()
        self._last: asyncio.Task[None] | None = None

    async def on_speech_started(self, preroll: bytes) -> None:
        self._audio = bytearray(preroll)
        self.begin_request()

    async def on_speech_audio(self, audio: bytes) -> None:
        self._audio += audio

    async def on_speech_stopped(self) -> None:
        self.utterances.append(bytes(self._audio))
        self._audio = bytearray()
        if not self.script:
            raise LookupError(
                f"FakeSTT: utterance {len(self.utterances)} has no scripted transcript "
                f"(the script had {len(self.utterances) - 1})"
            )
        result = self.script.popleft()
        if self.delay_s <= 0 and self._last is None:
            await self._settle(result)
        else:
            self._last = self.create_task(self._later(result, self._last), name="fake-stt")

    async def _later(self, result: str | Lost, previous: asyncio.Task[None] | None) -> None:
        await asyncio.sleep(self.delay_s)
        if previous is not None:
            await previous
        await self._settle(result)

    async def _settle(self, result: str | Lost) -> None:
        if isinstance(result, Lost):
            await self.lose_utterance(result.reason)
            return
        if self.interim:
            words = result.split()
            for count in range(1, len(words)):
                await self.push_interim(" ".join(words[:count]))
        await self.push_final(result)


@dataclass(slots=True)
class LLMRequest:
    """One request a ``FakeLLM`` received: the dialogue (a copy), this reply's tool rounds
    so far, and the names of the tools offered."""

    history: list[dict[str, Any]]
    rounds: list[ToolRound]
    tools: list[str]

    @property
    def user_text(self) -> str:
        """The caller's words this request answers (the last user entry of the history)."""
        users = [m["content"] for m in self.history if m.get("role") == "user"]
        return str(users[-1]) if users else ""


# A scripted reply: its text (streamed word by word), the chunks and tool calls to stream as
# given, or an exception the request raises before streaming anything.
Reply = str | Sequence[str | ToolCall] | BaseException


@dataclass(eq=False)
class FakeLLM:
    """An ``LLMClient`` that answers each request with the next scripted reply.

    A reply is a string (streamed in word-sized chunks), a list of text chunks and
    ``ToolCall``s (streamed as given: the processor runs the tools and asks again, which takes
    the next reply), or an exception (raised by the request, as a provider failure: the LLM
    step retries, then speaks its ``on_error`` line). A request with nothing left in the script
    raises ``LookupError`` (a provider failure too). ``requests`` records every request;
    ``delay_s`` waits before each chunk (a slow model).
    """

    replies: Iterable[Reply] = ()
    delay_s: float = 0.0
    provider: str = "fake"
    requests: list[LLMRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.script: collections.deque[Reply] = collections.deque(self.replies)

    async def stream(
        self, history: list[dict[str, Any]], rounds: list[ToolRound], tools: list[ToolSpec]
    ) -> AsyncIterator[str | ToolCall]:
        self.requests.append(
            LLMRequest(copy.deepcopy(history), list(rounds), [t.name for t in tools])
        )
        if not self.script:
            raise LookupError(f"FakeLLM: no reply scripted for request {len(self.requests)}")
        reply = self.script.popleft()
        if isinstance(reply, BaseException):
            raise reply
        chunks: Sequence[str | ToolCall]
        if isinstance(reply, str):
            words = reply.split(" ")
            chunks = [word if i == 0 else f" {word}" for i, word in enumerate(words)]
        else:
            chunks = reply
        for chunk in chunks:
            if self.delay_s:
                await asyncio.sleep(self.delay_s)
            yield chunk

    def processor(
        self,
        *,
        greeting: str | None = None,
        toolbox: Toolbox | None = None,
        **settings: Any,
    ) -> LLMProcessor:
        """The LLM step over this client: ``settings`` are the LLM step's keys (``timeout_s``,
        ``retries``, ``filler_after_ms``, ``on_error``...), ``toolbox`` its tools."""
        return LLMProcessor(
            LLMBaseSettings.model_validate(settings),
            self,
            toolbox or Toolbox(),
            greeting=greeting,
        )


class FakeTTS(TTSProcessor):
    """A text-to-speech step whose audio is a tone of ``word_ms`` per word, so that a test
    knows how long each sentence plays (``audio_ms``).

    ``spoken`` lists every text it was asked to synthesise, in order. A text in ``fail`` (or
    for which ``fail(text)`` is true) fails to synthesise, as a provider error does: the step
    reports it upstream and drops the rest of that reply. ``delay_s`` is the synthesis time of
    each sentence; ``synth_rate`` the rate it synthesises at (resampled to the call's rate).
    """

    provider: ClassVar[str] = "fake"

    def __init__(
        self,
        *,
        sample_rate: int = 16000,
        word_ms: int = 100,
        fail: Container[str] | Callable[[str], bool] = (),
        delay_s: float = 0.0,
        synth_rate: int | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate)
        self.word_ms = word_ms
        self.fail = fail
        self.delay_s = delay_s
        self.synth_rate = synth_rate
        self.spoken: list[str] = []

    def fails_on(self, text: str) -> bool:
        """Whether synthesising ``text`` fails."""
        return self.fail(text) if callable(self.fail) else text in self.fail

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        from voxpipe.processors.tts.tone import tone

        self.spoken.append(text)
        if self.delay_s:
            await asyncio.sleep(self.delay_s)
        if self.fails_on(text):
            raise RuntimeError(f"FakeTTS was told to fail on {text!r}")
        rate = self.synth_rate or self.sample_rate
        return tone(440.0, self.word_ms * len(text.split()), rate), rate
