"""The same demo conversation over each transport: AudioSocket (TCP), chan_websocket (a fake
Asterisk dials the bot) and the call API (a WebSocket client). The caller hears the greeting,
asks about an order, hears the question back, asks for an operator and is transferred; the
history and the outcome are the same whatever carried the call."""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pytest
from call_api_client import CallClient, load_pcm
from fakes.chan_websocket import Channel, dial
from helpers import AUDIO

from voxpipe.bots.bot import Bot
from voxpipe.http import OperationsApi
from voxpipe.sessions import outcomes
from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer
from voxpipe.transports.audiosocket.protocol import Kind, encode
from voxpipe.transports.audiosocket.server import AudioSocketServer

ROOT = Path(__file__).resolve().parents[1]
RATE = 16000
FRAME = RATE // 50 * 2
VOICE_PEAK = 500


def demo_bot() -> Bot:
    text = (ROOT / "configs" / "demo.yaml").read_text()
    text = text.replace('listen: "0.0.0.0:9092"', 'listen: "127.0.0.1:0"')
    text, found = re.subn(r"(?m)^    max_calls: .*\n", "    max_calls: 4\n", text)
    assert found == 1, "configs/demo.yaml no longer has transport.audiosocket.max_calls"
    text = text.replace(
        "    max_calls: 4\n",
        '    max_calls: 4\n  websocket: {}\n  asterisk_websocket: {listen: "127.0.0.1:0"}\n',
    )
    text += 'http: {listen: "127.0.0.1:0"}\n'
    return Bot.from_yaml(text)


class Caller(Protocol):
    """A simulated caller over one transport: speaks PCM16 at 16 kHz, hears the bot."""

    last_voice: float

    def say(self, pcm: bytes) -> None: ...

    @property
    def ended(self) -> bool: ...


class AudioSocketCaller:
    """A raw AudioSocket client: the UUID, then 20 ms of slin16 (0x12) every 20 ms."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.queued: list[bytes] = []
        self.last_voice = 0.0
        self.closed = False

    @property
    def ended(self) -> bool:
        return self.closed

    def say(self, pcm: bytes) -> None:
        self.queued.extend(pcm[i : i + FRAME] for i in range(0, len(pcm) - FRAME + 1, FRAME))

    async def send(self) -> None:
        due = time.monotonic()
        while not self.closed:
            frame = self.queued.pop(0) if self.queued else bytes(FRAME)
            self.writer.write(encode(Kind.AUDIO_16K, frame))
            due += 0.02
            await asyncio.sleep(max(0.0, due - time.monotonic()))

    async def read(self) -> None:
        try:
            while True:
                header = await self.reader.readexactly(3)
                payload = await self.reader.readexactly(int.from_bytes(header[1:], "big"))
                if header[0] == 0:
                    break
                pcm = np.frombuffer(payload, "<i2").astype(np.int32)
                if pcm.size and np.abs(pcm).max() >= VOICE_PEAK:
                    self.last_voice = time.monotonic()
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        self.closed = True


class ChanWebSocketCaller:
    """The fake Asterisk's channel, as the caller hears it."""

    def __init__(self, channel: Channel) -> None:
        self.channel = channel

    @property
    def last_voice(self) -> float:
        voiced = [
            p for p in self.channel.heard if np.abs(np.frombuffer(p.pcm, "<i2")).max() >= VOICE_PEAK
        ]
        return voiced[-1].at if voiced else 0.0

    @property
    def ended(self) -> bool:
        return self.channel.closed.is_set()

    def say(self, pcm: bytes) -> None:
        self.channel.say(pcm)


class CallApiCaller:
    def __init__(self, client: CallClient) -> None:
        self.client = client

    @property
    def last_voice(self) -> float:
        return self.client.last_voice

    @property
    def ended(self) -> bool:
        return self.client.closed.is_set()

    def say(self, pcm: bytes) -> None:
        self.client.say(pcm)


@contextlib.asynccontextmanager
async def calling(transport: str, bot: Bot, call_id: str) -> AsyncIterator[tuple[Caller, Any]]:
    """Start the bot's server for ``transport``, place a call; yield the caller and server."""
    if transport == "audiosocket":
        server: Any = AudioSocketServer(bot, bot.config.transport.audiosocket)
        await server.start()
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(encode(Kind.UUID, uuid.UUID(call_id).bytes))
        caller = AudioSocketCaller(reader, writer)
        tasks = [asyncio.create_task(caller.send()), asyncio.create_task(caller.read())]
        try:
            yield caller, server
        finally:
            caller.closed = True
            writer.close()
            await asyncio.gather(*tasks, return_exceptions=True)
            await server.stop(0.0)
    elif transport == "asterisk_websocket":
        server = AsteriskWebSocketServer(bot, bot.config.transport.asterisk_websocket)
        await server.start()
        channel = Channel(format="slin16")
        task = asyncio.create_task(dial(f"ws://127.0.0.1:{server.port}/?call={call_id}", channel))
        try:
            yield ChanWebSocketCaller(channel), server
        finally:
            await channel.hang_up()
            await asyncio.gather(task, return_exceptions=True)
            await server.stop(0.0)
    else:
        api = OperationsApi.for_bot(bot)
        assert api is not None and api.call_api is not None
        await api.start()
        url = f"ws://127.0.0.1:{api.port}/api/v1/call"
        try:
            async with CallClient.open(url, {"call_id": call_id}) as client:
                yield CallApiCaller(client), api.call_api
        finally:
            await api.stop()


async def wait(predicate: Callable[[], bool], timeout_s: float = 40.0) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            if predicate():
                return
            await asyncio.sleep(0.05)


async def quiet(caller: Caller, since: float = 0.0, quiet_s: float = 1.0) -> None:
    """The bot has spoken (after ``since``) and then been silent for ``quiet_s``."""
    await wait(
        lambda: caller.last_voice > since and time.monotonic() - caller.last_voice >= quiet_s
    )


@pytest.mark.parametrize("transport", ["audiosocket", "asterisk_websocket", "websocket"])
async def test_the_same_demo_conversation_over_every_transport(transport: str) -> None:
    bot = demo_bot()
    await bot.prepare()
    call_id = str(uuid.uuid4())
    try:
        async with calling(transport, bot, call_id) as (caller, server):
            await wait(lambda: call_id in server.calls)
            call = server.calls[call_id].call
            await quiet(caller)  # the greeting
            question = load_pcm(AUDIO / "caller_order_status_16k.wav", RATE)
            asked = time.monotonic() + len(question) / 2 / RATE  # when the caller stops
            caller.say(question)
            await wait(
                lambda: any(
                    "order number" in str(m.get("content", ""))
                    for m in call.history
                    if m.get("role") == "assistant"
                )
            )
            await quiet(caller, since=asked)  # the bot's answer
            caller.say(load_pcm(AUDIO / "caller_operator_16k.wav", RATE))
            await wait(lambda: caller.ended or call_id not in server.calls)
    finally:
        await bot.close()
    said = [str(m.get("content", "")) for m in call.history if m.get("role") == "assistant"]
    assert any("What is your order number?" in s for s in said), said
    assert outcomes.outcome_of(call) == "transfer,transfer-to-operator,100,1"
