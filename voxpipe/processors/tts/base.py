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

import asyncio
import collections
import logging
import re
import time
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import Field

from voxpipe import events
from voxpipe.frames import (
    DOWNSTREAM,
    UPSTREAM,
    CancelFrame,
    Direction,
    EndFrame,
    ErrorFrame,
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
from voxpipe.pipelines.processor import FrameProcessor, QueuedProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from voxpipe.bots.bot import Bot
    from voxpipe.models.engine import Engine
    from voxpipe.models.pool import ModelPool

log = logging.getLogger("voxpipe.tts")

FRAME_MS = 20
# How long ``prepare`` may spend asking the provider for the standby clips.
STANDBY_TIMEOUT_S = 30.0

# A sentence ends at . ! ? (with closing quotes or brackets) followed by a space, or at a newline.
_SENTENCE_END = re.compile(r"[.!?]+[\"')\]]*\s+|\n+")
_ABBREVIATIONS = frozenset({"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "etc", "e.g", "i.e"})


def split_sentences(text: str) -> tuple[list[str], str]:
    """Cut ``text`` into its complete sentences and the unfinished rest."""
    sentences: list[str] = []
    start = 0
    for match in _SENTENCE_END.finditer(text):
        words = text[start : match.start()].split()
        if words and words[-1].lower().rstrip(".") in _ABBREVIATIONS and "\n" not in match.group():
            continue
        sentence = text[start : match.end()].strip()
        if sentence:
            sentences.append(sentence)
        start = match.end()
    return sentences, text[start:]


def speakable(text: str) -> bool:
    """Whether ``text`` has anything to pronounce (not only punctuation or spaces)."""
    return any(ch.isalnum() for ch in text)


def resample_pcm16(audio: bytes, from_rate: int, to_rate: int) -> bytes:
    """PCM16 mono ``audio`` at ``to_rate`` (soxr, high quality, reproducible: no dither)."""
    if from_rate == to_rate or not audio:
        return audio
    import numpy as np
    import soxr

    samples = np.frombuffer(audio, dtype=np.int16).astype(np.float32) / 32768.0
    out = soxr.resample(samples, from_rate, to_rate) * 32768.0
    return bytes(np.clip(np.rint(out), -32768, 32767).astype(np.int16).tobytes())


def cut_frames(audio: bytes, sample_rate: int, frame_ms: int = FRAME_MS) -> list[bytes]:
    """Cut PCM16 mono audio into frames of ``frame_ms``; the last one is padded with silence."""
    size = sample_rate * 2 * frame_ms // 1000
    frames = [audio[i : i + size] for i in range(0, len(audio), size)]
    if frames and len(frames[-1]) < size:
        frames[-1] = frames[-1] + bytes(size - len(frames[-1]))
    return frames


class PhraseCache:
    """The bot's most recently spoken sentences, kept synthesised (least recently used goes).

    Greetings, prompts and fillers recur in every call: from the cache they play at once and
    cost no synthesis. Only sentences up to ``MAX_CHARS`` long are kept. Standby clips (the
    ``on_error`` lines, made at ``prepare``) are pinned: never evicted, kept even with a
    ``size`` of 0, and always played from here, so a failing provider is never asked for them
    (its error would only set off another filler).

    A burst of calls wants the same sentence at the same moment (twenty callers placed at once
    hear the same greeting): ``shared`` synthesises it once for all of them.
    """

    MAX_CHARS = 200

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[bytes, int]] = collections.OrderedDict()
        self._pinned: dict[str, tuple[bytes, int]] = {}
        self._pending: dict[str, asyncio.Future[tuple[bytes, int]]] = {}

    async def shared(
        self, text: str, synthesize: Callable[[str], Awaitable[tuple[bytes, int]]]
    ) -> tuple[bytes, int]:
        """``synthesize(text)``, or the result of the same synthesis already under way for
        another call (its failure is every waiting call's; one cancelled is done again)."""
        pending = self._pending.get(text)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this call was cancelled, not the synthesis
        future: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self._pending[text] = future
        try:
            spoken = await synthesize(text)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: waiters have their own copy
            else:
                future.cancel()
            raise
        else:
            future.set_result(spoken)
            return spoken
        finally:
            if self._pending.get(text) is future:
                del self._pending[text]

    def get(self, text: str) -> tuple[bytes, int] | None:
        """The audio and rate of ``text``, if kept."""
        pinned = self._pinned.get(text)
        if pinned is not None:
            return pinned
        found = self._entries.get(text)
        if found is not None:
            self._entries.move_to_end(text)
        return found

    def put(self, text: str, audio: bytes, rate: int) -> None:
        """Keep the audio of ``text``."""
        if self.size <= 0 or len(text) > self.MAX_CHARS:
            return
        self._entries[text] = (audio, rate)
        self._entries.move_to_end(text)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def pin(self, text: str, audio: bytes, rate: int) -> None:
        """Keep ``text`` as a standby clip for as long as the bot runs."""
        self._pinned[text] = (audio, rate)
        self._entries.pop(text, None)

    def pinned(self, text: str) -> bool:
        """Whether ``text`` is a standby clip."""
        return text in self._pinned


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

    async def prepare(self, bot: Bot) -> None:
        await self.prepare_engine(bot)
        await standby_clips(self, bot)

    async def prepare_engine(self, bot: Bot) -> None:
        """Load the voice or build the client once per bot; raise ``ProviderError``."""

    def phrase_cache(self, bot: Bot) -> PhraseCache:
        """The bot's phrase cache for this provider and voice (one per distinct settings)."""
        key = f"tts-cache:{self.model_dump_json()}"
        cache = bot.shared.get(key)
        if not isinstance(cache, PhraseCache):
            cache = bot.shared[key] = PhraseCache(self.cache_phrases)
        return cache


def standby_lines(bot: Bot) -> list[str]:
    """The sentences of the bot's ``on_error`` lines (filler, goodbye) and of its filler for
    late replies, as ``say`` speaks them."""
    from voxpipe.processors.llm.base import LLMBaseSettings

    lines: list[str] = []
    for step in bot.steps:
        settings = step.settings
        if isinstance(settings, LLMBaseSettings) and getattr(settings, "kind", "llm") == "llm":
            lines += [settings.on_error.say, settings.on_error.goodbye]
            if settings.filler_after_ms is not None:
                lines.append(settings.filler)
    sentences: list[str] = []
    for line in lines:
        complete, rest = split_sentences(line)
        for sentence in [*complete, rest]:
            text = " ".join(sentence.split())
            if speakable(text) and text not in sentences:
                sentences.append(text)
    return sentences


async def standby_clips(settings: CachedTTSSettings, bot: Bot) -> None:
    """Pin the bot's ``on_error`` sentences in the phrase cache, so they play even when the
    provider fails mid-call: spoken by the provider itself, else by the packaged piper voice;
    what stays without a clip is logged as an error (the bot still starts: the provider may
    come back).
    """
    cache = settings.phrase_cache(bot)
    missing = [text for text in standby_lines(bot) if not cache.pinned(text)]
    if not missing:
        return
    provider = getattr(settings, "provider", type(settings).__name__)
    for text, (audio, rate) in (await _own_voice(settings, bot, missing)).items():
        cache.pin(text, audio, rate)
    missing = [text for text in missing if not cache.pinned(text)]
    if not missing:
        return
    try:
        from voxpipe.processors.tts.piper import offline_say

        for text in missing:
            audio = await asyncio.to_thread(offline_say, text, bot.sample_rate)
            cache.pin(text, audio, bot.sample_rate)
    except Exception as exc:  # a missing stand-in must not stop the bot
        log.error(
            "bot %s: tts %s could not synthesise %s and no local voice stands in (%s): "
            "if it fails mid-call, the caller hears nothing for these lines",
            bot.name,
            provider,
            missing,
            exc,
        )
        return
    log.warning(
        "bot %s: tts %s could not synthesise %s at start; the packaged piper voice speaks "
        "them (until the bot restarts)",
        bot.name,
        provider,
        missing,
    )


async def _own_voice(
    settings: CachedTTSSettings, bot: Bot, texts: list[str]
) -> dict[str, tuple[bytes, int]]:
    """Speak ``texts`` one by one through a call of the provider with no caller, stopping at
    the first failure (it is down: asking it for the next line would only wait) or after
    ``STANDBY_TIMEOUT_S``; only the sentences spoken come back."""
    from voxpipe.pipelines.task import PipelineTask

    call = bot.new_call("tts-standby-clips")
    recorder = _ClipRecorder()
    task = PipelineTask([settings.create(call, bot), recorder], call)
    runner = asyncio.create_task(task.run())
    try:
        async with asyncio.timeout(STANDBY_TIMEOUT_S):
            for text in texts:
                task.queue_frame(TTSSpeakFrame(text))
                if not await recorder.outcomes.get():
                    break
    except TimeoutError:
        log.warning("bot %s: standby clips took over %.0f s", bot.name, STANDBY_TIMEOUT_S)
    finally:
        task.cancel("standby clips made")
        await runner
    return recorder.clips


class _ClipRecorder(FrameProcessor):
    """The tail of the standby-clip call: keeps each sentence's audio, and tells whether each
    sentence was spoken (True) or failed (False: an error or the call's end)."""

    __slots__ = ("_audio", "_rate", "clips", "outcomes")

    def __init__(self) -> None:
        super().__init__(name="standby-clips")
        self.clips: dict[str, tuple[bytes, int]] = {}
        self.outcomes: asyncio.Queue[bool] = asyncio.Queue()
        self._audio = bytearray()
        self._rate = 0

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, OutputAudioFrame):
            self._audio += frame.audio
            self._rate = frame.sample_rate
        elif isinstance(frame, TTSStoppedFrame):
            self.clips[frame.text] = (bytes(self._audio), self._rate)
            self._audio.clear()
            self.outcomes.put_nowait(True)
        elif isinstance(frame, ErrorFrame | CancelFrame):
            self.outcomes.put_nowait(False)
        await self.push_frame(frame, direction)


class LocalTTSSettings(CachedTTSSettings):
    """Settings of a text-to-speech engine that runs on this machine, in the model workers."""

    def engine(self) -> Engine:
        """The engine the model workers load (a ``TTSEngine``)."""
        raise NotImplementedError

    def sample_job(self, text: str) -> tuple[str, tuple[Any, ...]]:
        """The engine's method and arguments that speak ``text`` the way this step does (what
        ``max_calls: auto`` times at start); the job returns ``(pcm16, rate)``."""
        raise NotImplementedError

    async def prepare_engine(self, bot: Bot) -> None:
        from voxpipe.models.shared import load_model

        engine = self.engine()
        await load_model(bot, engine, self.sample_job)
        bot.shared[f"tts:{id(self)}"] = engine.key

    def models(self, bot: Bot) -> tuple[ModelPool, str]:
        """The bot's model pool and the key of this voice's engine in it."""
        from voxpipe.models.shared import models_of

        key = bot.shared.get(f"tts:{id(self)}")
        if key is None:
            raise RuntimeError("the TTS was not prepared (call bot.prepare() first)")
        return models_of(bot), str(key)


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
            self.call.data.setdefault("utterances", []).append(utterance)
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
