"""Standby clips: the lines the bot says when something fails, synthesised at ``prepare``.

The filler and goodbye of the bot's ``llm.on_error`` (and its filler for late replies) are the
bot's standby lines (``BotContext.standby_lines``). A cached voice synthesises them at
``prepare`` and pins them in its phrase cache: they play even when the provider is down. When
the provider cannot synthesise them (a cloud voice without network), the packaged piper voice
stands in.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING

from voxpipe.frames import (
    CancelFrame,
    Direction,
    ErrorFrame,
    Frame,
    OutputAudioFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.processors.tts.text import speakable, split_sentences

if TYPE_CHECKING:
    from voxpipe.pipelines.context import BotContext
    from voxpipe.processors.tts.base import CachedTTSSettings

log = logging.getLogger("voxpipe.tts")

# How long ``prepare`` may spend asking the provider for the standby clips.
STANDBY_TIMEOUT_S = 30.0


def standby_lines(ctx: BotContext) -> list[str]:
    """The sentences of the bot's standby lines (``ctx.standby_lines``: the LLM's ``on_error``
    filler and goodbye, its filler for late replies), as ``say`` speaks them."""
    lines = list(ctx.standby_lines)
    sentences: list[str] = []
    for line in lines:
        complete, rest = split_sentences(line)
        for sentence in [*complete, rest]:
            text = " ".join(sentence.split())
            if speakable(text) and text not in sentences:
                sentences.append(text)
    return sentences


async def standby_clips(settings: CachedTTSSettings, ctx: BotContext) -> None:
    """Pin the bot's ``on_error`` sentences in the phrase cache, so they play even when the
    provider fails mid-call: spoken by the provider itself, else by the packaged piper voice;
    what stays without a clip is logged as an error (the bot still starts: the provider may
    come back).
    """
    cache = settings.phrase_cache(ctx)
    missing = [text for text in standby_lines(ctx) if not cache.pinned(text)]
    if not missing:
        return
    provider = getattr(settings, "provider", type(settings).__name__)
    for text, (audio, rate) in (await _own_voice(settings, ctx, missing)).items():
        cache.pin(text, audio, rate)
    missing = [text for text in missing if not cache.pinned(text)]
    if not missing:
        return
    try:
        from voxpipe.processors.tts.packaged import offline_say

        for text in missing:
            audio = await asyncio.to_thread(offline_say, text, ctx.sample_rate)
            cache.pin(text, audio, ctx.sample_rate)
    except Exception as exc:  # a missing stand-in must not stop the bot
        log.error(
            "bot %s: tts %s could not synthesise %s and no local voice stands in (%s): "
            "if it fails mid-call, the caller hears nothing for these lines",
            ctx.name,
            provider,
            missing,
            exc,
        )
        return
    log.warning(
        "bot %s: tts %s could not synthesise %s at start; the packaged piper voice speaks "
        "them (until the bot restarts)",
        ctx.name,
        provider,
        missing,
    )


async def _own_voice(
    settings: CachedTTSSettings, ctx: BotContext, texts: list[str]
) -> dict[str, tuple[bytes, int]]:
    """Speak ``texts`` one by one through a call of the provider with no caller, stopping at
    the first failure (it is down: asking it for the next line would only wait) or after
    ``STANDBY_TIMEOUT_S``; only the sentences spoken come back."""
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.task import PipelineTask

    call = Call(call_id="tts-standby-clips", bot=ctx.name, sample_rate=ctx.sample_rate)
    recorder = _ClipRecorder()
    task = PipelineTask([settings.create(call, ctx), recorder], call)
    runner = asyncio.create_task(task.run())
    try:
        async with asyncio.timeout(STANDBY_TIMEOUT_S):
            for text in texts:
                task.queue_frame(TTSSpeakFrame(text))
                if not await recorder.outcomes.get():
                    break
    except TimeoutError:
        log.warning("bot %s: standby clips took over %.0f s", ctx.name, STANDBY_TIMEOUT_S)
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
