"""The VAD turns caller audio into started/stopped speaking events, at any rate and framing."""

from __future__ import annotations

import wave

import numpy as np
import pytest
import soxr
from helpers import AUDIO
from pydantic import ValidationError

from voxpipe.frames import (
    Frame,
    InputAudioFrame,
    UserStartedSpeakingFrame,
    UserStoppedSpeakingFrame,
)
from voxpipe.pipelines.call import Call
from voxpipe.processors import vad as vad_module
from voxpipe.processors.vad import VADSettings
from voxpipe.testing import Outcome, run_frames


def read_wav(name: str) -> tuple[np.ndarray, int]:
    with wave.open(str(AUDIO / name)) as wav:
        rate = wav.getframerate()
        return np.frombuffer(wav.readframes(wav.getnframes()), dtype=np.int16), rate


def speaking_events(frames: list[Frame]) -> list[tuple[str, int]]:
    """Speaking events, each with how many audio frames had passed before it."""
    out: list[tuple[str, int]] = []
    audio = 0
    for frame in frames:
        if isinstance(frame, InputAudioFrame):
            audio += 1
        elif isinstance(frame, UserStartedSpeakingFrame):
            out.append(("start", audio))
        elif isinstance(frame, UserStoppedSpeakingFrame):
            out.append(("stop", audio))
    return out


async def run_vad(
    samples: np.ndarray, rate: int, *, chunk_ms: float = 20, **settings: object
) -> Outcome:
    """Feed ``samples`` through a VAD in chunks of ``chunk_ms``; return what came out."""
    call = Call(sample_rate=rate)
    vad = VADSettings.model_validate(settings).create(call, None)  # type: ignore[arg-type]
    step = max(1, int(rate * chunk_ms / 1000))
    frames = [
        InputAudioFrame(samples[i : i + step].tobytes(), rate) for i in range(0, len(samples), step)
    ]
    out = await run_frames(vad, frames, call=call)
    assert out.end_reason == "end"
    return out


def padded(
    samples: np.ndarray, rate: int, before_s: float = 1.0, after_s: float = 1.5
) -> np.ndarray:
    return np.concatenate(
        [np.zeros(int(rate * before_s), np.int16), samples, np.zeros(int(rate * after_s), np.int16)]
    )


def noise(rate: int, seconds: float, level: float, seed: int = 7) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.clip(rng.normal(0, level, int(rate * seconds)), -32768, 32767).astype(np.int16)


