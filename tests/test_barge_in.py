"""Barge-in: caller speech over the bot interrupts it, once, and only when it should."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from helpers import observing

from voxpipe import events
from voxpipe.conversation.tracker import ConversationTracker
from voxpipe.frames import (
    UPSTREAM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    Frame,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.barge_in import BargeIn, BargeInSettings
from voxpipe.sessions.store import MemorySessionStore
from voxpipe.testing import RunningChain

RATE = 16000
FRAME = bytes(640)  # 20 ms at 16 kHz


class Output(FrameProcessor):
    """Stands in for the output transport: counts interruptions and what reaches it."""

    def __init__(self) -> None:
        super().__init__(name="output")
        self.interrupts = 0
        self.interruption_frames = 0

    def interrupt(self) -> None:
        self.interrupts += 1

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, InterruptionFrame):
            self.interruption_frames += 1
        await self.push_frame(frame, direction)


class BargeIns(events.Observer):
    def __init__(self) -> None:
        self.calls: list[Call] = []

    def barge_in(self, call: Call) -> None:
        self.calls.append(call)


@dataclass
class Rig:
    task: PipelineTask
    output: Output
    observed: BargeIns

    async def caller(self, frame: Frame) -> None:
        await self.task.push_frame(frame)

    async def speak_ms(self, ms: int) -> None:
        for _ in range(ms // 20):
            await self.task.push_frame(InputAudioFrame(FRAME, RATE))

    async def bot(self, frame: Frame) -> None:
        await self.task.push_frame(frame, UPSTREAM)

    async def settle(self) -> None:
        for _ in range(5):
            await asyncio.sleep(0)


GREETING = "Hello, this is ACME."


async def make_rig(*, greeting: bool = False, **settings: object) -> AsyncIterator[Rig]:
    call = Call(sample_rate=RATE)
    barge_in = BargeInSettings.model_validate(settings).create(call, None)  # type: ignore[arg-type]
    output = Output()
    tracker = ConversationTracker(MemorySessionStore(), greeting=GREETING if greeting else None)
    observed = BargeIns()
    with observing(observed):
        async with RunningChain([barge_in, tracker, output], call=call, timeout_s=5) as chain:
            yield Rig(chain.task, output, observed)
            await chain.end()


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in make_rig(min_speech_ms=300):
        yield r


async def test_caller_speech_over_the_bot_interrupts_after_min_speech_ms(rig: Rig) -> None:
    await rig.bot(BotStartedSpeakingFrame())
    await rig.caller(UserStartedSpeakingFrame())
    await rig.speak_ms(280)
    assert rig.output.interrupts == 0
    await rig.speak_ms(20)
    assert rig.output.interrupts == 1, "every processor is flushed in the same step"
    await rig.settle()
    assert rig.output.interruption_frames == 1
    assert rig.observed.calls == [rig.task.call]


async def test_only_one_interruption_per_stretch_of_bot_speech(rig: Rig) -> None:
    await rig.bot(BotStartedSpeakingFrame())
    await rig.caller(UserStartedSpeakingFrame())
    await rig.speak_ms(1000)
    assert rig.output.interrupts == 1
    await rig.bot(BotStoppedSpeakingFrame())
    await rig.bot(BotStartedSpeakingFrame())
    assert rig.output.interrupts == 2, "speech still going when the bot speaks again"


async def test_caller_speech_while_the_bot_is_silent_does_not_interrupt(rig: Rig) -> None:
    await rig.caller(UserStartedSpeakingFrame())
    await rig.speak_ms(1000)
    await rig.caller(UserStoppedSpeakingFrame())
    await rig.bot(BotStartedSpeakingFrame())
    await rig.speak_ms(500)
    assert rig.output.interrupts == 0
    assert rig.observed.calls == []


async def test_a_short_sound_does_not_interrupt(rig: Rig) -> None:
    await rig.bot(BotStartedSpeakingFrame())
    for _ in range(3):
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(200)
        await rig.caller(UserStoppedSpeakingFrame())
        await rig.speak_ms(200)
    assert rig.output.interrupts == 0


async def test_min_words_needs_that_many_interim_words() -> None:
    async for rig in make_rig(min_speech_ms=100, min_words=2):
        await rig.bot(BotStartedSpeakingFrame())
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(400)
        await rig.caller(InterimTranscriptionFrame("um"))
        assert rig.output.interrupts == 0
        await rig.caller(InterimTranscriptionFrame("wait stop"))
        assert rig.output.interrupts == 1


async def test_the_greeting_is_protected_but_later_speech_is_not() -> None:
    async for rig in make_rig(greeting=True, min_speech_ms=100, protect_greeting=True):
        await rig.caller(TTSStoppedFrame(text=GREETING))
        await rig.bot(BotStartedSpeakingFrame())
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(1000)
        assert rig.output.interrupts == 0
        await rig.bot(BotStoppedSpeakingFrame())
        await rig.caller(UserStoppedSpeakingFrame())
        await rig.bot(BotStartedSpeakingFrame())
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(200)
        assert rig.output.interrupts == 1


async def test_an_unprotected_greeting_can_be_interrupted() -> None:
    async for rig in make_rig(greeting=True, min_speech_ms=100, protect_greeting=False):
        await rig.bot(BotStartedSpeakingFrame())
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(200)
        assert rig.output.interrupts == 1


async def test_disabled_barge_in_never_interrupts() -> None:
    async for rig in make_rig(enabled=False, min_speech_ms=0):
        await rig.bot(BotStartedSpeakingFrame())
        await rig.caller(UserStartedSpeakingFrame())
        await rig.speak_ms(2000)
        assert rig.output.interrupts == 0
        assert not any(isinstance(p, BargeIn) for p in rig.task.processors)
