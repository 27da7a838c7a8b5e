"""Silence timeout: a silent caller is prompted, then told goodbye and hung up on."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from helpers import observing

from voxpipe import events
from voxpipe.conversation import CallState, move
from voxpipe.frames import (
    UPSTREAM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    DTMFFrame,
    Frame,
    HangupFrame,
    StartFrame,
    TTSSpeakFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.silence_timeout import SilenceTimeoutSettings
from voxpipe.testing import RunningChain

AFTER_S = 0.2


class Speaker(FrameProcessor):
    """Stands in for text-to-speech and the transport: notes what the bot was asked to say."""

    def __init__(self) -> None:
        super().__init__(name="speaker")
        self.said: list[tuple[float, str]] = []
        self.hangups: list[str] = []
        self.started_at = 0.0
        self.spoke = asyncio.Event()

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, StartFrame):
            self.started_at = time.monotonic()
        elif isinstance(frame, TTSSpeakFrame):
            self.said.append((time.monotonic() - self.started_at, frame.text))
            self.spoke.set()
        elif isinstance(frame, HangupFrame):
            self.hangups.append(frame.reason)
        await self.push_frame(frame, direction)

    def texts(self) -> list[str]:
        return [text for _, text in self.said]


class Hangups(events.Observer):
    def __init__(self) -> None:
        self.count = 0

    def silence_hangup(self, call: Call) -> None:
        self.count += 1


@dataclass
class Rig:
    task: PipelineTask
    speaker: Speaker
    runner: asyncio.Task[str]
    hangups: Hangups = field(default_factory=Hangups)

    async def next_said(self) -> str:
        self.speaker.spoke.clear()
        await asyncio.wait_for(self.speaker.spoke.wait(), 5)
        return self.speaker.said[-1][1]


async def make_rig(**settings: object) -> AsyncIterator[Rig]:
    values = {"after_s": AFTER_S, "prompt": "Still there?", "goodbye": "Bye.", **settings}
    call = Call()
    processor = SilenceTimeoutSettings.model_validate(values).create(call, None)  # type: ignore[arg-type]
    speaker = Speaker()
    hangups = Hangups()
    with observing(hangups):
        async with RunningChain([processor, speaker], call=call, timeout_s=5) as chain:
            assert chain.runner is not None
            yield Rig(chain.task, speaker, chain.runner, hangups)


@pytest.fixture
async def rig() -> AsyncIterator[Rig]:
    async for r in make_rig():
        yield r


async def test_silent_caller_is_prompted_then_hung_up(rig: Rig) -> None:
    assert await rig.next_said() == "Still there?"
    assert await asyncio.wait_for(rig.runner, 5) == "silence"
    assert rig.speaker.texts() == ["Still there?", "Bye."]
    assert rig.speaker.hangups == ["silence"]
    assert rig.hangups.count == 1
    (prompt_at, _), (goodbye_at, _) = rig.speaker.said
    assert prompt_at >= AFTER_S * 0.9
    assert goodbye_at - prompt_at >= AFTER_S * 0.9


async def test_a_caller_who_answers_the_prompt_keeps_the_call(rig: Rig) -> None:
    assert await rig.next_said() == "Still there?"
    await rig.task.push_frame(UserStartedSpeakingFrame())
    await asyncio.sleep(AFTER_S * 3)
    await rig.task.push_frame(UserStoppedSpeakingFrame())
    assert await rig.next_said() == "Still there?", "answered: the count starts again"
    assert not rig.runner.done()
    assert rig.hangups.count == 0


async def test_a_key_press_answers_the_prompt(rig: Rig) -> None:
    assert await rig.next_said() == "Still there?"
    await rig.task.push_frame(DTMFFrame("5"))
    assert await rig.next_said() == "Still there?"
    assert rig.hangups.count == 0


async def test_the_clock_stops_while_the_bot_speaks(rig: Rig) -> None:
    await rig.task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
    await asyncio.sleep(AFTER_S * 4)
    assert rig.speaker.said == []
    stopped = time.monotonic() - rig.speaker.started_at
    await rig.task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    assert await rig.next_said() == "Still there?"
    assert rig.speaker.said[0][0] - stopped >= AFTER_S * 0.9


async def test_the_clock_stops_while_the_caller_speaks(rig: Rig) -> None:
    await rig.task.push_frame(UserStartedSpeakingFrame())
    await asyncio.sleep(AFTER_S * 4)
    assert rig.speaker.said == []


async def test_no_prompts_means_hanging_up_after_the_first_silence() -> None:
    async for rig in make_rig(max_prompts=0, goodbye=""):
        assert await asyncio.wait_for(rig.runner, 5) == "silence"
        assert rig.speaker.said == []
        assert rig.speaker.hangups == ["silence"]


async def test_max_call_s_says_its_own_goodbye() -> None:
    async for rig in make_rig(after_s=30, max_call_s=0.3, max_call_goodbye="Time is up."):
        await rig.task.push_frame(UserStartedSpeakingFrame())
        assert await asyncio.wait_for(rig.runner, 5) == "max_call_s"
        assert rig.speaker.texts() == ["Time is up."]
        assert rig.hangups.count == 0


def test_defaults_match_the_documented_behaviour() -> None:
    settings = SilenceTimeoutSettings()
    assert (settings.after_s, settings.max_prompts, settings.max_call_s) == (10.0, 1, None)


async def test_no_prompt_while_the_bot_works_on_an_answer(rig: Rig) -> None:
    move(rig.task.call, CallState.LISTENING)
    move(rig.task.call, CallState.PROCESSING)
    await asyncio.sleep(AFTER_S * 4)
    assert rig.speaker.said == []
    move(rig.task.call, CallState.LISTENING)
    assert await rig.next_said() == "Still there?"
