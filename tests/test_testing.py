"""voxpipe.testing: running processors on frames, the recorder, until, and the fakes."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from voxpipe.frames import (
    UPSTREAM,
    Direction,
    EndFrame,
    ErrorFrame,
    Frame,
    HangupFrame,
    InterimTranscriptionFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    OutputAudioFrame,
    TextFrame,
    ToolCallFrame,
    TranscriptionFrame,
    TranscriptsPendingFrame,
    TTSSpeakFrame,
    TTSStoppedFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.testing import (
    FakeLLM,
    FakeSTT,
    FakeTTS,
    Lost,
    Recorder,
    RunningChain,
    ToolCall,
    audio_ms,
    caller_says,
    run_frames,
    speech_frames,
    until,
)
from voxpipe.tools import build_toolbox


class Shout(FrameProcessor):
    """Upper-cases text; answers "boom" with a (non-fatal) error upstream."""

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if isinstance(frame, TextFrame) and frame.text == "boom":
            await self.push_error("it went boom")
            return
        if isinstance(frame, TextFrame):
            frame = TextFrame(frame.text.upper())
        await self.push_frame(frame, direction)


class FailsToStart(FrameProcessor):
    async def start(self) -> None:
        raise RuntimeError("no provider")


def tone_of(seconds: float, rate: int = 16000) -> bytes:
    return b"\x10\x00" * int(seconds * rate)


# --- running frames ---------------------------------------------------------------------------


async def test_run_frames_returns_what_came_out_each_way() -> None:
    out = await run_frames(Shout(), [TextFrame("hello"), TextFrame("boom"), TextFrame("bye")])
    assert out.texts() == ["HELLO", "BYE"]
    (error,) = out.of(ErrorFrame, UPSTREAM)
    assert error.error == "it went boom" and error.source == "Shout" and not error.fatal
    # The engine sends a non-fatal error on down the chain too, as in a real call; the
    # harness's StartFrame and EndFrame are left out.
    assert sorted(k.__name__ for k in out.kinds()) == ["ErrorFrame", "TextFrame", "TextFrame"]
    assert out.end_reason == "end"


async def test_run_frames_runs_a_chain_in_order_with_the_call_given() -> None:
    call = Call(call_id="c-1", sample_rate=8000)
    seen: list[str] = []

    class Note(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: Direction) -> None:
            if isinstance(frame, TextFrame):
                seen.append(f"{self.call.call_id}:{frame.text}")
            await self.push_frame(frame, direction)

    out = await run_frames([Note(), Shout(), Note()], [TextFrame("a")], call=call)
    assert seen == ["c-1:a", "c-1:A"]
    assert out.call is call and out.texts() == ["A"]


async def test_upstream_frames_are_sent_from_the_tail() -> None:
    out = await run_frames(Shout(), [TextFrame("up")], direction=UPSTREAM)
    assert out.texts() == []
    assert [f.text for f in out.of(TextFrame, UPSTREAM)] == ["UP"]


async def test_a_processor_that_cannot_start_ends_the_call_with_its_error() -> None:
    out = await run_frames(FailsToStart(), [TextFrame("never sent")])
    assert out.end_reason.startswith("error: FailsToStart")
    assert "no provider" in out.end_reason
    assert out.texts() == []


async def test_a_hangup_ends_the_call_and_the_steps_may_wait() -> None:
    async def hang_up(chain: RunningChain) -> None:
        await chain.send(HangupFrame(reason="done"), direction=UPSTREAM)
        await chain.finished()

    out = await run_frames(Shout(), [TextFrame("last"), hang_up], end=False)
    assert out.end_reason == "done"
    assert out.texts() == ["LAST"] and out.kinds()[-1] is HangupFrame


async def test_an_end_frame_a_processor_sends_is_kept_in_what_came_out() -> None:
    class Ender(FrameProcessor):
        async def process_frame(self, frame: Frame, direction: Direction) -> None:
            await self.push_frame(frame, direction)
            if isinstance(frame, TextFrame):
                await self.push_frame(EndFrame(reason="done talking"))

    out = await run_frames(Ender(), [TextFrame("last")])
    assert out.kinds() == [TextFrame, EndFrame] and out.end_reason == "done talking"


async def test_until_times_out_with_what_it_waited_for() -> None:
    with pytest.raises(TimeoutError, match=r"not within 0\.05 s: the moon"):
        await until(lambda: False, 0.05, what="the moon")
    flag: list[int] = []
    asyncio.get_running_loop().call_later(0.01, flag.append, 1)
    await until(lambda: flag, 5)
    assert flag == [1]


async def test_the_recorder_wakes_at_each_frame_and_says_what_it_saw_when_it_gives_up() -> None:
    async with RunningChain(Shout(), timeout_s=5) as chain:
        waiting = asyncio.create_task(chain.wait_for(TextFrame, 2))
        await chain.send(TextFrame("one"))
        assert not waiting.done()
        await chain.send(TextFrame("two"))
        assert [f.text for f in await waiting] == ["ONE", "TWO"]
        with pytest.raises(TimeoutError, match=r"recorder\.downstream.*TextFrame', 'TextFrame'"):
            await chain.down.wait_for(lambda: False, 0.05)
    assert chain.end_reason == "cancel: test over"


async def test_a_recorder_in_a_chain_keeps_both_ways_apart() -> None:
    middle = Recorder()
    out = await run_frames([Shout(), middle], [TextFrame("down"), TextFrame("boom")], timeout_s=5)
    assert middle.texts() == ["DOWN"]
    assert [type(f) for f in middle.up] == []  # the error went up from Shout, before it
    assert middle.of(ErrorFrame) == out.of(ErrorFrame)  # the engine sent it down as well
    assert len(out.of(ErrorFrame, UPSTREAM)) == 1


def test_speech_frames_put_the_vad_events_around_the_audio() -> None:
    frames = speech_frames(tone_of(0.1), 16000, vad_after_ms=40)
    kinds = [type(f).__name__ for f in frames]
    assert kinds == ["InputAudioFrame"] * 2 + ["UserStartedSpeakingFrame"] + [
        "InputAudioFrame"
    ] * 3 + ["UserStoppedSpeakingFrame"]
    assert caller_says("hi")[1] == TranscriptionFrame("hi")


# --- the fake speech-to-text ---------------------------------------------------------------------


async def test_fake_stt_turns_each_utterance_into_the_next_transcript() -> None:
    stt = FakeSTT(["I want to pay", "my bill"], interim=True)
    frames = [*speech_frames(tone_of(0.2), 16000), *speech_frames(tone_of(0.1), 16000)]
    out = await run_frames(stt, frames)
    assert [f.text for f in out.of(TranscriptionFrame)] == ["I want to pay", "my bill"]
    assert [f.text for f in out.of(InterimTranscriptionFrame)] == [
        "I",
        "I want",
        "I want to",
        "my",
    ]
    # Each utterance is owed, then settled.
    assert [f.count for f in out.of(TranscriptsPendingFrame)] == [1, 0, 1, 0]
    # It heard the audio: the 20 ms before the VAD fired (pre-roll) and the rest.
    assert [len(audio) for audio in stt.utterances] == [6400, 3200]


async def test_fake_stt_loses_an_utterance_and_runs_out_of_script_loudly() -> None:
    stt = FakeSTT(["hello", Lost("engine crashed")], delay_s=0.01)
    out = await run_frames(
        stt,
        [*speech_frames(tone_of(0.06), 16000)] * 2,
        until=lambda chain: chain.up.of(ErrorFrame),
    )
    assert [f.text for f in out.of(TranscriptionFrame)] == ["hello"]
    (error,) = out.of(ErrorFrame, UPSTREAM)
    assert error.source == "stt.fake" and "engine crashed" in error.error

    out = await run_frames(FakeSTT([]), speech_frames(tone_of(0.06), 16000), end=False)
    assert "LookupError" in out.end_reason or "no scripted transcript" in out.end_reason
    assert "utterance 1 has no scripted transcript" in out.end_reason


async def test_fake_stt_keeps_the_order_of_late_results() -> None:
    stt = FakeSTT(["first", "second", "third"], delay_s=0.02)
    frames = [*speech_frames(tone_of(0.04), 16000)] * 3
    out = await run_frames(
        stt, frames, until=lambda chain: len(chain.down.of(TranscriptionFrame)) == 3
    )
    assert [f.text for f in out.of(TranscriptionFrame)] == ["first", "second", "third"]


# --- the fake LLM ---------------------------------------------------------------------------------


async def test_fake_llm_answers_each_turn_with_the_next_reply() -> None:
    llm = FakeLLM(["Hello, how can I help?", "Your bill is 12 euros."])
    frames = [*caller_says("hi"), lambda c: c.wait_for(LLMResponseEndFrame)]
    frames += [*caller_says("what do I owe"), lambda c: c.wait_for(LLMResponseEndFrame, 2)]
    out = await run_frames(llm.processor(), frames)
    replies = "".join(f.text for f in out.of(LLMTextFrame))
    assert replies == "Hello, how can I help?Your bill is 12 euros."
    assert [r.user_text for r in llm.requests] == ["hi", "what do I owe"]
    assert out.call.history[-2:] == [
        {"role": "user", "content": "what do I owe"},
        {"role": "assistant", "content": "Your bill is 12 euros."},
    ]
    assert len(out.of(LLMResponseStartFrame)) == 2


async def test_fake_llm_calls_tools_and_fails_as_a_provider() -> None:
    toolbox = build_toolbox(["hangup"], {})
    llm = FakeLLM([["Goodbye then.", ToolCall("t1", "hangup", {})]])
    out = await run_frames(
        llm.processor(toolbox=toolbox),
        [*caller_says("bye")],
        until=lambda c: c.down.of(HangupFrame),
    )
    (tool,) = out.of(ToolCallFrame)
    assert tool.name == "hangup" and llm.requests[0].tools == ["hangup"]

    broken = FakeLLM([ConnectionError("provider down")])
    out = await run_frames(
        broken.processor(retries=0, on_error={"say": "Sorry.", "then": "hangup"}),
        caller_says("hello"),
        until=lambda c: c.down.of(HangupFrame),
    )
    assert "Sorry." in [f.text for f in out.of(TTSSpeakFrame)]
    assert len(broken.requests) == 1


async def test_fake_llm_without_a_reply_left_says_so() -> None:
    llm = FakeLLM([])
    with pytest.raises(LookupError, match="no reply scripted for request 1"):
        async for _ in llm.stream([{"role": "user", "content": "hi"}], [], []):
            pass


# --- the fake text-to-speech ----------------------------------------------------------------------


async def test_fake_tts_speaks_tones_of_a_known_length() -> None:
    tts = FakeTTS(word_ms=100, synth_rate=16000)
    # The step speaks at the call's rate (the start frame's), whatever it synthesises at.
    speak = [TTSSpeakFrame("Hello there. How are you today?")]
    out = await run_frames(tts, speak, call=Call(sample_rate=8000))
    assert [f.text for f in out.of(TTSStoppedFrame)] == ["Hello there.", "How are you today?"]
    assert audio_ms(out.down) == pytest.approx(600, abs=20)
    assert {f.sample_rate for f in out.of(OutputAudioFrame)} == {8000}
    assert tts.spoken == ["Hello there.", "How are you today?"]


async def test_fake_tts_fails_on_the_texts_it_is_told() -> None:
    tts = FakeTTS(fail={"Broken sentence."})
    out = await run_frames(tts, [TTSSpeakFrame("Fine. Broken sentence."), TTSSpeakFrame("Ok.")])
    assert [f.text for f in out.of(TTSStoppedFrame)] == ["Fine.", "Ok."]
    (error,) = out.of(ErrorFrame, UPSTREAM)
    assert error.source == "tts.fake" and "Broken sentence." in error.error


async def test_the_fakes_make_a_whole_turn_together() -> None:
    """A simulated caller says something: the words become a reply that plays as audio."""
    chain = [FakeSTT(["transfer me"]), FakeLLM(["Transferring you now."]).processor(), FakeTTS()]
    out = await run_frames(
        chain,
        speech_frames(tone_of(0.3), 16000),
        until=lambda c: c.down.of(TTSStoppedFrame),
    )
    assert [f.text for f in out.of(TTSStoppedFrame)] == ["Transferring you now."]
    assert audio_ms(out.down) == pytest.approx(300, abs=20)
    assert out.call.history[0] == {"role": "user", "content": "transfer me"}
    assert not out.of(EndFrame)


# --- the developers' guide ------------------------------------------------------------------------

DEVELOPERS = Path(__file__).resolve().parents[1] / "DEVELOPERS.md"


def guide_example() -> str:
    """The Python block of DEVELOPERS.md's "Testing" section."""
    section = DEVELOPERS.read_text(encoding="utf-8").split("\n## Testing\n", 1)[1]
    section = section.split("\n## ", 1)[0]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


async def test_the_developers_guide_example_runs_and_can_fail() -> None:
    namespace: dict[str, Any] = {}
    exec(compile(guide_example(), str(DEVELOPERS), "exec"), namespace)
    tests = {name: f for name, f in namespace.items() if name.startswith("test_")}
    assert sorted(tests) == ["test_polite_alone", "test_polite_in_a_turn"]
    for test in tests.values():
        await test()
    # The same tests fail when the processor does not do what they say.
    namespace["Polite"].process_frame = namespace["FrameProcessor"].process_frame
    for test in tests.values():
        with pytest.raises(AssertionError):
            await test()
