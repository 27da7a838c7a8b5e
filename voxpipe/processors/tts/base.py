"""What every text-to-speech processor shares: sentence streaming, framing, timing, interruption.

A TTS processor speaks ``TTSSpeakFrame`` text, and ``LLMTextFrame`` text sentence by sentence as
soon as each sentence is complete (the rest is flushed at ``LLMResponseEndFrame`` or at the end
of the call), so the caller hears the first sentence while the LLM is still writing the next.
Each sentence becomes ``TTSStartedFrame``, 20 ms ``OutputAudioFrame``s at the pipeline rate that
all carry the sentence's ``Utterance``, then ``TTSStoppedFrame``. An interruption drops the text
waiting to be spoken. Providers implement ``synthesize``; local engines derive from
``LocalTTSProcessor`` and synthesise in the bot's model worker processes.

A ``TTSFillerFrame`` (the LLM's "One moment." while a reply is late) does not wait behind the
sentences queued for synthesis: from the phrase cache it plays at once.

When synthesis of a sentence fails, nothing is announced for it (no started/stopped frames
without audio) and the rest of that LLM reply is dropped, so the bot's filler follows at once.
The filler and goodbye of the bot's ``llm.on_error`` are synthesised at ``prepare`` and kept as
standby clips in the phrase cache: they play even when the provider is down. When the provider
cannot synthesise them at ``prepare`` (a cloud voice without network), the packaged piper voice
stands in (``standby_clips``).
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from voxpipe import events
from voxpipe.frames import (
    DOWNSTREAM,
    SPEECH_LOST,
    UPSTREAM,
    Direction,
    EndFrame,
    Frame,
    HangupFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    OutputAudioFrame,
    StartFrame,
    SystemFrame,
    TTSFillerFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    Utterance,
)
from voxpipe.pipelines.processor import QueuedProcessor
from voxpipe.pipelines.settings import ProcessorSettings
from voxpipe.processors.audio import cut_frames, resample_pcm16
from voxpipe.processors.tts.cache import PhraseCache
from voxpipe.processors.tts.text import speakable, split_sentences

if TYPE_CHECKING:
    from voxpipe.models.engine import Engine
    from voxpipe.models.pool import ModelPool
    from voxpipe.pipelines.context import BotContext

log = logging.getLogger("voxpipe.tts")


class TTSProviderSettings(ProcessorSettings):
    """Settings every text-to-speech provider has."""


class CachedTTSSettings(TTSProviderSettings):
    """Settings of a provider whose synthesised sentences are worth keeping.

    ``prepare`` starts the engine (``prepare_engine``, what providers implement), then makes
    the standby clips of the bot's ``on_error`` lines (``standby_clips``).
    """

    cache_phrases: int = Field(
        64,
        ge=0,
        le=10000,
        description="Sentences kept synthesised per bot, so that greetings, prompts and "
        "fillers play at once (0: none; the `on_error` lines are kept regardless).",
    )

    async def prepare(self, ctx: BotContext) -> None:
        from voxpipe.processors.tts.standby import standby_clips

        await self.prepare_engine(ctx)
        await standby_clips(self, ctx)

    async def prepare_engine(self, ctx: BotContext) -> None:
        """Load the voice or build the client once per bot; raise ``ProviderError``."""

    def phrase_cache(self, ctx: BotContext) -> PhraseCache:
        """The bot's phrase cache for this provider and voice (one per distinct settings)."""
        key = f"tts-cache:{self.model_dump_json()}"
        cache = ctx.shared.get(key)
        if not isinstance(cache, PhraseCache):
            cache = ctx.shared[key] = PhraseCache(self.cache_phrases)
        return cache


class LocalTTSSettings(CachedTTSSettings):
    """Settings of a text-to-speech engine that runs on this machine, in the model workers."""

    def engine(self) -> Engine:
        """The engine the model workers load (a ``TTSEngine``)."""
        raise NotImplementedError

    def sample_job(self, text: str) -> tuple[str, tuple[Any, ...]]:
        """The engine's method and arguments that speak ``text`` the way this step does (what
        ``max_calls: auto`` times at start); the job returns ``(pcm16, rate)``."""
        raise NotImplementedError

    async def prepare_engine(self, ctx: BotContext) -> None:
        from voxpipe.models.shared import load_model

        engine = self.engine()
        await load_model(ctx, engine, self.sample_job)
        ctx.shared[f"tts:{id(self)}"] = engine.key

    def models(self, ctx: BotContext) -> tuple[ModelPool, str]:
        """The bot's model pool and the key of this voice's engine in it."""
        from voxpipe.models.shared import models_of

        key = ctx.shared.get(f"tts:{id(self)}")
        if key is None:
            raise RuntimeError("the TTS was not prepared (call bot.prepare() first)")
        return models_of(ctx), str(key)


