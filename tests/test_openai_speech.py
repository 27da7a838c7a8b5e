"""OpenAI-compatible speech-to-text and text-to-speech through the official ``openai`` SDK,
against a local fake speaking the documented wire format (tests/fakes/openai_audio.py:
multipart uploads, ``transcript.text.delta``/``done`` events, chunked raw PCM)."""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from fakes.openai_audio import SPEECH_RATE, WORD_MS, Answer, FakeOpenAIAudio
from helpers import AUDIO, RunningCalls, observing

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.bots.config import ConfigError
from voxpipe.frames import (
    EndFrame,
    ErrorFrame,
    InterimTranscriptionFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
)
from voxpipe.testing import RunningChain, speech_frames


def caller_audio(rate: int) -> bytes:
    """A real caller utterance at ``rate`` (PCM16 mono)."""
    name = "caller_operator_16k.wav" if rate == 16000 else "caller_operator_8k.wav"
    with wave.open(str(AUDIO / name)) as wav:
        return wav.readframes(wav.getnframes())


class Errors(events.Observer):
    def __init__(self) -> None:
        self.kinds: list[str] = []

    def error(self, call: Any, kind: str) -> None:
        self.kinds.append(kind)


@pytest.fixture
async def api() -> AsyncIterator[FakeOpenAIAudio]:
    async with FakeOpenAIAudio() as server:
        yield server


@pytest.fixture
async def start_call() -> AsyncIterator[Callable[..., Any]]:
    bots: list[Bot] = []

    async def start(rate: int, step: str, settings: dict[str, Any]) -> RunningChain:
        block = json.dumps({"provider": "openai_compatible", "backoff_s": 0.01, **settings})
        bot = Bot.from_yaml(
            f"name: openai-speech\ntransport: {{audiosocket: {{sample_rate: {rate}}}}}\n"
            f"pipeline:\n  - {step}: {block}\n"
        )
        bots.append(bot)
        return await calls.chain(bot)

    async with RunningCalls() as calls:
        yield start
    for bot in bots:
        await bot.close()


async def speak(call: RunningChain, audio: bytes, rate: int) -> None:
    """The caller says ``audio``: VAD start, 20 ms frames of it, VAD stop."""
    await call.send(*speech_frames(audio, rate))


# --- speech-to-text ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_the_utterance_is_uploaded_as_a_wav_file_and_its_transcript_comes_back(
    api: FakeOpenAIAudio, start_call: Callable[..., Any], rate: int
) -> None:
    api.transcripts.append(Answer("I'd like to speak to an operator."))
    call = await start_call(
        rate, "stt", {"base_url": api.url, "model": "whisper-1", "language": "en-US"}
    )
    audio = caller_audio(rate)
    await speak(call, audio, rate)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    assert [f.text for f in call.down.of(TranscriptionFrame)] == [
        "I'd like to speak to an operator."
    ]
    (request,) = api.of("/v1/audio/transcriptions")
    assert request.fields["model"] == "whisper-1"
    assert request.fields["language"] == "en"
    assert request.fields["response_format"] == "json"
    uploaded_rate, pcm = request.wav()
    assert uploaded_rate == rate
    # The whole utterance plus the frame heard before the VAD fired (the pre-roll).
    assert pcm == audio[: len(pcm)] and len(pcm) >= len(audio) - rate * 2 // 50


