"""What every speech-to-text processor shares: pre-roll, utterance tracking, results, timing.

An STT processor sits after the VAD. It keeps the last ``preroll_ms`` of caller audio so the
start of an utterance is never clipped, follows ``UserStartedSpeakingFrame`` /
``UserStoppedSpeakingFrame``, pushes ``InterimTranscriptionFrame`` and ``TranscriptionFrame``
downstream, and passes every frame it receives on unchanged.

Every utterance the caller finishes is owed a result, however late it comes: the processor
counts them (``TranscriptsPendingFrame``, so that the turn waits for its words) and a provider
settles each one with ``push_final`` (the words, or none) or ``lose_utterance`` (the engine
failed on it: logged as a warning, counted as a lost turn, reported upstream as an error so
the bot apologises).

``STTProcessor`` is the base for every provider (a cloud client overrides the three async
hooks); ``LocalSTTProcessor`` adds what local engines need: each call's utterances are decoded
in order on one task, by the engine in the bot's model worker processes.
"""

from __future__ import annotations

import asyncio
import collections
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
    TranscriptsPendingFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.models.engine import ModelError
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings, ProviderError

if TYPE_CHECKING:
    from voxpipe.models.engine import Engine
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext


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
    """Settings of a speech-to-text engine that runs on this machine, in the model workers."""

    max_utterance_s: float = Field(
        30.0,
        gt=0,
        le=300,
        description="Longest stretch decoded as one utterance; longer speech (or a VAD that "
        "never hears the caller stop, on a noisy line) is cut into pieces of this length.",
    )

    def engine(self) -> Engine:
        """The engine the model workers load (an ``STTEngine``)."""
        raise NotImplementedError

    def sample_job(self, audio: bytes, sample_rate: int) -> tuple[str, tuple[Any, ...]]:
        """The engine's method and arguments that decode one whole utterance the way this
        step does (what ``max_calls: auto`` times at start)."""
        raise NotImplementedError

    def processor(
        self, call: Call, ctx: BotContext, models: ModelPool, key: str
    ) -> LocalSTTProcessor:
        """One call's processor, sending its decoding to engine ``key`` in ``models``."""
        raise NotImplementedError

    async def prepare(self, ctx: BotContext) -> None:
        from voxpipe.models.shared import load_model

        engine = self.engine()
        await load_model(ctx, engine, self.sample_job)
        ctx.shared[f"stt:{id(self)}"] = engine.key

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        from voxpipe.models.shared import models_of

        key = ctx.shared.get(f"stt:{id(self)}")
        if key is None:
            raise ProviderError("the STT was not prepared (call bot.prepare() first)")
        return self.processor(call, ctx, models_of(ctx), key)


