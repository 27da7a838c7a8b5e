"""Google speech-to-text and text-to-speech, through the official clients, against local gRPC fakes.

The fakes (tests/fakes/google_speech.py) serve the real Speech v1 and TextToSpeech v1 services
on 127.0.0.1; the bots below reach them with ``endpoint`` + ``insecure``. Each test runs the
provider inside a real ``PipelineTask``, as a call would.
"""

from __future__ import annotations

import json
import wave
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest
from fakes.google_speech import FakeGoogleServer, tone_wav
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
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.settings import ProviderError
from voxpipe.processors.tts.google import strip_wav_header
from voxpipe.testing import RunningChain, speech_frames


def caller_audio(rate: int) -> bytes:
    """A real caller utterance at ``rate`` (PCM16 mono)."""
    name = "caller_operator_16k.wav" if rate == 16000 else "caller_operator_8k.wav"
    with wave.open(str(AUDIO / name)) as wav:
        assert wav.getframerate() == rate
        return wav.readframes(wav.getnframes())


class Observed(events.Observer):
    """Collects provider events."""

    def __init__(self) -> None:
        self.ttfb: list[tuple[str, str, float]] = []
        self.errors: list[str] = []

    def provider_ttfb(self, call: Any, kind: str, provider: str, seconds: float) -> None:
        self.ttfb.append((kind, provider, seconds))

    def error(self, call: Any, kind: str) -> None:
        self.errors.append(kind)


def bot_yaml(rate: int, step: str, settings: dict[str, Any]) -> str:
    block = json.dumps({"provider": "google", **settings})
    return (
        f"name: google-test\ntransport: {{audiosocket: {{sample_rate: {rate}}}}}\n"
        f"pipeline:\n  - {step}: {block}\n"
    )


@pytest.fixture
async def fake() -> AsyncIterator[FakeGoogleServer]:
    async with FakeGoogleServer() as server:
        yield server


@pytest.fixture
def observed() -> Any:
    observer = Observed()
    with observing(observer):
        yield observer


@pytest.fixture
async def start_call() -> AsyncIterator[Callable[..., Any]]:
    bots: list[Bot] = []

    async def start(rate: int, step: str, settings: dict[str, Any]) -> RunningChain:
        bot = Bot.from_yaml(bot_yaml(rate, step, settings))
        bots.append(bot)
        return await calls.chain(bot)

    async with RunningCalls() as calls:
        yield start
    for bot in bots:
        for client in google_clients(bot):
            await client.transport.close()


def google_clients(bot: Bot) -> list[Any]:
    return [value for key, value in bot.shared.items() if key.startswith("google.")]


def connection(fake: FakeGoogleServer, **extra: Any) -> dict[str, Any]:
    return {"endpoint": fake.endpoint, "insecure": True, "backoff_s": 0.01, **extra}


async def speak(call: RunningChain, audio: bytes, rate: int) -> None:
    """The caller says ``audio``: VAD start, 20 ms frames of it, VAD stop."""
    await call.send(*speech_frames(audio, rate))


# --- speech-to-text ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_caller_utterance_streams_to_google_and_comes_back_as_interims_then_a_transcript(
    fake: FakeGoogleServer, observed: Observed, start_call: Callable[..., Any], rate: int
) -> None:
    fake.speech.interims = ["I'd like", "I'd like to speak"]
    fake.speech.final = "I'd like to speak to an operator."
    call = await start_call(
        rate,
        "stt",
        connection(
            fake,
            language="en-GB",
            model="telephony",
            phrase_hints=["operator", "order number"],
            phrase_boost=8,
        ),
    )
    audio = caller_audio(rate)
    await speak(call, audio, rate)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))

    (stream,) = fake.speech.streams
    assert stream.config is not None
    config = stream.config.config
    assert config.sample_rate_hertz == rate
    assert config.encoding == config.AudioEncoding.LINEAR16
    assert config.language_code == "en-GB"
    assert config.model == "telephony"
    assert config.use_enhanced
    assert list(config.speech_contexts[0].phrases) == ["operator", "order number"]
    assert config.speech_contexts[0].boost == 8
    assert stream.config.interim_results
    assert bytes(stream.audio) == audio  # the pre-roll frame, then the utterance, nothing lost
    assert stream.half_closed

    interims = [frame.text for frame in call.down.of(InterimTranscriptionFrame)]
    assert interims == ["I'd like", "I'd like to speak"]
    (final,) = call.down.of(TranscriptionFrame)
    assert final.text == "I'd like to speak to an operator."
    assert final.language == "en-GB"
    kinds = [type(frame) for frame in call.down.frames]
    assert kinds.index(TranscriptionFrame) > kinds.index(UserStoppedSpeakingFrame)
    assert [(kind, provider) for kind, provider, _ in observed.ttfb] == [("stt", "google")]
    assert not call.up.of(ErrorFrame)


