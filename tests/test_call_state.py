"""The call state machine, and the tracker that drives it from the frames of a call."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import pytest
from helpers import observing

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.conversation import CallState, can_move, move, state_of
from voxpipe.conversation.tracker import ConversationTracker
from voxpipe.frames import (
    UPSTREAM,
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    InterruptionFrame,
    LLMResponseStartFrame,
    TransferFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.sessions.store import MemorySessionStore, session_store
from voxpipe.testing import RunningChain

S = CallState


class States(events.Observer):
    def __init__(self) -> None:
        self.seen: list[str] = []

    def call_state(self, call: Call, state: str) -> None:
        self.seen.append(state)


@pytest.fixture
def states() -> Any:
    observer = States()
    with observing(observer):
        yield observer


class CountingStore(MemorySessionStore):
    def __init__(self) -> None:
        super().__init__()
        self.saved: list[tuple[str, int]] = []
        self.ended: list[bool] = []

    def save(self, call: Call) -> None:
        super().save(call)
        self.saved.append((state_of(call).value, len(call.history)))

    def end(self, call: Call, *, keep: bool = False) -> None:
        super().end(call, keep=keep)
        self.ended.append(keep)


def test_a_whole_conversation_is_valid(states: States) -> None:
    call = Call()
    assert state_of(call) is S.CONNECTED
    path = [S.GREETING, S.LISTENING, S.PROCESSING, S.SPEAKING, S.LISTENING, S.PROCESSING]
    path += [S.SPEAKING, S.TRANSFERRING, S.ENDED]
    for state in path:
        assert move(call, state)
    assert call.state == "ended"
    assert states.seen == [s.value for s in path]


def test_invalid_transitions_are_rejected_and_logged(
    states: States, caplog: pytest.LogCaptureFixture
) -> None:
    call = Call()
    move(call, S.LISTENING)
    with caplog.at_level(logging.WARNING, logger="voxpipe.call"):
        assert not move(call, S.GREETING)
    assert state_of(call) is S.LISTENING
    assert "listening -> greeting rejected" in caplog.text
    move(call, S.ENDED)
    assert not can_move(call, S.LISTENING)
    assert not move(call, S.LISTENING)
    assert states.seen == ["listening", "ended"]


def test_staying_in_a_state_is_a_silent_no_op(states: States) -> None:
    call = Call()
    move(call, S.LISTENING)
    assert not move(call, S.LISTENING)
    assert states.seen == ["listening"]


async def run_tracker(
    greeting: str | None,
) -> tuple[PipelineTask, CountingStore, asyncio.Task[str]]:
    store = CountingStore()
    chain = await RunningChain(ConversationTracker(store, greeting=greeting)).start()
    assert chain.runner is not None
    return chain.task, store, chain.runner


async def test_frames_drive_the_states_and_every_change_is_saved(states: States) -> None:
    task, store, runner = await run_tracker(greeting="Hello, ACME.")
    call = task.call
    assert state_of(call) is S.GREETING
    await task.push_frame(TTSStoppedFrame(text="Hello, ACME."))
    await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
    assert state_of(call) is S.GREETING
    call.history.append({"role": "assistant", "content": "Hello, ACME."})
    await task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    assert state_of(call) is S.LISTENING
    call.history.append({"role": "user", "content": "Where is my order?"})
    await task.push_frame(LLMResponseStartFrame())
    assert state_of(call) is S.PROCESSING
    await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
    assert state_of(call) is S.SPEAKING
    call.history.append({"role": "assistant", "content": "Let me"})
    await task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    await task.push_frame(LLMResponseStartFrame())
    await task.push_frame(TransferFrame(context="ops", extension="100"))
    assert state_of(call) is S.TRANSFERRING
    task.end()
    assert await asyncio.wait_for(runner, 5) == "end"
    assert states.seen[-1] == "ended"
    assert store.saved == [
        ("greeting", 0),
        ("listening", 1),
        ("processing", 2),
        ("speaking", 2),
        ("listening", 3),
        ("processing", 3),
        ("transferring", 3),
    ]
    assert store.ended == [False]
    assert store.get(call.call_id) is None


async def test_the_greeting_lasts_until_all_its_sentences_are_played() -> None:
    task, _store, runner = await run_tracker(greeting="Hello there. This is ACME, how can I help?")
    await task.push_frame(TTSStoppedFrame(text="Hello there."))
    await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
    await task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    assert state_of(task.call) is S.GREETING, "a pause between sentences is not the end"
    await task.push_frame(TTSStoppedFrame(text="This is ACME, how can I help?"))
    await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
    await task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    assert state_of(task.call) is S.LISTENING
    task.end()
    await asyncio.wait_for(runner, 5)


async def test_a_reply_during_the_greeting_ends_it() -> None:
    task, _store, runner = await run_tracker(greeting="Hello there.")
    await task.push_frame(LLMResponseStartFrame())
    assert state_of(task.call) is S.PROCESSING
    task.end()
    await asyncio.wait_for(runner, 5)


async def test_an_interrupted_turn_goes_back_to_listening() -> None:
    task, _store, runner = await run_tracker(greeting=None)
    assert state_of(task.call) is S.LISTENING
    await task.push_frame(LLMResponseStartFrame())
    await task.push_frame(InterruptionFrame())
    assert state_of(task.call) is S.LISTENING
    task.cancel("caller hung up")
    await asyncio.wait_for(runner, 5)
    assert state_of(task.call) is S.ENDED


class Latencies(events.Observer):
    def __init__(self) -> None:
        self.seconds: list[float] = []

    def turn_latency(self, call: Call, seconds: float) -> None:
        self.seconds.append(seconds)


async def test_turn_latency_runs_from_the_end_of_caller_speech_to_the_bots_first_audio() -> None:
    latencies = Latencies()
    with observing(latencies):
        task, _store, runner = await run_tracker(greeting=None)
        await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
        assert latencies.seconds == [], "bot audio with no caller turn before it is no turn"
        await task.push_frame(UserStartedSpeakingFrame())
        await task.push_frame(UserStoppedSpeakingFrame())
        await asyncio.sleep(0.05)
        await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
        await task.push_frame(BotStartedSpeakingFrame(), UPSTREAM)
        task.end()
        await asyncio.wait_for(runner, 5)
    assert len(latencies.seconds) == 1, "one turn, one figure"
    assert latencies.seconds[0] >= 0.04


async def test_a_failed_call_keeps_its_record() -> None:
    task, store, runner = await run_tracker(greeting=None)
    task.fail(RuntimeError("boom"), source="test")
    await asyncio.wait_for(runner, 5)
    assert store.ended == [True]


async def test_every_bot_call_gets_a_tracker_just_before_the_transport() -> None:
    bot = Bot.from_yaml("name: t\ngreeting: Hi\npipeline:\n  - echo: {}\n")
    call = bot.new_call()
    tail = FrameProcessor(name="output")
    task = bot.create_pipeline(call, head=[FrameProcessor(name="input")], tail=[tail])
    names = [p.name for p in task.processors]
    assert names == ["input", "echo", "conversation", "output"]
    tracker = task.processors[2]
    assert isinstance(tracker, ConversationTracker)
    assert session_store(bot) is bot.shared["session_store"]
    assert isinstance(session_store(bot), MemorySessionStore)