class STTProcessor(FrameProcessor):
    """Turns the caller's utterances (between the VAD's start and stop events) into text.

    Subclasses override ``on_speech_started``, ``on_speech_audio`` and ``on_speech_stopped``,
    call ``begin_request()`` when they send audio to the engine, and settle every utterance
    the caller finished exactly once: ``push_final`` (its words, possibly none) or
    ``lose_utterance`` (no transcript will ever come). ``push_interim`` reports partial text.
    """

    provider: ClassVar[str] = ""

    __slots__ = (
        "_first_result",
        "_owed",
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
        self._owed = 0

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
                await self.utterance_ended()
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

    async def utterance_ended(self) -> None:
        """One more finished utterance is owed a result (the base calls it at the VAD's stop;
        a provider that cuts long speech into pieces calls it for each piece)."""
        self._owed += 1
        await self.push_frame(TranscriptsPendingFrame(self._owed))

    async def _settled(self) -> None:
        if self._owed > 0:
            self._owed -= 1
            await self.push_frame(TranscriptsPendingFrame(self._owed))

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
        await self._settled()

    async def lose_utterance(self, reason: str) -> None:
        """No transcript will come for an utterance the caller finished (the engine failed on
        it): a warning, a lost turn in the metrics, and an error upstream, so the bot says
        its ``on_error`` line instead of leaving the caller in silence."""
        self.call.log.warning("the caller's words are lost: %s failed: %s", self.name, reason)
        events.emit.turn_lost(self.call, "stt")
        events.emit.error(self.call, "provider")
        await self._settled()
        await self.push_error(f"{self.name} failed: {reason}")


class LocalSTTProcessor(STTProcessor):
    """Base of the engines that decode on this machine, in the bot's model workers.

    The utterance's audio is collected on the event loop; each call's decoding runs in order on
    one task, whose steps are model jobs. Engines implement the async hooks ``begin`` (start an
    utterance), ``accept`` (streaming engines: feed audio, return a partial transcript) and
    ``finish`` (return the final transcript; it gets the whole utterance), each awaiting
    ``self.models``; ``finish`` raising ``ModelError`` loses the utterance.
    """

    streaming: ClassVar[bool] = False

    __slots__ = (
        "_chunk_ms",
        "_events",
        "_max_utterance_s",
        "_pending_audio",
        "_utterance",
        "_wakeup",
        "_worker",
        "models",
    )

    def __init__(
        self,
        settings: LocalSTTSettings,
        *,
        sample_rate: int,
        models: ModelPool,
        chunk_ms: int = 100,
    ) -> None:
        super().__init__(
            language=settings.language, preroll_ms=settings.preroll_ms, sample_rate=sample_rate
        )
        self.models = models
        self._chunk_ms = chunk_ms
        self._max_utterance_s = settings.max_utterance_s
        self._pending_audio = bytearray()
        self._events: collections.deque[tuple[str, bytes]] = collections.deque()
        self._wakeup = asyncio.Event()
        self._utterance = bytearray()
        self._worker: asyncio.Task[Any] | None = None

    async def start(self) -> None:
        self._worker = self.create_task(self._run(), name=f"{self.name}.decoder")

    async def on_speech_started(self, preroll: bytes) -> None:
        self._utterance = bytearray(preroll)
        self._pending_audio = bytearray()
        self._post("start", preroll)

    async def on_speech_audio(self, audio: bytes) -> None:
        self._utterance += audio
        if self.streaming:
            self._pending_audio += audio
            if len(self._pending_audio) >= self.sample_rate * 2 * self._chunk_ms // 1000:
                self._post("audio", bytes(self._pending_audio))
                self._pending_audio = bytearray()
        if len(self._utterance) >= self.sample_rate * 2 * self._max_utterance_s:
            await self.utterance_ended()
            await self.on_speech_stopped()
            await self.on_speech_started(b"")

    async def on_speech_stopped(self) -> None:
        if self._pending_audio:
            self._post("audio", bytes(self._pending_audio))
            self._pending_audio = bytearray()
        self._post("stop", bytes(self._utterance))
        self._utterance = bytearray()

    def _post(self, kind: str, audio: bytes) -> None:
        self._events.append((kind, audio))
        self._wakeup.set()

    async def _run(self) -> None:
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
                await self.begin(rate)
                if self.streaming and audio:
                    await self._accept(audio, rate)
            elif kind == "audio":
                # Feed everything that arrived while the last chunk decoded in one job.
                chunks = [audio]
                while events_ and events_[0][0] == "audio":
                    chunks.append(events_.popleft()[1])
                await self._accept(b"".join(chunks), rate)
            else:
                if not self.streaming:
                    self.begin_request()
                try:
                    text = await self.finish(audio, rate)
                except ModelError as exc:
                    await self.lose_utterance(str(exc))
                    continue
                finally:
                    await self.close_utterance()
                await self.push_final(text)

    async def _accept(self, audio: bytes, rate: int) -> None:
        partial = await self.accept(audio, rate)
        if partial:
            await self.push_interim(partial)

    async def open_utterance(self) -> None:
        """Before ``begin``: wait for what the utterance needs (a decoder)."""

    async def close_utterance(self) -> None:
        """After ``finish``: give back what ``open_utterance`` took."""

    # --- engine hooks (one at a time per call, in order) --------------------------------------

    async def begin(self, sample_rate: int) -> None:
        """Start decoding an utterance at ``sample_rate``."""

    async def accept(self, audio: bytes, sample_rate: int) -> str | None:
        """Streaming engines: decode more audio; return the new partial transcript, if any."""
        return None

    async def finish(self, utterance: bytes, sample_rate: int) -> str:
        """Return the final transcript of the utterance (``utterance`` is all of its audio)."""
        raise NotImplementedError