async def test_streamed_transcripts_arrive_as_interims_then_the_final(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.append(Answer("I would like the operator"))
    call = await start_call(
        8000, "stt", {"base_url": api.url, "model": "gpt-4o-transcribe", "stream": True}
    )
    await speak(call, caller_audio(8000), 8000)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    interims = [f.text for f in call.down.of(InterimTranscriptionFrame)]
    assert interims == ["I", "I would", "I would like", "I would like the", interims[-1]]
    assert interims[-1] == "I would like the operator"
    assert call.down.of(TranscriptionFrame)[0].text == "I would like the operator"
    assert api.requests[0].fields["stream"] == "true"


async def test_transcripts_keep_the_order_of_the_utterances_even_when_the_first_is_slower(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.extend([Answer("first", delay_s=0.4), Answer("second")])
    call = await start_call(8000, "stt", {"base_url": api.url})
    audio = caller_audio(8000)[:16000]
    await speak(call, audio, 8000)
    await speak(call, audio, 8000)
    await call.down.wait_for(lambda: len(call.down.of(TranscriptionFrame)) == 2)
    assert [f.text for f in call.down.of(TranscriptionFrame)] == ["first", "second"]


async def test_a_server_error_is_retried_and_the_transcript_still_arrives(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.extend([Answer(status=503), Answer("operator please")])
    call = await start_call(8000, "stt", {"base_url": api.url})
    await speak(call, caller_audio(8000), 8000)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    assert call.down.of(TranscriptionFrame)[0].text == "operator please"
    assert len(api.of("/v1/audio/transcriptions")) == 2
    assert not call.up.of(ErrorFrame)


async def test_a_silent_server_times_out_and_the_failure_is_reported_not_fatal(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.extend([Answer("never", stall=True), Answer("never", stall=True)])
    errors = Errors()
    with observing(errors):
        call = await start_call(8000, "stt", {"base_url": api.url, "timeout_s": 0.3, "retries": 1})
        await speak(call, caller_audio(8000), 8000)
        await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert not error.fatal and error.source == "stt.openai_compatible"
    assert "no answer in time" in error.error
    assert errors.kinds == ["provider"]
    assert not call.task.done
    assert len(api.of("/v1/audio/transcriptions")) == 2


async def test_a_bad_request_is_not_retried(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.append(Answer(status=400))
    call = await start_call(8000, "stt", {"base_url": api.url})
    await speak(call, caller_audio(8000), 8000)
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    assert "HTTP 400" in call.up.of(ErrorFrame)[0].error
    assert len(api.of("/v1/audio/transcriptions")) == 1


async def test_the_last_transcript_is_delivered_before_the_end_of_the_call(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.append(Answer("goodbye then", delay_s=0.3))
    call = await start_call(8000, "stt", {"base_url": api.url})
    await speak(call, caller_audio(8000), 8000)
    await call.task.push_frame(EndFrame())
    await call.down.wait_for(lambda: bool(call.down.of(EndFrame)))
    kinds = [type(f) for f in call.down.frames if isinstance(f, TranscriptionFrame | EndFrame)]
    assert kinds == [TranscriptionFrame, EndFrame]


# --- text-to-speech ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_each_sentence_is_one_streamed_pcm_request_resampled_to_the_pipeline_rate(
    api: FakeOpenAIAudio, start_call: Callable[..., Any], rate: int
) -> None:
    call = await start_call(
        rate,
        "tts",
        {"base_url": api.url, "model": "tts-1", "voice": "nova", "speed": 1.2, "api_key": "sk-x"},
    )
    call.task.queue_frame(TTSSpeakFrame("Hello there. Your order ships tomorrow."))
    await call.down.wait_for(lambda: len(call.down.of(TTSStoppedFrame)) == 2)
    assert [f.text for f in call.down.of(TTSStartedFrame)] == [
        "Hello there.",
        "Your order ships tomorrow.",
    ]
    requests = api.of("/v1/audio/speech")
    assert [r.json["input"] for r in requests] == ["Hello there.", "Your order ships tomorrow."]
    assert requests[0].json == {
        "model": "tts-1",
        "voice": "nova",
        "input": "Hello there.",
        "response_format": "pcm",
        "speed": 1.2,
    }
    assert requests[0].headers["authorization"] == "Bearer sk-x"
    frames = call.down.of(OutputAudioFrame)
    assert {f.sample_rate for f in frames} == {rate}
    assert all(len(f.audio) == rate * 2 // 50 for f in frames)
    # 2 + 4 words of 200 ms, resampled from 24 kHz: 6 * 10 frames of 20 ms.
    assert len(frames) == 6 * WORD_MS // 20
    first = [f for f in frames if f.utterance is frames[0].utterance]
    assert first[0].utterance is not None and first[0].utterance.text == "Hello there."
    assert first[0].utterance.frames_total == len(first) == 2 * WORD_MS // 20
    assert SPEECH_RATE == 24000


async def test_a_failing_voice_reports_a_non_fatal_error_and_speaks_nothing_for_the_sentence(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.speeches.extend([Answer(status=500), Answer(status=500)])
    call = await start_call(8000, "tts", {"base_url": api.url, "retries": 1, "cache_phrases": 0})
    call.task.queue_frame(TTSSpeakFrame("Hello there."))
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert not error.fatal and error.source == "tts.openai_compatible"
    assert "HTTP 500" in error.error
    assert not call.down.of(TTSStartedFrame) and not call.down.of(OutputAudioFrame)
    call.task.queue_frame(TTSSpeakFrame("Back again."))
    await call.down.wait_for(lambda: bool(call.down.of(TTSStoppedFrame)))
    assert call.down.of(TTSStoppedFrame)[0].text == "Back again."


async def test_a_voice_that_stalls_mid_sentence_is_retried(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.speeches.append(Answer(stall=True))
    call = await start_call(8000, "tts", {"base_url": api.url, "timeout_s": 0.3})
    call.task.queue_frame(TTSSpeakFrame("Hello there."))
    await call.down.wait_for(lambda: bool(call.down.of(TTSStoppedFrame)))
    assert len(call.down.of(OutputAudioFrame)) == 2 * WORD_MS // 20
    assert len(api.of("/v1/audio/speech")) == 2
    assert not call.up.of(ErrorFrame)


def test_settings_are_validated_at_load() -> None:
    with pytest.raises(ConfigError) as error:
        Bot.from_yaml(
            "name: x\npipeline:\n  - tts: {provider: openai_compatible, speed: 9, voise: a}\n"
        )
    messages = [f"{p.path}: {p.message}" for p in error.value.problems]
    assert any("pipeline[0].tts.speed" in m and "less than or equal to 4" in m for m in messages)
    assert any("unknown key 'voise' (did you mean 'voice'?)" in m for m in messages)
