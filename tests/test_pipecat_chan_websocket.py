"""voxpipe's chan_websocket line as a Pipecat transport (``voxpipe.interop.pipecat``), dialled
by the fake Asterisk chan_websocket over a real WebSocket: the example bot (plain Pipecat
services against the local OpenAI fake) greets, answers a turn, is interrupted (FLUSH_MEDIA),
and ends when the caller hangs up; keys, MEDIA_XOFF/MEDIA_XON and the bot's own hang-up."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from call_api_client import load_pcm
from fakes.chan_websocket import Channel, FakeAsterisk, dial
from fakes.openai_audio import WORD_MS, Answer, FakeOpenAIAudio
from fakes.openai_sse import openai_reply
from helpers import AUDIO
from pipecat.frames import frames as pf
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat_rig import Keys, load_example, run_pipeline

from voxpipe.interop.pipecat import (
    ChanWebSocketListener,
    ChanWebSocketTransport,
    serve_chan_websocket,
)
from voxpipe.testing import until

LONG_REPLY = "Your order left our warehouse this morning and it should reach you by Friday "
LONG_REPLY += "at the latest, and you will get a message with the tracking number soon."


@pytest.fixture
async def listeners() -> AsyncIterator[list[ChanWebSocketListener]]:
    started: list[ChanWebSocketListener] = []
    yield started
    for listener in started:
        await listener.stop()


def uri(listener: ChanWebSocketListener) -> str:
    return f"ws://127.0.0.1:{listener.port}/?call=pc-1"


@pytest.mark.parametrize("fmt", ["slin16", "ulaw"])
async def test_the_example_pipecat_bot_over_chan_websocket_greets_answers_is_interrupted(
    listeners: list[ChanWebSocketListener], fmt: str
) -> None:
    example = load_example()
    async with FakeOpenAIAudio() as api:
        # Silero may cut a recording at a pause: later pieces transcribe to nothing.
        api.transcripts.append(Answer("Where is my order?"))
        api.transcripts.extend(Answer("") for _ in range(2))
        api.transcripts.append(Answer("Wait, one more thing."))
        api.transcripts.extend(Answer("") for _ in range(4))
        api.chats.append(openai_reply(LONG_REPLY))
        api.chats.append(openai_reply("Yes?"))
        config = example.Config(api_key="sk-test", base_url=api.url, greeting="ACME order desk.")
        done = asyncio.Event()
        events: list[str] = []

        async def on_call(transport: ChanWebSocketTransport) -> None:
            @transport.event_handler("on_client_disconnected")
            async def gone(transport: ChanWebSocketTransport, call_id: str) -> None:
                events.append(f"disconnected {call_id}")

            await example.run_call(transport, config)
            done.set()

        listener = await serve_chan_websocket(on_call, listen="127.0.0.1:0")
        listeners.append(listener)
        channel = Channel(format=fmt)
        call = asyncio.create_task(dial(uri(listener), channel))
        rate = channel.rate
        # The greeting: three words, heard in full.
        await channel.quiet(for_s=0.8, timeout_s=20)
        greeting_s = len(channel.voiced()) * 0.02
        assert 3 * WORD_MS / 1000 - 0.1 <= greeting_s <= 3 * WORD_MS / 1000 + 0.2
        assert channel.named("ANSWER") and not channel.named("FLUSH_MEDIA")
        # A turn: the caller asks, the bot starts its long answer.
        asked_at = channel.heard[-1].at
        channel.say(load_pcm(AUDIO / f"caller_operator_{rate // 1000}k.wav", rate))
        await channel.wait_for(lambda: len(channel.voiced(after=asked_at)) >= 25, timeout_s=20)
        # Barge-in: the caller talks over it; Pipecat interrupts and Asterisk drops its queue.
        interrupted_at = channel.heard[-1].at
        channel.say(load_pcm(AUDIO / f"caller_interrupt_{rate // 1000}k.wav", rate))
        await channel.wait_for(lambda: flushes_after(channel, interrupted_at), timeout_s=10)
        await channel.quiet(for_s=1.0, timeout_s=20)
        # The caller hangs up: the pipeline ends.
        await channel.hang_up()
        await asyncio.wait_for(done.wait(), 10)
        await asyncio.wait_for(call, 5)
    assert events == ["disconnected pc-1"]
    spoken = [r.json["input"] for r in api.of("/v1/audio/speech")]
    assert spoken[0] == "ACME order desk."
    (first, *_rest) = api.of("/v1/chat/completions")
    said = [m["content"] for m in first.json["messages"] if m["role"] == "user"]
    assert said == ["Where is my order?"]
    # The long answer (30 words, 6 s) was cut short by the flush: the caller heard the
    # half second or so before it was interrupted, and nothing of it after.
    flushed_at = flushes_after(channel, interrupted_at)[0]
    heard = [p.at for p in channel.voiced(after=asked_at)]
    answer_s = 0.02 * len([at for at in heard if at < flushed_at])
    assert 0.5 <= answer_s < 30 * WORD_MS / 1000 - 2.0
    assert not [at for at in heard if at > flushed_at + 0.1]
    assert channel.dropped == 0 and not channel.hung_up


def flushes_after(channel: Channel, since: float) -> list[float]:
    """When the bot sent FLUSH_MEDIA after ``since``."""
    return [at for at, text in channel.commands if text == "FLUSH_MEDIA" and at > since]


class BotStopped(FrameProcessor):  # type: ignore[misc]
    """After the output: when Pipecat's output says the bot stopped speaking."""

    def __init__(self) -> None:
        super().__init__()
        self.at: list[float] = []

    async def process_frame(self, frame: pf.Frame, direction: FrameDirection) -> None:
        await super().process_frame(frame, direction)
        if isinstance(frame, pf.BotStoppedSpeakingFrame):
            self.at.append(time.monotonic())
        await self.push_frame(frame, direction)


