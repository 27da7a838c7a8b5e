"""voxpipe's AudioSocket line as a Pipecat transport (``voxpipe.interop.pipecat``), called by
the simulated caller over real TCP: the example bot (examples/pipecat_audiosocket.py, plain
Pipecat services against the local OpenAI fake), keys, the bot hanging up after playing out,
and the caller hanging up ending the pipeline."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from fakes.openai_audio import WORD_MS, Answer, FakeOpenAIAudio
from fakes.openai_sse import openai_reply
from helpers import AUDIO
from pipecat_rig import Keys, load_example, run_pipeline

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


async def test_keys_reach_the_pipeline_and_its_end_plays_out_then_hangs_up(
    listening: Callable[..., Awaitable[AudioSocketListener]],
) -> None:
    keys = Keys(0.5)

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