class TTSProcessor(QueuedProcessor):
    """Speaks text: sentence by sentence, in 20 ms frames at the pipeline rate."""

    provider: ClassVar[str] = ""

    __slots__ = ("_cache", "_reply_lost", "_text", "sample_rate")

    def __init__(self, *, sample_rate: int, cache: PhraseCache | None = None) -> None:
        super().__init__(name=f"tts.{self.provider}")
        self.sample_rate = sample_rate
        self._text = ""
        self._cache = cache
        self._reply_lost = False

    async def push_error(self, error: str, *, fatal: bool = False, kind: str = "") -> None:
        """A voice's errors cost the sentence it was speaking (``SPEECH_LOST``)."""
        await super().push_error(error, fatal=fatal, kind=kind or SPEECH_LOST)

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        # Frames going upstream (the transport's bot started/stopped speaking, errors) never
        # wait behind the sentences queued for synthesis.
        if direction is UPSTREAM:
            await self.push_frame(frame, direction)
        else:
            await super().process_frame(frame, direction)

    async def handle_system_frame(self, frame: SystemFrame, direction: Direction) -> None:
        if isinstance(frame, TTSFillerFrame):
            await self._filler(frame.text)
            return
        if isinstance(frame, StartFrame):
            self.sample_rate = frame.sample_rate
        await self.push_frame(frame, direction)

    async def _filler(self, text: str) -> None:
        """Speak a filler now: from the cache at once, else first in the queue. It is no part
        of any reply, so its utterance stays out of the reply's list (and the history)."""
        text = " ".join(text.split())
        kept = self._cache.get(text) if self._cache is not None else None
        if kept is None:
            self._queue.appendleft((TTSSpeakFrame(text), DOWNSTREAM))
            self._wakeup.set()
            return
        await self._play(text, *kept, reply=False)

    async def handle_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMTextFrame):
            sentences, self._text = split_sentences(self._text + frame.text)
            for sentence in sentences:
                await self._say_reply(sentence)
        elif isinstance(frame, TTSSpeakFrame):
            sentences, rest = split_sentences(frame.text)
            for sentence in [*sentences, rest]:
                await self.say(sentence)
        else:
            if isinstance(frame, LLMResponseEndFrame | EndFrame | HangupFrame):
                await self.flush()
            if isinstance(frame, LLMResponseStartFrame | LLMResponseEndFrame):
                self._reply_lost = False
            await self.push_frame(frame, direction)

    async def flush(self) -> None:
        """Speak the LLM text held back waiting for the end of its sentence."""
        rest, self._text = self._text, ""
        await self._say_reply(rest)

    async def _say_reply(self, text: str) -> None:
        """Speak a sentence of an LLM reply; once one is lost, drop the rest of the reply (the
        LLM answers the error with its filler, which should follow at once, not after a reply
        with holes in it)."""
        if not self._reply_lost:
            self._reply_lost = not await self.say(text)

    def interrupt(self) -> None:
        self._text = ""
        self._reply_lost = False
        super().interrupt()

    async def say(self, text: str) -> bool:
        """Speak one sentence as framed audio between started/stopped frames.

        Returns False when the sentence could not be spoken (synthesis failed, and reported
        it upstream, or gave no audio); nothing is announced for it then.
        """
        text = " ".join(text.split())
        if not speakable(text):
            return True
        spoken = await self._audio_of(text)
        if spoken is None:
            return False
        await self._play(text, *spoken)
        return True

    async def _play(self, text: str, audio: bytes, rate: int, *, reply: bool = True) -> None:
        """Push a sentence's audio as framed audio between started/stopped frames; a sentence
        of a ``reply`` joins the list of the reply being spoken, which the LLM's history reads."""
        frames = cut_frames(resample_pcm16(audio, rate, self.sample_rate), self.sample_rate)
        utterance = Utterance(text, frames_total=len(frames))
        if reply:
            self.call.speech.sent(utterance)
        await self.push_frame(TTSStartedFrame(text=text))
        for chunk in frames:
            await self.push_frame(OutputAudioFrame(chunk, self.sample_rate, utterance=utterance))
        await self.push_frame(TTSStoppedFrame(text=text))

    async def _audio_of(self, text: str) -> tuple[bytes, int] | None:
        """The audio of ``text``, kept in the cache or synthesised; None when synthesis failed
        (the error is reported upstream)."""
        cache = self._cache
        kept = cache.get(text) if cache is not None else None
        if kept is not None:
            events.emit.provider_ttfb(self.call, "tts", self.provider, 0.0)
            return kept
        started = time.perf_counter()
        try:
            if cache is not None:
                audio, rate = await cache.shared(text, self.synthesize)
            else:
                audio, rate = await self.synthesize(text)
        except Exception as exc:  # a failed sentence is reported, not fatal
            self.call.log.warning("%s failed on %r: %r", self.name, text, exc)
            events.emit.error(self.call, "provider")
            await self.push_error(f"{self.name} failed: {type(exc).__name__}: {exc}")
            audio, rate = b"", self.sample_rate
        if audio:
            events.emit.provider_ttfb(
                self.call, "tts", self.provider, time.perf_counter() - started
            )
            if cache is not None:
                cache.put(text, audio, rate)
            return audio, rate
        return None

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        """Speak ``text``: PCM16 mono audio and its sample rate (any rate; it is resampled)."""
        raise NotImplementedError


class LocalTTSProcessor(TTSProcessor):
    """Base of the engines that synthesise on this machine, in the bot's model workers:
    ``synthesize`` awaits a job of engine ``key`` in ``models``."""

    __slots__ = ("key", "models")

    def __init__(
        self,
        models: ModelPool,
        key: str,
        *,
        sample_rate: int,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self.models = models
        self.key = key