async def test_keys_xoff_holds_the_audio_and_the_pipeline_s_end_hangs_up(
    listeners: list[ChanWebSocketListener],
) -> None:
    keys, stopped = Keys(2.0), BotStopped()

    async def on_call(transport: ChanWebSocketTransport) -> None:
        await run_pipeline([transport.input(), keys, transport.output(), stopped])

    listener = await serve_chan_websocket(on_call, listen="127.0.0.1:0")
    listeners.append(listener)
    # A small queue: Asterisk says MEDIA_XOFF at 20 frames, MEDIA_XON under 10, drops at 30.
    channel = Channel(format="slin", json=True, xoff_level=20, xon_level=10, max_level=30)
    call = asyncio.create_task(dial(uri(listener), channel))
    await until(lambda: channel.answered and channel.named("ANSWER"), timeout_s=10)
    # Asterisk's playout stalls (as PAUSE_MEDIA does): its queue fills while the bot speaks.
    channel.paused = True
    await channel.dtmf("1")
    await channel.wait_for(lambda: "MEDIA_XOFF" in str(channel.events_sent), timeout_s=10)
    # The bot holds its audio: nothing more arrives, and Pipecat's output waits too (its
    # two seconds of tone would have been written by now).
    await asyncio.sleep(3.0)
    held = channel.queued_media
    resumed_at = time.monotonic()
    channel.paused = False
    await channel.wait_for(lambda: "MEDIA_XON" in str(channel.events_sent), timeout_s=10)
    await channel.quiet(for_s=0.6, timeout_s=20)
    await channel.dtmf("2")
    await channel.dtmf("#")
    await asyncio.wait_for(call, 15)
    assert keys.keys == ["1", "2", "#"]
    assert channel.hung_up  # HANGUP after the play-out, in the call's (JSON) form
    assert channel.named("HANGUP") == ['{"command":"HANGUP"}']
    # The sender held back while Asterisk's queue was full: nothing dropped, all 2 s heard.
    assert channel.dropped == 0 and channel.max_queued < channel.max_level
    assert channel.xoff_level <= held < channel.max_level
    # Pipecat's idea of the bot speaking followed the line: it stopped after the pause, not in it.
    assert stopped.at and min(stopped.at) > resumed_at
    assert len(channel.voiced()) * 0.02 == pytest.approx(2.0, abs=0.1)


async def test_the_bot_connects_to_asterisk_s_media_endpoint(
    listeners: list[ChanWebSocketListener],
) -> None:
    """Dial(WebSocket/INCOMING): the listener opens Asterisk's /media/<connection id>."""
    keys = Keys(2.0)

    async def on_call(transport: ChanWebSocketTransport) -> None:
        await run_pipeline([transport.input(), keys, transport.output()], rate=8000)

    listener = await serve_chan_websocket(on_call, listen="127.0.0.1:0")
    listeners.append(listener)
    async with FakeAsterisk() as asterisk:
        channel = asterisk.create("media-7f3a", format="alaw", channel_id="1732900001.7")
        connected = asyncio.create_task(
            listener.connect(f"ws://127.0.0.1:{asterisk.port}/media/media-7f3a")
        )
        await until(lambda: channel.named("ANSWER"), timeout_s=10)
        assert list(listener.calls) == ["1732900001.7"]  # no call= parameter: the channel id
        await channel.dtmf("#")
        await asyncio.wait_for(connected, 10)
        await asyncio.wait_for(channel.closed.wait(), 5)
    assert keys.keys == ["#"] and channel.hung_up and not listener.calls
