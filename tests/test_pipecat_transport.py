"""voxpipe's AudioSocket line as a Pipecat transport (``voxpipe.interop.pipecat``), called by
the simulated caller over real TCP: the example bot (examples/pipecat_audiosocket.py, plain
Pipecat services against the local OpenAI fake), keys, the bot hanging up after playing out,
and the caller hanging up ending the pipeline."""

from __future__ import annotations

import asyncio
import importlib.util
import math
import struct
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest
from fakes.openai_audio import WORD_MS, Answer, FakeOpenAIAudio
from fakes.openai_sse import openai_reply
from helpers import AUDIO
from pipecat.frames import frames as pf
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.workers.runner import WorkerRunner

from voxpipe.interop.pipecat import AudioSocketListener, AudioSocketTransport, serve
from voxpipe.transports.audiosocket.caller import (
    Dtmf,
    Hangup,
    Say,
    Silence,
    WaitForBot,
    WaitForHangup,
    load_wav,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import Kind

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "pipecat_audiosocket.py"


def load_example() -> Any:
    spec = importlib.util.spec_from_file_location("pipecat_audiosocket", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
async def listening() -> AsyncIterator[Callable[..., Awaitable[AudioSocketListener]]]:
    listeners: list[AudioSocketListener] = []

    async def start(on_call: Callable[[AudioSocketTransport], Awaitable[None]]) -> Any:
        listener = await serve(on_call, listen="127.0.0.1:0")
        listeners.append(listener)
        return listener

    yield start
    for listener in listeners:
        await listener.stop()


async def run_pipeline(processors: list[Any], rate: int = 16000) -> None:
    worker = PipelineWorker(
        Pipeline(processors),
        params=PipelineParams(audio_in_sample_rate=rate, audio_out_sample_rate=rate),
        idle_timeout_secs=None,
    )
    runner = WorkerRunner(handle_sigint=False)
    await runner.add_workers(worker)
    await runner.run()


@pytest.mark.parametrize("rate", [8000, 16000])
async def test_the_example_pipecat_bot_greets_hears_and_answers_a_caller(
    listening: Callable[..., Awaitable[AudioSocketListener]], rate: int
) -> None:
    example = load_example()
    async with FakeOpenAIAudio() as api:
        # Silero may cut the recording at a pause: later pieces transcribe to nothing.
        api.transcripts.append(Answer("Please transfer me to an operator."))
        api.transcripts.extend(Answer("") for _ in range(3))
        api.chats.append(openai_reply("Sure. ", "One moment, please."))
        config = example.Config(api_key="sk-test", base_url=api.url, greeting="ACME order desk.")
        done = asyncio.Event()

        async def on_call(transport: AudioSocketTransport) -> None:
            await example.run_call(transport, config)
            done.set()

        listener = await listening(on_call)
        caller = load_wav(AUDIO / f"caller_operator_{rate // 1000}k.wav", rate)
        result = await place_call(
            "127.0.0.1",
            listener.port,
            [
                WaitForBot(timeout_s=10),
                Silence(0.3),
                Say(caller),
                WaitForBot(timeout_s=20, quiet_s=1.0),
                Hangup(),
            ],
            rate=rate,
        )
        await asyncio.wait_for(done.wait(), 10)  # the caller's hang-up ended the pipeline
    assert result.hung_up_by == "caller"
    # The bot answered in the caller's kind of audio (0x10 at 8 kHz, 0x12 at 16 kHz).
    kinds = {kind for _t, kind, _n in result.messages}
    assert kinds == {Kind.AUDIO_8K if rate == 8000 else Kind.AUDIO_16K}
    spoken = [r.json["input"] for r in api.of("/v1/audio/speech")]
    assert spoken[0] == "ACME order desk."
    assert " ".join(spoken[1:]) == "Sure. One moment, please."
    uploads = api.of("/v1/audio/transcriptions")
    # At the pipeline's rate (the caller's audio was resampled), and all of the utterance.
    assert {upload.wav()[0] for upload in uploads} == {16000}
    uploaded_s = sum(len(upload.wav()[1]) / 32000 for upload in uploads)
    assert uploaded_s >= len(caller) / (2 * rate)
    (chat,) = api.of("/v1/chat/completions")
    said = [m["content"] for m in chat.json["messages"] if m["role"] == "user"]
    assert said == ["Please transfer me to an operator."]
    # Heard: the greeting (3 words), then the reply (1 + 3 words), 200 ms per word.
    heard_s = sum(end - start for start, end in result.bot_segments)
    assert 7 * WORD_MS / 1000 - 0.1 <= heard_s <= 7 * WORD_MS / 1000 + 0.4


def tone(seconds: float, rate: int) -> bytes:
    n = int(seconds * rate)
    return b"".join(
        struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * i / rate))) for i in range(n)
    )


class Keys(FrameProcessor):  # type: ignore[misc]
    """Notes the caller's keys; '1' plays half a second of tone, '#' ends the pipeline."""

    def __init__(self) -> None:
        super().__init__()
        self.keys: list[str] = []

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, pf.InputDTMFFrame):
            self.keys.append(frame.button.value)
            if frame.button.value == "1":
                await self.push_frame(pf.OutputAudioRawFrame(tone(0.5, 16000), 16000, 1))
            elif frame.button.value == "#":
                await self.push_frame(pf.EndWorkerFrame(), FrameDirection.UPSTREAM)
            return
        await self.push_frame(frame, direction)


async def test_keys_reach_the_pipeline_and_its_end_plays_out_then_hangs_up(
    listening: Callable[..., Awaitable[AudioSocketListener]],
) -> None:
    keys = Keys()

    async def on_call(transport: AudioSocketTransport) -> None:
        await run_pipeline([transport.input(), keys, transport.output()])

    listener = await listening(on_call)
    result = await place_call(
        "127.0.0.1",
        listener.port,
        [Silence(0.3), Dtmf("1"), Dtmf("2#"), WaitForHangup(timeout_s=10)],
        rate=8000,
    )
    assert keys.keys == ["1", "2", "#"]
    assert result.hung_up_by == "bot"
    # The half second of tone was played out in full before the hang-up.
    assert sum(end - start for start, end in result.bot_segments) == pytest.approx(0.5, abs=0.1)


async def test_the_caller_hanging_up_ends_the_pipeline(
    listening: Callable[..., Awaitable[AudioSocketListener]],
) -> None:
    events: list[str] = []
    finished = asyncio.Event()

    async def on_call(transport: AudioSocketTransport) -> None:
        @transport.event_handler("on_client_connected")
        async def connected(transport: AudioSocketTransport, call_id: str) -> None:
            events.append(f"connected {call_id}")

        @transport.event_handler("on_client_disconnected")
        async def disconnected(transport: AudioSocketTransport, call_id: str) -> None:
            events.append(f"disconnected {call_id}")

        await run_pipeline([transport.input(), transport.output()])
        finished.set()

    listener = await listening(on_call)
    result = await place_call("127.0.0.1", listener.port, [Silence(1.5), Hangup()], rate=16000)
    await asyncio.wait_for(finished.wait(), 10)
    assert events == [f"connected {result.call_id}", f"disconnected {result.call_id}"]
    # A silent bot keeps the line alive with silence (Asterisk's 2 s inactivity limit).
    assert result.messages
