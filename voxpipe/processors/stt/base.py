"""What every speech-to-text processor shares: pre-roll, utterance tracking, results, timing.

An STT processor sits after the VAD. It keeps the last ``preroll_ms`` of caller audio so the
start of an utterance is never clipped, follows ``UserStartedSpeakingFrame`` /
``UserStoppedSpeakingFrame``, pushes ``InterimTranscriptionFrame`` and ``TranscriptionFrame``
downstream, and passes every frame it receives on unchanged.

``STTProcessor`` is the base for every provider (a cloud client overrides the three async
hooks); ``LocalSTTProcessor`` adds what blocking local engines need: each call's decoding
runs in order on one task, and the model calls themselves run in the bot's bounded executor.
"""

from __future__ import annotations

import asyncio
import collections
import concurrent.futures
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from voxpipe import events
from voxpipe.frames import (
    Direction,
    Frame,
    InputAudioFrame,
    InterimTranscriptionFrame,
    StartFrame,
    TranscriptionFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from collections.abc import Callable

    from voxpipe.pipelines.bot import Bot
    from voxpipe.pipelines.call import Call


def shared_executor(bot: Bot, kind: str, workers: int) -> concurrent.futures.ThreadPoolExecutor:
    """The bot's bounded thread pool for blocking model calls of ``kind`` (stt, tts).

    One per bot and kind, so that however many calls are up, at most ``workers`` threads decode
    (or synthesise) at once and the event loop never waits on a model.
    """
    key = f"executor:{kind}"
    executor = bot.shared.get(key)
    if executor is None:
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=workers, thread_name_prefix=f"voxpipe-{kind}"
        )
        bot.shared[key] = executor
    assert isinstance(executor, concurrent.futures.ThreadPoolExecutor)
    return executor


async def prepare_local(
    bot: Bot, kind: str, workers: int, key: str, load: Callable[[], object]
) -> None:
    """Load what every call of the bot shares (a model, a voice) once, in a thread, under
    ``bot.shared[key]``, and start the bot's bounded executor for ``kind`` (stt, tts)."""
    if key not in bot.shared:
        bot.shared[key] = await asyncio.to_thread(load)
    shared_executor(bot, kind, workers)


class STTProviderSettings(ProcessorSettings):
    """Settings every speech-to-text provider has."""

    language: str = Field("en-US", description="Language of the caller's speech (BCP-47).")
    preroll_ms: int = Field(
        300,
        ge=0,
        le=2000,
        description="Caller audio kept from before the VAD's start event, so the first "
        "syllable is not clipped.",
    )


class LocalSTTSettings(STTProviderSettings):
    """Settings of a speech-to-text engine that runs on this machine."""

    workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Threads that decode for all calls of the bot (the bounded executor).",
    )
    max_utterance_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Longest stretch decoded as one utterance; longer speech (or a VAD that "
        "never hears the caller stop, on a noisy line) is cut into pieces of this length.",
    )

    @property
    def shared_key(self) -> str:
        """The ``bot.shared`` key of the loaded engine; steps with the same key share it."""
        raise NotImplementedError

    def load(self) -> Any:
        """Load the engine every call of the bot shares (blocking: runs in a thread)."""
        raise NotImplementedError

    def engine(
        self, loaded: Any, sample_rate: int, executor: concurrent.futures.Executor
    ) -> LocalSTTProcessor:
        """One call's processor over the loaded engine."""
        raise NotImplementedError

    async def prepare(self, bot: Bot) -> None:
        await prepare_local(bot, "stt", self.workers, self.shared_key, self.load)

    def create(self, call: Call, bot: Bot) -> FrameProcessor:
        executor = shared_executor(bot, "stt", self.workers)
        return self.engine(bot.shared[self.shared_key], call.sample_rate, executor)


