"""Pipecat's speech services in a voxpipe chain, over their real wire protocols: Pipecat's OpenAI
speech-to-text (multipart upload of each utterance) and text-to-speech (chunked raw PCM)
against the local OpenAI audio fake, and a whole call where Pipecat's services stand in for the
native speech-to-text, LLM and text-to-speech, heard by a simulated caller over AudioSocket."""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.anthropic_sse import FakeHTTPServer
from fakes.deepgram_live import FakeDeepgram
from fakes.openai_audio import WORD_MS, Answer, FakeOpenAIAudio
from fakes.openai_sse import openai_reply
from helpers import AUDIO, RunningCalls

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.frames import (
    EndFrame,
    ErrorFrame,
    InputAudioFrame,
    InterimTranscriptionFrame,
    InterruptionFrame,
    OutputAudioFrame,
    TranscriptionFrame,
    TTSSpeakFrame,
    TTSStartedFrame,
    TTSStoppedFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.testing import RunningChain, speech_frames
from voxpipe.transports.audiosocket.caller import (
    Hangup,
    Say,
    Silence,
    WaitForBot,
    load_wav,
    place_call,
)

STT = "pipecat.services.openai.stt.OpenAISTTService"
TTS = "pipecat.services.openai.tts.OpenAITTSService"
LLM = "pipecat.services.openai.llm.OpenAILLMService"


def caller_audio(rate: int) -> bytes:
    name = "caller_operator_16k.wav" if rate == 16000 else "caller_operator_8k.wav"
    with wave.open(str(AUDIO / name)) as wav:
        return wav.readframes(wav.getnframes())


@pytest.fixture
async def api() -> AsyncIterator[FakeOpenAIAudio]:
    async with FakeOpenAIAudio() as server:
        yield server


@pytest.fixture
async def start_call() -> AsyncIterator[Callable[..., Any]]:
    async def start(rate: int, step: dict[str, Any]) -> RunningChain:
        bot = Bot.from_yaml(
            f"name: pipecat-speech\ntransport: {{audiosocket: {{sample_rate: {rate}}}}}\n"
            f"pipeline:\n  - pipecat: {json.dumps(step)}\n"
        )
        return await calls.chain(bot)

    async with RunningCalls() as calls:
        yield start


def stt_step(api: FakeOpenAIAudio) -> dict[str, Any]:
    return {
        "class": STT,
        "args": {"api_key": "sk-test", "base_url": api.url, "settings": {"model": "whisper-1"}},
    }


def tts_step(api: FakeOpenAIAudio) -> dict[str, Any]:
    return {
        "class": TTS,
        "args": {
            "api_key": "sk-test",
            "base_url": api.url,
            "sample_rate": 24000,
            "settings": {"model": "tts-1", "voice": "nova"},
        },
        "cache_phrases": 0,
    }


async def speak(call: RunningChain, audio: bytes, rate: int) -> None:
    await call.send(*speech_frames(audio, rate))


# --- speech-to-text -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pipecat_stt_uploads_the_utterance_and_the_transcript_comes_back(
    api: FakeOpenAIAudio, start_call: Callable[..., Any], rate: int
) -> None:
    api.transcripts.append(Answer("I'd like to speak to an operator."))
    call = await start_call(rate, stt_step(api))
    audio = caller_audio(rate)
    await speak(call, audio, rate)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    assert [f.text for f in call.down.of(TranscriptionFrame)] == [
        "I'd like to speak to an operator."
    ]
    # The caller's audio and the VAD's events pass on, each once, in order.
    heard = b"".join(f.audio for f in call.down.of(InputAudioFrame))
    assert heard == audio
    kinds = [
        type(f)
        for f in call.down.frames
        if isinstance(f, UserStartedSpeakingFrame | UserStoppedSpeakingFrame | TranscriptionFrame)
    ]
    assert kinds == [UserStartedSpeakingFrame, UserStoppedSpeakingFrame, TranscriptionFrame]
    (request,) = api.of("/v1/audio/transcriptions")
    assert request.fields["model"] == "whisper-1"
    uploaded_rate, pcm = request.wav()
    assert uploaded_rate == rate
    assert audio in pcm  # the whole utterance (Pipecat keeps its own pre-roll, adds silence)


