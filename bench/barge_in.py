"""Barge-in reaction: from the caller's first word over the bot to the last bot audio they hear.

    .venv/bin/python bench/barge_in.py [--runs 5] [--ahead 0.2 1.0 2.0]

A bot reads a long greeting (tone text-to-speech: a beep per word); 1.5 s into it a caller
says "wait, stop" (tests/audio/caller_interrupt_16k.wav). Measured per run: the caller's onset
(their first frame sent) to the last frame of bot audio the caller hears.

- AudioSocket: the bot paces its audio at real time; the caller hears each frame as it arrives
  (an Asterisk that plays what it receives: no queue to take back).
- chan_websocket: the bot sends ``send_ahead_s`` ahead; the fake Asterisk of
  tests/fakes/chan_websocket.py plays its queue at 20 ms per frame, and ``FLUSH_MEDIA`` empties
  it. Without the flush, the caller would also hear what was queued: the ``no flush`` column is
  that lead added (what barge-in would cost if Asterisk could not take audio back).

The reaction includes the VAD's ``start_ms`` (200) and barge_in's ``min_speech_ms`` (300): the
bot cannot know sooner that this is speech, not a cough.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
import uuid
from pathlib import Path

import numpy as np
from _machine import machine

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests"))

WORDS = " ".join(["parcel"] * 60)
BOT = """
name: barge
greeting: "{words}"
transport:
  audiosocket: {{listen: "127.0.0.1:0", sample_rate: 16000, max_calls: 50}}
  asterisk_websocket: {{listen: "127.0.0.1:0", send_ahead_s: {ahead}}}
pipeline:
  - vad: {{aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - barge_in: {{min_speech_ms: 300, protect_greeting: false}}
  - llm: {{provider: scripted, fallback: "Sorry?"}}
  - tts: {{provider: tone, word_ms: 200}}
"""
RATE = 16000
FRAME = RATE // 50 * 2
PEAK = 500


def speech() -> bytes:
    from call_api_client import load_pcm

    return load_pcm(REPO / "tests" / "audio" / "caller_interrupt_16k.wav", RATE)


def voiced(pcm: bytes) -> bool:
    samples = np.frombuffer(pcm, "<i2")
    return bool(samples.size) and int(np.abs(samples.astype(np.int32)).max()) >= PEAK


async def over_audiosocket(port: int, said: bytes) -> float:
    """One call over AudioSocket; the reaction in seconds."""
    from voxpipe.transports.audiosocket.protocol import Kind, encode

    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(encode(Kind.UUID, uuid.uuid4().bytes))
    heard: list[tuple[float, bool]] = []
    onset = 0.0

    async def read() -> None:
        while True:
            header = await reader.readexactly(3)
            payload = await reader.readexactly(int.from_bytes(header[1:], "big"))
            if header[0] == 0:
                return
            heard.append((time.monotonic(), voiced(payload)))

    reading = asyncio.create_task(read())
    frames = [said[i : i + FRAME] for i in range(0, len(said) - FRAME + 1, FRAME)]
    due = started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 6.0:
        talking = time.monotonic() - started >= 1.5 and sent < len(frames)
        if talking and not onset:
            onset = time.monotonic()
        writer.write(encode(Kind.AUDIO_16K, frames[sent] if talking else bytes(FRAME)))
        sent += talking
        due += 0.02
        await asyncio.sleep(max(0.0, due - time.monotonic()))
    writer.close()
    reading.cancel()
    last = max((t for t, v in heard if v and t >= onset), default=onset)
    return last - onset


async def over_chan_websocket(port: int, said: bytes) -> tuple[float, float]:
    """One call over chan_websocket; (reaction, what was queued at the flush, in seconds)."""
    from fakes.chan_websocket import Channel, dial

    channel = Channel(format="slin16")
    call = asyncio.create_task(dial(f"ws://127.0.0.1:{port}/?call={uuid.uuid4()}", channel))
    await channel.wait_for(lambda: bool(channel.voiced()))
    await asyncio.sleep(1.5)
    onset = time.monotonic()
    channel.say(said)
    queued = 0.0
    await channel.wait_for(lambda: bool(channel.named("FLUSH_MEDIA")), 10)
    queued = channel.max_queued * 0.02
    await asyncio.sleep(2.0)
    last = max((p.at for p in channel.voiced(after=onset)), default=onset)
    await channel.hang_up()
    await call
    return last - onset, queued


async def run(runs: int, ahead: float) -> dict[str, list[float]]:
    from voxpipe.bots.bot import Bot
    from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer
    from voxpipe.transports.audiosocket.server import AudioSocketServer

    bot = Bot.from_yaml(BOT.format(words=WORDS, ahead=ahead))
    await bot.prepare()
    audiosocket, chan_ws = (
        AudioSocketServer(bot, bot.config.transport.audiosocket),
        AsteriskWebSocketServer(bot, bot.config.transport.asterisk_websocket),
    )
    await audiosocket.start()
    await chan_ws.start()
    said = speech()
    found: dict[str, list[float]] = {"audiosocket": [], "chan_websocket": [], "queued": []}
    try:
        for _ in range(runs):
            found["audiosocket"].append(await over_audiosocket(audiosocket.port, said))
            reaction, queued = await over_chan_websocket(chan_ws.port, said)
            found["chan_websocket"].append(reaction)
            found["queued"].append(queued)
    finally:
        await audiosocket.stop(0.0)
        await chan_ws.stop(0.0)
        await bot.close()
    return found


async def main(args: argparse.Namespace) -> None:
    print(f"machine: {machine()}")
    print(
        f"{args.runs} run(s) per line; reaction = caller onset to the last bot audio heard "
        "(median, max), in ms; VAD start 200 ms + barge_in min_speech 300 ms included"
    )
    print(
        f"{'send_ahead_s':>12} {'AudioSocket':>16} {'chan_websocket':>16} {'no flush (+queue)':>18}"
    )
    for ahead in args.ahead:
        r = await run(args.runs, ahead)
        a, c, q = (np.array(r[k]) * 1000 for k in ("audiosocket", "chan_websocket", "queued"))
        print(
            f"{ahead:>12g} {statistics.median(a):>8.0f} {a.max():>6.0f} "
            f"{statistics.median(c):>9.0f} {c.max():>6.0f} "
            f"{statistics.median(c + q):>11.0f} {(c + q).max():>6.0f}",
            flush=True,
        )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--ahead", type=float, nargs="+", default=[0.2, 1.0, 2.0])
    asyncio.run(main(parser.parse_args()))
