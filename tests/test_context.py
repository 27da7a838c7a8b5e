"""The processors' contract: ``prepare(ctx)``/``create(call, ctx)`` with any ``BotContext``.

A plugin author's test hands the steps a plain object with the context's attributes, no
``Bot``: that is all a processor type may rely on (``voxpipe.pipelines.context``).
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

from voxpipe.bots.bot import Bot
from voxpipe.frames import (
    UPSTREAM,
    Direction,
    EndFrame,
    Frame,
    LLMTextFrame,
    OutputAudioFrame,
    TTSStartedFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.context import BotContext
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import Settings
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.llm.scripted import ScriptedSettings
from voxpipe.processors.tts.base import CachedTTSSettings, TTSProcessor


@dataclass
class PlainContext:
    """A context built by hand, as a plugin's test would."""

    name: str = "plain"
    sample_rate: int = 16000
    greeting: str | None = "Hello there."
    tools: Mapping[str, Settings] = field(default_factory=dict)
    standby_lines: list[str] = field(default_factory=list)
    shared: dict[str, Any] = field(default_factory=dict)


class CountingVoiceSettings(CachedTTSSettings):
    """A voice that says each word as 20 ms of quiet and counts what it was asked."""

    type_name: ClassVar[str] = "tts"
    provider: Literal["counting"] = "counting"

    def create(self, call: Call, ctx: BotContext) -> FrameProcessor:
        return CountingVoice(sample_rate=call.sample_rate, cache=self.phrase_cache(ctx))


class CountingVoice(TTSProcessor):
    provider: ClassVar[str] = "counting"
    asked: ClassVar[list[str]] = []

    async def synthesize(self, text: str) -> tuple[bytes, int]:
        CountingVoice.asked.append(text)
        return bytes(640 * len(text.split())), 16000


class Tail(FrameProcessor):
    def __init__(self) -> None:
        super().__init__(name="tail")
        self.frames: list[Frame] = []
        self.started = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        self.frames.append(frame)
        if isinstance(frame, OutputAudioFrame):
            self.started.set()
        await self.push_frame(frame, direction)


def test_the_application_bot_is_a_context() -> None:
    bot = Bot.from_yaml("name: b\ngreeting: Hi\npipeline:\n  - echo: {}\n")
    ctx: BotContext = bot
    assert (ctx.name, ctx.sample_rate, ctx.greeting, dict(ctx.tools)) == ("b", 16000, "Hi", {})
    assert ctx.shared is bot.shared


def test_the_bot_gathers_its_steps_standby_lines() -> None:
    bot = Bot.from_yaml(
        "name: b\npipeline:\n  - llm: {provider: scripted, filler_after_ms: null,"
        " on_error: {say: 'Oops.', goodbye: 'Bye now.'}}\n  - tts: {provider: tone}\n"
    )
    assert bot.standby_lines == ["Oops.", "Bye now."]


async def test_steps_run_on_a_context_made_by_hand() -> None:
    CountingVoice.asked.clear()
    ctx = PlainContext(standby_lines=["Sorry, one moment.", "Goodbye."])
    llm = ScriptedSettings.model_validate({"provider": "scripted"})
    voice = CountingVoiceSettings()
    await llm.prepare(ctx)
    await voice.prepare(ctx)
    # The voice made the context's standby lines at prepare and keeps them.
    assert CountingVoice.asked == ["Sorry, one moment.", "Goodbye."]
    cache = voice.phrase_cache(ctx)
    assert cache.pinned("Sorry, one moment.") and cache.pinned("Goodbye.")

    call = Call(bot=ctx.name, sample_rate=ctx.sample_rate)
    tail = Tail()
    task = PipelineTask([llm.create(call, ctx), voice.create(call, ctx), tail], call)
    runner = asyncio.create_task(task.run())
    await asyncio.wait_for(tail.started.wait(), 10)
    task.queue_frame(EndFrame())
    await asyncio.wait_for(runner, 10)
    spoken = [f.text for f in tail.frames if isinstance(f, TTSStartedFrame)]
    assert spoken == ["Hello there."]  # the context's greeting
    assert not [f for f in tail.frames if isinstance(f, LLMTextFrame)]
    # The ledger of the call's speech holds the greeting's sentence.
    assert [u.text for u in call.speech.utterances] == ["Hello there."]
    assert call.history[0] == {"role": "assistant", "content": "Hello there."}


async def test_a_voice_reports_a_lost_sentence_by_kind_not_by_name() -> None:
    from voxpipe.frames import SPEECH_LOST, ErrorFrame

    class Failing(CountingVoice):
        async def synthesize(self, text: str) -> tuple[bytes, int]:
            raise RuntimeError("voice down")

    seen: list[ErrorFrame] = []

    class Head(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, ErrorFrame) and direction is UPSTREAM:
                seen.append(frame)
            await self.push_frame(frame, direction)

    call = Call(sample_rate=16000)
    voice = Failing(sample_rate=16000)
    voice.name = "speaker"  # no "tts." prefix: the kind says what was lost
    from voxpipe.frames import TTSSpeakFrame

    task = PipelineTask([Head(name="head"), voice], call)
    runner = asyncio.create_task(task.run())
    task.queue_frame(TTSSpeakFrame("Hello."))
    task.queue_frame(EndFrame())
    await asyncio.wait_for(runner, 10)
    assert [(e.source, e.kind, e.fatal) for e in seen] == [("speaker", SPEECH_LOST, False)]
