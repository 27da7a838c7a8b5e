"""What every text-to-speech processor shares: sentence streaming, framing, timing, interruption.

A TTS processor speaks ``TTSSpeakFrame`` text, and ``LLMTextFrame`` text sentence by sentence as
soon as each sentence is complete (the rest is flushed at ``LLMResponseEndFrame`` or at the end
of the call), so the caller hears the first sentence while the LLM is still writing the next.
Each sentence becomes ``TTSStartedFrame``, 20 ms ``OutputAudioFrame``s at the pipeline rate that
all carry the sentence's ``Utterance``, then ``TTSStoppedFrame``. An interruption drops the text
waiting to be spoken. Providers implement ``synthesize``; local engines derive from
``LocalTTSProcessor`` so that synthesis runs in the bot's bounded executor.
"""

from __future__ import annotations

import asyncio
import collections
import re
import time
from typing import TYPE_CHECKING, ClassVar

from pydantic import Field

from voxpipe import events
from voxpipe.frames import (
    UPSTREAM,
    Direction,
    EndFrame,
    Frame,
    HangupFrame,
    LLMResponseEndFrame,
    LLMTextFrame,
    OutputAudioFrame,
    StartFrame,
    SystemFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    Utterance,
)
from voxpipe.pipelines.processor import QueuedProcessor
from voxpipe.pipelines.settings import ProcessorSettings

if TYPE_CHECKING:
    import concurrent.futures

    from voxpipe.pipelines.bot import Bot

FRAME_MS = 20

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
    cost no synthesis. Only sentences up to ``MAX_CHARS`` long are kept.
    """

    MAX_CHARS = 200

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[bytes, int]] = collections.OrderedDict()

    def get(self, text: str) -> tuple[bytes, int] | None:
        """The audio and rate of ``text``, if kept."""
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


class TTSProviderSettings(ProcessorSettings):
    """Settings every text-to-speech provider has."""


class CachedTTSSettings(TTSProviderSettings):
    """Settings of a provider whose synthesised sentences are worth keeping."""

    cache_phrases: int = Field(
        64,
        ge=0,
        le=10000,
        description="Sentences kept synthesised per bot, so that greetings, prompts and "
        "fillers play at once (0: none).",
    )

    def phrase_cache(self, bot: Bot) -> PhraseCache:
        """The bot's phrase cache for this provider and voice (one per distinct settings)."""
        key = f"tts-cache:{self.model_dump_json()}"
        cache = bot.shared.get(key)
        if not isinstance(cache, PhraseCache):
            cache = bot.shared[key] = PhraseCache(self.cache_phrases)
        return cache


class LocalTTSSettings(CachedTTSSettings):
    """Settings of a text-to-speech engine that runs on this machine."""

    workers: int = Field(
        1,
        ge=1,
        le=16,
        description="Threads that synthesise for all calls of the bot (the bounded executor).",
    )


class TTSProcessor(QueuedProcessor):
    """Speaks text: sentence by sentence, in 20 ms frames at the pipeline rate."""

    provider: ClassVar[str] = ""

    __slots__ = ("_cache", "_text", "sample_rate")

    def __init__(self, *, sample_rate: int, cache: PhraseCache | None = None) -> None:
        super().__init__(name=f"tts.{self.provider}")
        self.sample_rate = sample_rate
        self._text = ""
        self._cache = cache

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        # Frames going upstream (the transport's bot started/stopped speaking, errors) never
        # wait behind the sentences queued for synthesis.
        if direction is UPSTREAM:
            await self.push_frame(frame, direction)
        else:
            await super().process_frame(frame, direction)

    async def handle_system_frame(self, frame: SystemFrame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self.sample_rate = frame.sample_rate
        await self.push_frame(frame, direction)

    async def handle_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, LLMTextFrame):
            sentences, self._text = split_sentences(self._text + frame.text)
            for sentence in sentences:
                await self.say(sentence)
        elif isinstance(frame, TTSSpeakFrame):
            sentences, rest = split_sentences(frame.text)
            for sentence in [*sentences, rest]:
                await self.say(sentence)
        else:
            if isinstance(frame, LLMResponseEndFrame | EndFrame | HangupFrame):
                await self.flush()
            await self.push_frame(frame, direction)

    async def flush(self) -> None:
        """Speak the LLM text held back waiting for the end of its sentence."""
        rest, self._text = self._text, ""
        await self.say(rest)

    def interrupt(self) -> None:
        self._text = ""
        super().interrupt()

    async def say(self, text: str) -> None:
        """Synthesise one sentence and push it as framed audio between started/stopped frames."""
        text = " ".join(text.split())
        if not speakable(text):
            return
        await self.push_frame(TTSStartedFrame(text=text))
        started = time.perf_counter()
        cached = self._cache.get(text) if self._cache is not None else None
        if cached is None:
            audio, rate = await self.synthesize(text)
            if self._cache is not None:
                self._cache.put(text, audio, rate)
        else:
            audio, rate = cached
        events.emit.provider_ttfb(self.call, "tts", self.provider, time.perf_counter() - started)
        frames = cut_frames(resample_pcm16(audio, rate, self.sample_rate), self.sample_rate)
        utterance = Utterance(text, frames_total=len(frames))
        self.call.data.setdefault("utterances", []).append(utterance)  # the LLM's history reads it
        for chunk in frames:
            await self.push_frame(OutputAudioFrame(chunk, self.sample_rate, utterance=utterance))
        await self.push_frame(TTSStoppedFrame(text=text))

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        """Speak ``text``: PCM16 mono audio and its sample rate (any rate; it is resampled)."""
        raise NotImplementedError


class LocalTTSProcessor(TTSProcessor):
    """Base of the engines that synthesise on this machine with a blocking library."""

    __slots__ = ("_executor",)

    def __init__(
        self,
        *,
        sample_rate: int,
        executor: concurrent.futures.Executor,
        cache: PhraseCache | None = None,
    ) -> None:
        super().__init__(sample_rate=sample_rate, cache=cache)
        self._executor = executor

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.synthesize_blocking, text)

    def synthesize_blocking(self, text: str) -> tuple[bytes, int]:
        """Speak ``text`` in an executor thread: PCM16 mono audio and its sample rate."""
        raise NotImplementedError