class STTProcessor(FrameProcessor):
    """Turns the caller's utterances (between the VAD's start and stop events) into text.

    Subclasses override ``on_speech_started``, ``on_speech_audio`` and ``on_speech_stopped``,
    call ``begin_request()`` when they send audio to the engine, and report results with
    ``push_interim`` / ``push_final``.
    """

    provider: ClassVar[str] = ""

    __slots__ = (
        "_first_result",
        "_preroll",
        "_preroll_bytes",
        "_request_t0",
        "language",
        "preroll_ms",
        "sample_rate",
        "speaking",
    )

    def __init__(self, *, language: str, preroll_ms: int, sample_rate: int) -> None:
        super().__init__(name=f"stt.{self.provider}")
        self.language = language
        self.preroll_ms = preroll_ms
        self.sample_rate = sample_rate
        self.speaking = False
        self._preroll: collections.deque[bytes] = collections.deque()
        self._preroll_bytes = 0
        self._request_t0: float | None = None
        self._first_result = False

    # --- frames ------------------------------------------------------------------------------

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if type(frame) is InputAudioFrame:
            if frame.sample_rate != self.sample_rate:
                self.sample_rate = frame.sample_rate
                self._clear_preroll()
            if self.speaking:
                await self.on_speech_audio(frame.audio)
            else:
                self._keep_preroll(frame.audio)
        elif isinstance(frame, UserStartedSpeakingFrame):
            if not self.speaking:
                self.speaking = True
                preroll = b"".join(self._preroll)
                self._clear_preroll()
                await self.on_speech_started(preroll)
        elif isinstance(frame, UserStoppedSpeakingFrame):
            if self.speaking:
                self.speaking = False
                await self.on_speech_stopped()
        elif isinstance(frame, StartFrame):
            self.sample_rate = frame.sample_rate
        await self.push_frame(frame, direction)

    def _keep_preroll(self, audio: bytes) -> None:
        limit = self.sample_rate * 2 * self.preroll_ms // 1000
        self._preroll.append(audio)
        self._preroll_bytes += len(audio)
        while self._preroll and self._preroll_bytes - len(self._preroll[0]) >= limit:
            self._preroll_bytes -= len(self._preroll.popleft())

    def _clear_preroll(self) -> None:
        self._preroll.clear()
        self._preroll_bytes = 0

    # --- hooks for providers -----------------------------------------------------------------

    async def on_speech_started(self, preroll: bytes) -> None:
        """The caller started speaking; ``preroll`` is the audio just before (PCM16 mono)."""

    async def on_speech_audio(self, audio: bytes) -> None:
        """More of the caller's utterance, at ``self.sample_rate``. Must not block."""

    async def on_speech_stopped(self) -> None:
        """The caller stopped speaking: finish the utterance (without blocking the loop)."""

    # --- results -----------------------------------------------------------------------------

    def begin_request(self) -> None:
        """Mark when audio went to the engine: the next result reports time to first result."""
        self._request_t0 = time.perf_counter()
        self._first_result = True

    def _report_ttfb(self) -> None:
        if self._first_result and self._request_t0 is not None:
            self._first_result = False
            seconds = time.perf_counter() - self._request_t0
            events.emit.provider_ttfb(self.call, "stt", self.provider, seconds)

    async def push_interim(self, text: str) -> None:
        """Report a partial transcript of the utterance in progress."""
        if text:
            self._report_ttfb()
            await self.push_frame(InterimTranscriptionFrame(text=text, language=self.language))

    async def push_final(self, text: str) -> None:
        """Report the final transcript of an utterance (nothing when the engine heard no words)."""
        self._report_ttfb()
        text = text.strip()
        if text:
            self.call.log.debug("caller said: %s", text)
            await self.push_frame(TranscriptionFrame(text=text, language=self.language))