async def test_a_pipecat_error_frame_becomes_a_non_fatal_voxpipe_error(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.append(Answer(status=400))
    call = await start_call(8000, stt_step(api))
    await speak(call, caller_audio(8000), 8000)
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert not error.fatal and error.source == "stt.OpenAISTTService"
    assert not call.task.done


async def test_an_end_frame_drains_the_pipecat_service_first(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.transcripts.append(Answer("goodbye then", delay_s=0.3))
    call = await start_call(8000, stt_step(api))
    await speak(call, caller_audio(8000), 8000)
    await call.task.push_frame(EndFrame())
    await call.down.wait_for(lambda: bool(call.down.of(EndFrame)))
    kinds = [type(f) for f in call.down.frames if isinstance(f, TranscriptionFrame | EndFrame)]
    assert kinds == [TranscriptionFrame, EndFrame]


# --- text-to-speech -------------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pipecat_tts_speaks_each_sentence_resampled_and_linked_to_its_utterance(
    api: FakeOpenAIAudio, start_call: Callable[..., Any], rate: int
) -> None:
    call = await start_call(rate, tts_step(api))
    call.task.queue_frame(TTSSpeakFrame("Hello there. Your order ships tomorrow."))
    await call.down.wait_for(lambda: len(call.down.of(TTSStoppedFrame)) == 2)
    assert [f.text for f in call.down.of(TTSStartedFrame)] == [
        "Hello there.",
        "Your order ships tomorrow.",
    ]
    requests = api.of("/v1/audio/speech")
    assert [r.json["input"] for r in requests] == ["Hello there.", "Your order ships tomorrow."]
    assert requests[0].json["voice"] == "nova" and requests[0].json["response_format"] == "pcm"
    frames = call.down.of(OutputAudioFrame)
    assert {f.sample_rate for f in frames} == {rate}
    assert all(len(f.audio) == rate * 2 // 50 for f in frames)
    assert len(frames) == 6 * WORD_MS // 20  # 6 words of 200 ms, from 24 kHz
    first = frames[0].utterance
    assert first is not None and first.text == "Hello there."
    assert first.frames_total == sum(f.utterance is first for f in frames) == 2 * WORD_MS // 20


async def test_a_failing_pipecat_voice_loses_the_sentence_and_reports_it_as_the_voices_error(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.speeches.append(Answer(status=400))
    call = await start_call(8000, tts_step(api))
    call.task.queue_frame(TTSSpeakFrame("Hello there."))
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert error.source == "tts.OpenAITTSService" and not error.fatal
    assert not call.down.of(TTSStartedFrame)
    call.task.queue_frame(TTSSpeakFrame("Back again."))
    await call.down.wait_for(lambda: bool(call.down.of(TTSStoppedFrame)))
    assert call.down.of(TTSStoppedFrame)[0].text == "Back again."


async def test_an_interruption_drops_the_sentence_in_synthesis(
    api: FakeOpenAIAudio, start_call: Callable[..., Any]
) -> None:
    api.speeches.append(Answer(delay_s=0.5))
    call = await start_call(8000, tts_step(api))
    call.task.queue_frame(TTSSpeakFrame("This is never heard."))
    await api.wait_for("/v1/audio/speech")  # the sentence is with the voice
    call.task.interrupt()
    call.task.queue_frame(TTSSpeakFrame("Yes?"))
    await call.down.wait_for(lambda: bool(call.down.of(TTSStoppedFrame)))
    assert [f.text for f in call.down.of(TTSStartedFrame)] == ["Yes?"]
    assert call.down.of(InterruptionFrame)
    assert all(
        f.utterance is not None and f.utterance.text == "Yes?"
        for f in call.down.of(OutputAudioFrame)
    )


# --- a whole call ---------------------------------------------------------------------------------


async def test_a_caller_talks_to_a_bot_made_of_pipecat_services(tmp_path: Path) -> None:
    async with FakeOpenAIAudio() as audio_api, FakeHTTPServer() as chat_api:
        audio_api.transcripts.append(Answer("I would like to check the status of my order."))
        chat_api.add(openai_reply("Sure. ", "What is your order number?"))
        creds = f'api_key: sk-test, base_url: "{audio_api.url}"'
        bot_file = tmp_path / "pipecat_desk.yaml"
        bot_file.write_text(
            f"""
name: pipecat-desk
greeting: "Hello, this is the ACME order desk."
transport: {{audiosocket: {{sample_rate: 16000}}}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - pipecat:
      class: {STT}
      args: {{{creds}, settings: {{model: whisper-1}}}}
  - barge_in: {{min_speech_ms: 300}}
  - pipecat:
      class: {LLM}
      args: {{api_key: sk-test, base_url: "{chat_api.url}/v1", settings: {{model: gpt-4o-mini}}}}
      system: "You are the order desk of ACME. Be brief."
      tools: [hangup]
  - pipecat:
      class: {TTS}
      args: {{{creds}, sample_rate: 24000, settings: {{model: tts-1, voice: nova}}}}
"""
        )
        caller = load_wav(AUDIO / "caller_order_status_16k.wav", 16000)
        bot = Bot.load(bot_file)
        async with running_bot(bot) as server:
            result = await place_call(
                server.host,
                server.port,
                [
                    WaitForBot(timeout_s=10),
                    Silence(0.3),
                    Say(caller),
                    WaitForBot(timeout_s=15, quiet_s=1.0),
                    Hangup(),
                ],  # type: ignore[list-item]
                rate=16000,
            )
    assert result.hung_up_by == "caller"
    # The LLM's on_error lines and its filler were synthesised when the bot started (standby
    # clips), then the call: the greeting and the reply, sentence by sentence.
    spoken = [r.json["input"] for r in audio_api.of("/v1/audio/speech")]
    assert spoken == [
        "Sorry, I'm having a technical problem.",
        "Please call again later.",
        "Goodbye.",
        "One moment.",
        "Hello, this is the ACME order desk.",
        "Sure.",
        "What is your order number?",
    ]
    (upload,) = audio_api.of("/v1/audio/transcriptions")
    assert upload.wav()[0] == 16000
    chat = chat_api.requests[0].json
    assert chat["messages"][-1] == {
        "role": "user",
        "content": "I would like to check the status of my order.",
    }
    assert [t["function"]["name"] for t in chat["tools"]] == ["hangup"]
    # The caller heard the greeting (6 words) and the reply (2 + 5 words) of 200 ms beeps.
    heard_s = sum(end - start for start, end in result.bot_segments)
    assert 12 * WORD_MS / 1000 <= heard_s <= 13 * WORD_MS / 1000 + 0.2


# --- streaming speech-to-text over a WebSocket -------------------------------------------------


DEEPGRAM = "pipecat.services.deepgram.stt.DeepgramSTTService"


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_pipecat_deepgram_streams_the_caller_and_its_interims_and_final_come_back(
    start_call: Callable[..., Any], rate: int
) -> None:
    async with FakeDeepgram() as deepgram:
        deepgram.transcripts.append("please transfer me to an operator")
        step = {
            "class": DEEPGRAM,
            "args": {
                "api_key": "dg-key",
                "base_url": deepgram.url,
                "settings": {"model": "nova-3"},
            },
        }
        call = await start_call(rate, step)
        audio = caller_audio(rate)
        await speak(call, audio, rate)
        await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
        (session,) = deepgram.sessions
    interims = [f.text for f in call.down.of(InterimTranscriptionFrame)]
    assert interims[:2] == ["please", "please transfer"]
    assert [f.text for f in call.down.of(TranscriptionFrame)] == [
        "please transfer me to an operator"
    ]
    assert session.authorization == "Token dg-key"
    assert session.options["encoding"] == "linear16"
    assert session.options["sample_rate"] == str(rate)
    assert session.options["model"] == "nova-3"
    # The whole line streamed, speech and silence, and a Finalize at the VAD's stop.
    assert bytes(session.audio) == audio
    assert "Finalize" in session.controls


async def test_a_refused_deepgram_key_is_a_non_fatal_error_and_the_call_goes_on(
    start_call: Callable[..., Any],
) -> None:
    async with FakeDeepgram() as deepgram:
        deepgram.refuse.add("bad-key")
        step = {"class": DEEPGRAM, "args": {"api_key": "bad-key", "base_url": deepgram.url}}
        call = await start_call(8000, step)
        await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert error.source == "stt.DeepgramSTTService" and not error.fatal
    assert "401" in error.error
    assert not call.task.done