async def test_each_utterance_gets_its_own_stream(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.speech.final = "yes"
    call = await start_call(8000, "stt", connection(fake, interim_results=False))
    audio = caller_audio(8000)[:8000]
    await speak(call, audio, 8000)
    await speak(call, audio, 8000)
    await call.down.wait_for(lambda: len(call.down.of(TranscriptionFrame)) == 2)
    assert len(fake.speech.streams) == 2
    assert all(bytes(stream.audio) == audio for stream in fake.speech.streams)
    assert not fake.speech.streams[0].config.interim_results  # type: ignore[union-attr]


async def test_an_utterance_longer_than_googles_stream_limit_moves_to_a_fresh_stream(
    fake: FakeGoogleServer, start_call: Callable[..., Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("voxpipe.processors.stt.google.STREAM_LIMIT_S", 0.5)
    fake.speech.final = "part"
    call = await start_call(8000, "stt", connection(fake))
    audio = caller_audio(8000)[: 8000 * 2 * 6 // 5]  # 1.2 s
    await speak(call, audio, 8000)
    await call.down.wait_for(lambda: len(call.down.of(TranscriptionFrame)) == 3)
    assert len(fake.speech.streams) == 3
    pieces = sorted(
        (audio.index(stream.audio), len(stream.audio)) for stream in fake.speech.streams
    )
    ends = [start + size for start, size in pieces]
    assert [start for start, _ in pieces] == [0, *ends[:-1]]  # the streams split the audio
    assert ends[-1] == len(audio)
    assert all(stream.half_closed for stream in fake.speech.streams)


async def test_transcript_in_flight_is_delivered_before_the_call_ends(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.speech.final = "goodbye"
    call = await start_call(8000, "stt", connection(fake))
    await speak(call, caller_audio(8000)[:4000], 8000)
    await call.task.push_frame(EndFrame())
    await call.down.wait_for(lambda: bool(call.down.of(EndFrame)))
    kinds = [type(frame) for frame in call.down.frames]
    assert TranscriptionFrame in kinds
    assert kinds.index(TranscriptionFrame) < kinds.index(EndFrame)


async def test_unavailable_stream_is_retried_with_the_whole_utterance(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.speech.fail_next = [grpc.StatusCode.UNAVAILABLE]
    fake.speech.final = "operator"
    call = await start_call(16000, "stt", connection(fake, retries=2))
    audio = caller_audio(16000)
    await speak(call, audio, 16000)
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    assert len(fake.speech.streams) == 2
    assert bytes(fake.speech.streams[1].audio) == audio
    assert call.down.of(TranscriptionFrame)[0].text == "operator"
    assert not call.up.of(ErrorFrame)


async def test_stt_outage_becomes_a_non_fatal_error_frame_and_the_call_goes_on(
    fake: FakeGoogleServer, observed: Observed, start_call: Callable[..., Any]
) -> None:
    fake.speech.fail_next = [grpc.StatusCode.UNAVAILABLE] * 3
    fake.speech.final = "second try"
    call = await start_call(8000, "stt", connection(fake, retries=2))
    audio = caller_audio(8000)[:8000]
    await speak(call, audio, 8000)
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert error.source == "stt.google"
    assert not error.fatal
    assert "ServiceUnavailable" in error.error
    assert len(fake.speech.streams) == 3
    assert observed.errors == ["provider"]
    assert not call.down.of(TranscriptionFrame)

    await speak(call, audio, 8000)  # Google is back: the next utterance is transcribed
    await call.down.wait_for(lambda: bool(call.down.of(TranscriptionFrame)))
    assert not call.task.done


async def test_stt_without_an_answer_times_out_retries_and_reports(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.speech.hang = True
    fake.speech.final = "never sent"
    call = await start_call(8000, "stt", connection(fake, timeout_s=0.3, retries=1))
    await speak(call, caller_audio(8000)[:8000], 8000)
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    assert "no answer in time" in call.up.of(ErrorFrame)[0].error
    assert len(fake.speech.streams) == 2
    assert not call.down.of(TranscriptionFrame)


# --- text-to-speech ---------------------------------------------------------------------------


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_each_sentence_is_synthesised_at_the_pipeline_rate_and_framed(
    fake: FakeGoogleServer, observed: Observed, start_call: Callable[..., Any], rate: int
) -> None:
    call = await start_call(
        rate, "tts", connection(fake, voice="en-GB-Neural2-B", speaking_rate=1.25)
    )
    await call.task.push_frame(TTSSpeakFrame("Your order has shipped. Anything else?"))
    await call.down.wait_for(lambda: len(call.down.of(TTSStoppedFrame)) == 2)

    assert [r.input.text for r in fake.tts.requests] == [
        "Your order has shipped.",
        "Anything else?",
    ]
    for request in fake.tts.requests:
        assert request.voice.name == "en-GB-Neural2-B"
        assert request.voice.language_code == "en-GB"
        assert request.audio_config.sample_rate_hertz == rate
        assert request.audio_config.speaking_rate == 1.25
        assert request.audio_config.audio_encoding == request.audio_config.audio_encoding.LINEAR16

    frames = call.down.of(OutputAudioFrame)
    assert all(f.sample_rate == rate and len(f.audio) == rate * 2 // 50 for f in frames)
    first = [f for f in frames if f.utterance and f.utterance.text == "Your order has shipped."]
    pcm, _ = strip_wav_header(tone_wav(rate, rate * 10 * len("Your order has shipped.") // 1000))
    assert b"".join(f.audio for f in first)[: len(pcm)] == pcm  # no WAV header in the audio
    assert first[0].utterance is not None and first[0].utterance.frames_total == len(first)
    assert [f.text for f in call.down.of(TTSStartedFrame)] == [
        "Your order has shipped.",
        "Anything else?",
    ]
    assert [(k, p) for k, p, _ in observed.ttfb] == [("tts", "google"), ("tts", "google")]


async def test_unavailable_synthesis_is_retried(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.tts.fail_next = [grpc.StatusCode.UNAVAILABLE]
    call = await start_call(8000, "tts", connection(fake))
    await call.task.push_frame(TTSSpeakFrame("One moment."))
    await call.down.wait_for(lambda: bool(call.down.of(TTSStoppedFrame)))
    assert len(fake.tts.requests) == 2
    assert call.down.of(OutputAudioFrame)
    assert not call.up.of(ErrorFrame)


async def test_tts_outage_becomes_a_non_fatal_error_frame_and_the_call_goes_on(
    fake: FakeGoogleServer, observed: Observed, start_call: Callable[..., Any]
) -> None:
    fake.tts.fail_next = [grpc.StatusCode.UNAVAILABLE] * 3
    call = await start_call(8000, "tts", connection(fake, retries=2))
    await call.task.push_frame(TTSSpeakFrame("This is lost."))
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    (error,) = call.up.of(ErrorFrame)
    assert (error.source, error.fatal) == ("tts.google", False)
    assert "ServiceUnavailable" in error.error
    assert len(fake.tts.requests) == 3
    assert observed.errors == ["provider"]
    assert not call.down.of(OutputAudioFrame)
    assert not call.down.of(TTSStartedFrame)  # nothing is announced for a lost sentence

    await call.task.push_frame(TTSSpeakFrame("This is heard."))
    await call.down.wait_for(lambda: len(call.down.of(TTSStoppedFrame)) == 1)
    assert {f.utterance.text for f in call.down.of(OutputAudioFrame) if f.utterance} == {
        "This is heard."
    }
    assert not call.task.done


async def test_slow_synthesis_times_out_and_is_retried_then_reported(
    fake: FakeGoogleServer, start_call: Callable[..., Any]
) -> None:
    fake.tts.delay_s = 2.0
    call = await start_call(8000, "tts", connection(fake, timeout_s=0.2, retries=1))
    await call.task.push_frame(TTSSpeakFrame("Too slow."))
    await call.up.wait_for(lambda: bool(call.up.of(ErrorFrame)))
    assert "DeadlineExceeded" in call.up.of(ErrorFrame)[0].error
    assert len(fake.tts.requests) == 2
    assert not call.down.of(OutputAudioFrame)


def test_wav_header_is_stripped_and_raw_pcm_left_alone() -> None:
    pcm, rate = strip_wav_header(tone_wav(8000, 80))
    assert (len(pcm), rate) == (160, 8000)
    assert strip_wav_header(b"\x01\x02\x03\x04") == (b"\x01\x02\x03\x04", None)


# --- credentials and settings ------------------------------------------------------------------


async def test_missing_credentials_file_fails_prepare_with_a_clear_message(tmp_path: Path) -> None:
    bot = Bot.from_yaml(
        bot_yaml(8000, "stt", {"credentials_file": str(tmp_path / "missing.json")}),
    )
    with pytest.raises(ProviderError, match="google speech-to-text: no usable Google credentials"):
        await bot.prepare()


async def test_missing_application_default_credentials_fail_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nowhere.json"))
    bot = Bot.from_yaml(bot_yaml(8000, "tts", {}))
    with pytest.raises(ProviderError, match="GOOGLE_APPLICATION_CREDENTIALS") as caught:
        await bot.prepare()
    assert ".." not in str(caught.value)  # google-auth's own sentence ends with a period


async def test_service_account_file_gives_one_client_per_bot(tmp_path: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    account = tmp_path / "account.json"
    account.write_text(
        json.dumps(
            {
                "type": "service_account",
                "project_id": "voxpipe-test",
                "private_key_id": "1",
                "private_key": pem,
                "client_email": "bot@voxpipe-test.iam.gserviceaccount.com",
                "client_id": "1",
                "token_uri": "https://oauth2.googleapis.com/token",
            }
        )
    )
    text = bot_yaml(8000, "stt", {"credentials_file": str(account)})
    text += '  - stt: {provider: google, credentials_file: "' + str(account) + '"}\n'
    bot = Bot.from_yaml(text)
    await bot.prepare()
    (client,) = google_clients(bot)
    assert client._client._transport._credentials.service_account_email == (
        "bot@voxpipe-test.iam.gserviceaccount.com"
    )
    await client.transport.close()


def test_insecure_needs_an_endpoint() -> None:
    with pytest.raises(ConfigError, match="insecure: true needs an endpoint"):
        Bot.from_yaml(bot_yaml(8000, "tts", {"insecure": True}))