@pytest.mark.parametrize("name", ["caller_order_status_16k.wav", "caller_order_status_8k.wav"])
async def test_speech_starts_after_the_silence_and_stops_after_it_ends(name: str) -> None:
    speech, rate = read_wav(name)
    recorder = await run_vad(padded(speech, rate), rate, start_ms=200, stop_ms=600)
    events = speaking_events(recorder.down)
    assert events, "no speech detected"
    assert [kind for kind, _ in events[:1]] == ["start"]
    assert events[-1][0] == "stop"
    kinds = [kind for kind, _ in events]
    assert kinds == ["start", "stop"] * (len(kinds) // 2)
    speech_frames = len(speech) * 50 // rate
    assert 50 <= events[0][1] <= 50 + 30, "start should follow the first speech by ~start_ms"
    assert 50 + speech_frames <= events[-1][1] <= 50 + speech_frames + 75


async def test_every_frame_is_forwarded_in_order() -> None:
    speech, rate = read_wav("caller_yes_16k.wav")
    samples = padded(speech, rate)
    recorder = await run_vad(samples, rate)
    audio = b"".join(f.audio for f in recorder.down if isinstance(f, InputAudioFrame))
    assert audio == samples.tobytes()


@pytest.mark.parametrize("level", [0.0, 30.0, 120.0])
async def test_silence_and_low_noise_are_not_speech(level: float) -> None:
    recorder = await run_vad(noise(16000, 5, level), 16000, aggressiveness=2)
    assert speaking_events(recorder.down) == []


@pytest.mark.parametrize("rate", [12000, 24000, 44100])
async def test_rates_webrtcvad_does_not_take_are_resampled(rate: int) -> None:
    speech, source = read_wav("caller_order_status_16k.wav")
    resampled = soxr.resample(padded(speech, source), source, rate).astype(np.int16)
    events = speaking_events((await run_vad(resampled, rate)).down)
    assert [kind for kind, _ in events][:2] == ["start", "stop"]


@pytest.mark.parametrize("chunk_ms", [7.3, 33, 100])
async def test_odd_sized_frames_are_buffered(chunk_ms: float) -> None:
    speech, rate = read_wav("caller_order_status_8k.wav")
    recorder = await run_vad(padded(speech, rate), rate, chunk_ms=chunk_ms)
    kinds = [kind for kind, _ in speaking_events(recorder.down)]
    assert kinds[:1] == ["start"] and kinds[-1:] == ["stop"]


async def test_a_short_click_does_not_start_speech() -> None:
    speech, rate = read_wav("caller_order_status_16k.wav")
    burst = speech[rate // 2 : rate // 2 + rate // 10]  # 100 ms of voice
    recorder = await run_vad(padded(burst, rate), rate, start_ms=300)
    assert speaking_events(recorder.down) == []


async def test_silero_detects_speech_and_ignores_noise() -> None:
    speech, rate = read_wav("caller_order_number_16k.wav")
    samples = np.concatenate([noise(rate, 1.5, 300.0), speech, np.zeros(rate * 2, np.int16)])
    kinds = [
        kind for kind, _ in speaking_events((await run_vad(samples, rate, engine="silero")).down)
    ]
    assert kinds[:1] == ["start"] and kinds[-1:] == ["stop"]
    assert speaking_events((await run_vad(noise(rate, 4, 300.0), rate, engine="silero")).down) == []


def test_settings_are_validated() -> None:
    with pytest.raises(ValidationError):
        VADSettings.model_validate({"aggressiveness": 4})
    with pytest.raises(ValidationError):
        VADSettings.model_validate({"engine": "magic"})


@pytest.mark.parametrize("level", [60.0, 150.0])
async def test_noise_starting_on_a_quiet_line_is_not_speech(level: float) -> None:
    quiet_then_noise = np.concatenate([np.zeros(8000, np.int16), noise(8000, 3, level)])
    line = soxr.resample(quiet_then_noise, 8000, 16000)  # as the transport hands it over
    assert speaking_events((await run_vad(line, 16000)).down) == []


async def test_quiet_speech_above_the_floor_is_still_speech() -> None:
    speech, rate = read_wav("caller_order_status_8k.wav")
    quiet = (speech.astype(np.float32) * 10 ** (-15 / 20)).astype(np.int16)  # 15 dB down
    kinds = [kind for kind, _ in speaking_events((await run_vad(padded(quiet, rate), rate)).down)]
    assert kinds[:1] == ["start"] and kinds[-1:] == ["stop"]


async def test_silero_models_are_reused_from_call_to_call() -> None:
    speech, rate = read_wav("caller_yes_16k.wav")
    samples = padded(speech, rate)
    idle = vad_module._idle_silero.setdefault(rate, [])
    idle.clear()
    for _ in range(3):
        kinds = [
            kind
            for kind, _ in speaking_events((await run_vad(samples, rate, engine="silero")).down)
        ]
        assert kinds == ["start", "stop"], "a reused model starts each call afresh"
        assert len(idle) == 1


async def test_a_whole_utterance_in_one_message_gives_both_events_in_order() -> None:
    speech, rate = read_wav("caller_yes_16k.wav")
    samples = padded(speech, rate, before_s=0.2, after_s=1.0)
    recorder = await run_vad(samples, rate, chunk_ms=len(samples) * 1000 / rate)
    assert [kind for kind, _ in speaking_events(recorder.down)] == ["start", "stop"]