class LocalSTTProcessor(STTProcessor):
    """Base of the engines that decode on this machine with a blocking library.

    The utterance's audio is collected on the event loop; decoding runs in order on one task per
    call, each model call in the bot's bounded executor. Engines implement ``begin`` (start an
    utterance), ``accept`` (streaming engines: feed audio, return a partial transcript) and
    ``finish`` (return the final transcript; it gets the whole utterance).
    """

    streaming: ClassVar[bool] = False

    __slots__ = (
        "_chunk_ms",
        "_events",
        "_executor",
        "_max_utterance_s",
        "_pending",
        "_utterance",
        "_wakeup",
        "_worker",
    )

    def __init__(
        self,
        settings: LocalSTTSettings,
        *,
        sample_rate: int,
        executor: concurrent.futures.Executor,
        chunk_ms: int = 100,
    ) -> None:
        super().__init__(
            language=settings.language, preroll_ms=settings.preroll_ms, sample_rate=sample_rate
        )
        self._executor = executor
        self._chunk_ms = chunk_ms
        self._max_utterance_s = settings.max_utterance_s
        self._pending = bytearray()
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._utterance = bytearray()
        self._worker: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self._worker = self.create_task(self._run(), name=f"{self.name}.decoder")

    async def on_speech_started(self, preroll: bytes) -> None:
        self._utterance = bytearray(preroll)
        self._pending = bytearray()
        self._post("start", preroll)

    async def on_speech_audio(self, audio: bytes) -> None:
        self._utterance += audio
        if self.streaming:
            self._pending += audio
            if len(self._pending) >= self.sample_rate * 2 * self._chunk_ms // 1000:
                self._post("audio", bytes(self._pending))
                self._pending = bytearray()
        if len(self._utterance) >= self.sample_rate * 2 * self._max_utterance_s:
            await self.on_speech_stopped()
            await self.on_speech_started(b"")

    async def on_speech_stopped(self) -> None:
        if self._pending:
            self._post("audio", bytes(self._pending))
            self._pending = bytearray()
        self._post("stop", bytes(self._utterance))
        self._utterance = bytearray()

    def _post(self, kind: str, audio: bytes) -> None:
        self._events.append((kind, audio))
        self._wakeup.set()

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        events_ = self._events
        while True:
            if not events_:
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            kind, audio = events_.popleft()
            rate = self.sample_rate
            if kind == "start":
                await self.open_utterance()
                if self.streaming:
                    self.begin_request()
                await loop.run_in_executor(self._executor, self.begin, rate)
                if self.streaming and audio:
                    await self._accept(loop, audio, rate)
            elif kind == "audio":
                # Feed everything that arrived while the last chunk decoded in one call.
                chunks = [audio]
                while events_ and events_[0][0] == "audio":
                    chunks.append(events_.popleft()[1])
                await self._accept(loop, b"".join(chunks), rate)
            else:
                if not self.streaming:
                    self.begin_request()
                try:
                    text = await loop.run_in_executor(self._executor, self.finish, audio, rate)
                finally:
                    await self.close_utterance()
                await self.push_final(text)

    async def _accept(self, loop: asyncio.AbstractEventLoop, audio: bytes, rate: int) -> None:
        partial = await loop.run_in_executor(self._executor, self.accept, audio, rate)
        if partial:
            await self.push_interim(partial)

    async def open_utterance(self) -> None:
        """On the event loop, before ``begin``: wait for what the utterance needs (a decoder)."""

    async def close_utterance(self) -> None:
        """On the event loop, after ``finish``: give back what ``open_utterance`` took."""

    # --- engine hooks (run in the executor thread, one at a time per call) -------------------

    def begin(self, sample_rate: int) -> None:
        """Start decoding an utterance at ``sample_rate``."""

    def accept(self, audio: bytes, sample_rate: int) -> str | None:
        """Streaming engines: decode more audio; return the new partial transcript, if any."""
        return None

    def finish(self, utterance: bytes, sample_rate: int) -> str:
        """Return the final transcript of the utterance (``utterance`` is all of its audio)."""
        raise NotImplementedError
