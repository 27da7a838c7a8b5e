"""Asterisk's chan_websocket: the bot against a fake Asterisk written from chan_websocket.c, in
both directions, plain-text and JSON control, slin/ulaw/alaw, XOFF/XON, FLUSH_MEDIA on
barge-in, marks, DTMF and malformed input; G.711 against known values."""

from __future__ import annotations

import asyncio
import contextlib
import warnings
from collections.abc import AsyncIterator
from typing import Any

import numpy as np
import pytest
from call_api_client import load_pcm
from fakes.chan_websocket import Channel, FakeAsterisk, dial
from helpers import AUDIO, Recorder

from voxpipe.bots.bot import Bot
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.frames import DTMFFrame
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings
from voxpipe.transports import g711
from voxpipe.transports.asterisk_websocket.protocol import (
    ProtocolError,
    command,
    parse_event,
    parse_media_start,
)
from voxpipe.transports.asterisk_websocket.server import AsteriskWebSocketServer

ECHO = """
name: echo
transport:
  audiosocket: {listen: "127.0.0.1:0", sample_rate: 16000}
  asterisk_websocket: {listen: "127.0.0.1:0"%s}
pipeline:
  - echo: {passthrough: true}
"""

WORDS = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen"
TONE = """
name: tone
greeting: "%s"
transport:
  audiosocket: {listen: "127.0.0.1:0", sample_rate: 16000}
  asterisk_websocket: {listen: "127.0.0.1:0", send_ahead_s: %s}
pipeline:
  - vad: {aggressiveness: 2, start_ms: 200, stop_ms: 600}
  - barge_in: {min_speech_ms: 300, protect_greeting: false}
  - llm: {provider: scripted, fallback: "Sorry?"}
  - tts: {provider: tone, word_ms: 200}
"""


@contextlib.asynccontextmanager
async def serving(bot: Bot) -> AsyncIterator[AsteriskWebSocketServer]:
    await bot.prepare()
    server = AsteriskWebSocketServer(bot, bot.config.transport.asterisk_websocket)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.0)
        await bot.close()


def uri(server: AsteriskWebSocketServer, query: str = "") -> str:
    return f"ws://127.0.0.1:{server.port}/{query}"


def tone(seconds: float, rate: int, freq: float = 440.0) -> bytes:
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * np.pi * freq * t) * 8000).astype("<i2").tobytes()


# --- G.711 -------------------------------------------------------------------------------------


def test_g711_known_codes_and_round_trips() -> None:
    assert (
        g711.decode(bytes([0xFF, 0x7F, 0x80, 0x00]), "ulaw")
        == np.array([0, 0, 32124, -32124], dtype="<i2").tobytes()
    )
    assert (
        g711.decode(bytes([0xD5, 0x55, 0xAA, 0x2A]), "alaw")
        == np.array([8, -8, 32256, -32256], dtype="<i2").tobytes()
    )
    codes = bytes(range(256))
    for law in ("ulaw", "alaw"):
        pcm = g711.decode(codes, law)
        again = g711.encode(pcm, law)
        # every code but mu-law's negative zero (0x7F, decoded as 0, encoded as 0xFF) survives
        assert [c for c, a in zip(codes, again, strict=True) if c != a] == (
            [0x7F] if law == "ulaw" else []
        )
        # and a whole range of PCM comes back within the law's step size
        ramp = np.arange(-32768, 32768, 7, dtype=np.int16)
        back = np.frombuffer(g711.decode(g711.encode(ramp.tobytes(), law), law), dtype="<i2")
        error = np.abs(back.astype(np.int32) - ramp)
        bound = np.maximum(16, np.abs(ramp.astype(np.int32)) // 16)
        assert error.max() <= 1024 and (error <= bound).all()


def test_g711_matches_the_reference_codec_where_python_still_has_it() -> None:
    """Python 3.11 (the project's CI) still ships audioop: the tables must agree with it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        audioop = pytest.importorskip("audioop")
    pcm = np.arange(-32768, 32768, dtype=np.int16).tobytes()
    codes = bytes(range(256))
    assert g711.encode(pcm, "ulaw") == audioop.lin2ulaw(pcm, 2)
    assert g711.encode(pcm, "alaw") == audioop.lin2alaw(pcm, 2)
    assert g711.decode(codes, "ulaw") == audioop.ulaw2lin(codes, 2)
    assert g711.decode(codes, "alaw") == audioop.alaw2lin(codes, 2)


# --- the control messages ----------------------------------------------------------------------


def test_media_start_in_both_forms_and_commands_in_the_call_s_form() -> None:
    plain = parse_media_start(Channel(format="ulaw").media_start())
    assert (plain.format, plain.rate, plain.optimal_frame_size, plain.json) == (
        "ulaw",
        8000,
        160,
        False,
    )
    assert plain.channel_id == "1732900000.42" and plain.law == "ulaw"
    channel = Channel(format="slin16", json=True, variables={"ACCOUNT": "A-7"})
    js = parse_media_start(channel.media_start())
    assert (js.format, js.optimal_frame_size, js.json, js.variables) == (
        "slin16",
        640,
        True,
        {"ACCOUNT": "A-7"},
    )
    assert command("MARK_MEDIA", False, "vp3") == "MARK_MEDIA vp3"
    assert command("MARK_MEDIA", True, "vp3") == '{"command":"MARK_MEDIA","correlation_id":"vp3"}'
    assert command("FLUSH_MEDIA", True) == '{"command":"FLUSH_MEDIA"}'
    assert parse_event("MEDIA_MARK_PROCESSED vp3").fields == {"correlation_id": "vp3"}
    assert parse_event("DTMF_END digit:5 channel_id:1.2").fields["digit"] == "5"
    assert parse_event('{"event":"MEDIA_XOFF","channel_id":"1.2"}').name == "MEDIA_XOFF"
    for bad in ("", "{nope", '{"channel_id": "x"}', "hello there", "MEDIA_START format:g729"):
        with pytest.raises(ProtocolError):
            parse_media_start(bad)


# --- calls -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "as_json"),
    [("slin16", False), ("slin", True), ("ulaw", False), ("alaw", True), ("slin48", False)],
)
async def test_asterisk_dials_the_bot_and_hears_its_echo(fmt: str, as_json: bool) -> None:
    """Asterisk connects (Dial(WebSocket/voxpipe/c(fmt))), the caller speaks, the echo bot's
    audio comes back in the channel's format; hanging up ends the call."""
    async with serving(Bot.from_yaml(ECHO % "")) as server:
        channel = Channel(format=fmt, json=as_json)
        call = asyncio.create_task(dial(uri(server, "?call=c-1&ACCOUNT=A-7"), channel))
        await channel.wait_for(lambda: "c-1" in server.calls)
        active = server.calls["c-1"]
        assert active.call.caller is not None
        assert active.call.caller.way_in == "chan_websocket"
        said = tone(0.6, channel.rate)
        started = asyncio.get_running_loop().time()
        channel.say(said)
        await channel.wait_for(lambda: len(channel.voiced()) >= 25)
        assert asyncio.get_running_loop().time() - started < 5
        await channel.hang_up()
        await call
        await channel.wait_for(lambda: not server.calls)
    assert channel.named("ANSWER")
    assert channel.named("START_MEDIA_BUFFERING")
    heard = np.frombuffer(b"".join(p.pcm for p in channel.voiced()), dtype="<i2")
    assert np.abs(heard).max() > 4000  # the tone, not noise
    assert channel.dropped == 0


async def test_the_bot_connects_to_asterisk_s_media_endpoint() -> None:
    """Incoming mode: Dial(WebSocket/INCOMING) made a channel; the bot opens /media/<id>."""
    async with (
        serving(Bot.from_yaml(ECHO % "")) as server,
        FakeAsterisk() as asterisk,
    ):
        channel = asterisk.create("8f5c-42", json=True, channel_id="voxpipe-media-5f0e")
        task = asyncio.create_task(server.connect(f"ws://127.0.0.1:{asterisk.port}/media/8f5c-42"))
        await channel.wait_for(lambda: "5f0e" in server.calls)
        channel.say(tone(0.5, channel.rate))
        await channel.wait_for(lambda: len(channel.voiced()) >= 20)
        await channel.hang_up()
        await asyncio.wait_for(task, 10)
        # an unknown connection id is a 404: the bot's connect fails, nothing else happens
        with pytest.raises(Exception, match="404"):
            await server.connect(f"ws://127.0.0.1:{asterisk.port}/media/nope")
    assert channel.close_code == 1000


async def test_barge_in_sends_flush_media_and_the_caller_hears_nothing_more() -> None:
    """The bot sends 2 s ahead; the caller talks over it: FLUSH_MEDIA takes back what Asterisk
    had queued, and the history keeps only the words the caller heard (marks)."""
    bot = Bot.from_yaml(TONE % (WORDS, 2.0))
    async with serving(bot) as server:
        channel = Channel(format="slin16")
        call = asyncio.create_task(dial(uri(server, "?call=b-1"), channel))
        await channel.wait_for(lambda: len(channel.voiced()) >= 40)
        assert channel.queued_media > 50, "the bot should send ahead of real time"
        active = server.calls["b-1"]
        channel.say(load_pcm(AUDIO / "caller_interrupt_16k.wav", 16000))
        await channel.wait_for(lambda: bool(channel.named("FLUSH_MEDIA")), 10)
        flushed_at = channel.named_at("FLUSH_MEDIA")
        await asyncio.sleep(1.0)
        late = channel.voiced(after=flushed_at + 0.05)
        history = [m for m in active.call.history if m.get("role") == "assistant"]
        await channel.hang_up()
        await call
    assert late == [], f"{len(late)} frames of bot audio after FLUSH_MEDIA"
    assert channel.named("MARK_MEDIA")
    said = history[0]["content"] if history else ""
    assert said and WORDS.startswith(said) and said != WORDS, said


async def test_xoff_holds_the_audio_and_xon_resumes_it_nothing_is_lost() -> None:
    """Asterisk's queue is small here (XOFF at 10 frames, drops past 60, as 900 and 1000 for a
    real one): the bot, 0.6 s (30 frames) ahead, stops at XOFF, resumes at XON, and every frame
    of the greeting is played, none dropped."""
    words = "one two three four five"
    bot = Bot.from_yaml(TONE % (words, 0.6))
    async with serving(bot) as server:
        played: list[Channel] = []
        for small in (True, False):
            levels = {"xoff_level": 10, "xon_level": 5, "max_level": 60} if small else {}
            channel = Channel(format="slin16", json=True, **levels)
            call = asyncio.create_task(dial(uri(server, f"?call=x-{small}"), channel))
            await channel.wait_for(lambda c=channel: bool(c.voiced()))
            await channel.quiet(for_s=1.0)
            await channel.hang_up()
            await call
            played.append(channel)
    small_queue, roomy = played
    assert any("MEDIA_XOFF" in e for e in small_queue.events_sent)
    assert any("MEDIA_XON" in e for e in small_queue.events_sent)
    assert not any("MEDIA_XOFF" in e for e in roomy.events_sent)
    assert small_queue.dropped == 0 and small_queue.max_queued < 60
    # the held audio was played in full: as much of the greeting as without XOFF
    assert abs(len(small_queue.voiced()) - len(roomy.voiced())) <= 1
    assert len(roomy.voiced()) >= 30


class DigitsSettings(ProcessorSettings):
    """Keeps the frames that pass (for the test to read)."""

    def create(self, call: Any, bot: Any) -> FrameProcessor:
        recorder = Recorder()
        RECORDERS.append(recorder)
        return recorder


RECORDERS: list[Recorder] = []


async def test_dtmf_end_becomes_a_dtmf_frame() -> None:
    registry = Registry.default(plugins=False)
    registry.add(ProcessorType("keep", DigitsSettings, "test"))
    text = ECHO % "" + "  - keep: {}\n"
    async with serving(Bot.from_yaml(text, registry=registry)) as server:
        for as_json in (False, True):
            RECORDERS.clear()
            channel = Channel(json=as_json)
            call = asyncio.create_task(dial(uri(server), channel))
            await channel.wait_for(lambda: bool(server.calls) and bool(RECORDERS))
            await channel.dtmf("7")
            await channel.dtmf("#")
            recorder = RECORDERS[0]
            await recorder.wait_for(lambda r=recorder: len(r.of(DTMFFrame)) == 2)
            assert [f.digit for f in recorder.of(DTMFFrame)] == ["7", "#"]
            await channel.hang_up()
            await call


@pytest.mark.parametrize(
    ("first", "later"),
    [
        ("MEDIA_START format:g729 channel_id:1 optimal_frame_size:10", None),
        ("{not json", None),
        ("HELLO", None),
        (b"\x00" * 640, None),
        (None, b"\x00" * 641),
        (None, "{broken"),
        (None, "MEDIA_START connection_id:x channel_id:1 format:slin16 optimal_frame_size:640"),
        (None, "DTMF_END digit:X channel_id:1"),
        (None, b"\x00" * 70000),
    ],
)
async def test_malformed_input_ends_that_call_only(first: Any, later: Any) -> None:
    """A bad first message or a bad message mid-call closes that WebSocket with a clear log
    (1007); a call running beside it goes on."""
    async with serving(Bot.from_yaml(ECHO % "")) as server:
        good = Channel()
        good_call = asyncio.create_task(dial(uri(server, "?call=good"), good))
        await good.wait_for(lambda: "good" in server.calls)
        from websockets.asyncio.client import connect

        async with connect(uri(server, "?call=bad"), subprotocols=["media"], proxy=None) as ws:  # type: ignore[list-item]
            if first is not None:
                await ws.send(first)
            else:
                await ws.send(Channel().media_start())
                await good.wait_for(lambda: "bad" in server.calls)
                await ws.send(later)
            async with asyncio.timeout(5):
                with contextlib.suppress(Exception):
                    while True:
                        await ws.recv()
            assert ws.close_code in (1007, 1009)
        await good.wait_for(lambda: "bad" not in server.calls)
        assert "good" in server.calls
        good.say(tone(0.4, 16000))
        await good.wait_for(lambda: len(good.voiced()) >= 15)
        await good.hang_up()
        await good_call


# --- ARI externalMedia over chan_websocket -------------------------------------------------------


@pytest.mark.parametrize("mode", ["asterisk_dials", "bot_connects"])
async def test_a_stasis_caller_reaches_the_bot_over_chan_websocket_and_is_transferred(
    mode: str,
) -> None:
    """ARI with media_transport websocket: Asterisk dials the websocket_client connection, or
    the bot opens /media/<MEDIA_WEBSOCKET_CONNECTION_ID>; the call is the controller's (its id
    the media channel's UUID), the caller hears the echo, and a transfer goes through ARI."""
    from fakes.ari import FakeAri
    from pydantic import SecretStr

    from voxpipe.ari import AriCall, AriController
    from voxpipe.bots.config import AriSettings
    from voxpipe.frames import TransferFrame
    from voxpipe.testing import until

    fake = FakeAri()
    await fake.start()
    try:
        async with serving(Bot.from_yaml(ECHO % "")) as server:
            fake.websocket_clients["voxpipe-ws"] = uri(server)
            settings = AriSettings.model_validate(
                {
                    "url": fake.url,
                    "username": fake.username,
                    "password": SecretStr(fake.password),
                    "media_transport": "websocket",
                    "media_format": "ulaw",
                    "websocket_connection": "voxpipe-ws" if mode == "asterisk_dials" else None,
                }
            )
            ctl = AriController(settings, "127.0.0.1:9", server)
            server.on_call_start.append(ctl.attach)
            await ctl.start()
            try:
                await until(lambda: len(fake.sockets) == 1)
                caller = await fake.place_call()
                await until(lambda: len(server.calls) == 1, timeout_s=10)
                (active,) = server.calls.values()
                ari_call = active.call.controller
                assert isinstance(ari_call, AriCall) and ari_call.caller_id == caller
                assert active.call.call_id == ari_call.uuid
                await until(lambda: ari_call.bridged)
                (request,) = fake.made("POST", "/channels/externalMedia")
                assert request.params["transport"] == "websocket"
                assert request.params["encapsulation"] == "none"
                assert request.params["connection_type"] == (
                    "client" if mode == "asterisk_dials" else "server"
                )
                media = fake.ws_channels[ari_call.media_id]
                media.say(tone(0.6, 8000))
                await media.wait_for(lambda: len(media.voiced()) >= 20)
                active.task.queue_frame(
                    TransferFrame(context="transfer-to-operator", extension="100")
                )
                await until(lambda: not ctl.calls and not server.calls, timeout_s=10)
            finally:
                await ctl.stop()
    finally:
        await fake.stop()
    (moved,) = fake.made("POST", f"/channels/{caller}/continue")
    assert moved.params["context"] == "transfer-to-operator"
    heard = np.frombuffer(b"".join(p.pcm for p in media.voiced()), dtype="<i2")
    assert np.abs(heard).max() > 4000  # mu-law both ways: the caller heard the tone back


def test_transport_picks_the_listeners_and_the_config_checks_what_needs_what() -> None:
    """AudioSocket unless the bot file names only other transports; ARI over chan_websocket
    needs the chan_websocket transport, ARI over AudioSocket needs AudioSocket."""
    from voxpipe.bots.config import ConfigError

    def served(transport: str) -> list[str]:
        text = f"name: t\n{transport}pipeline:\n  - echo: {{}}\n"
        return Bot.from_yaml(text).config.transport.served()

    assert served("") == ["audiosocket"]
    assert served("transport: {asterisk_websocket: {}}\n") == ["asterisk_websocket"]
    assert served("transport: {audiosocket: {}, asterisk_websocket: {}}\n") == [
        "audiosocket",
        "asterisk_websocket",
    ]
    ari = "ari: {url: 'http://127.0.0.1:8088', username: u, password: p%s}\n"
    with pytest.raises(ConfigError, match="needs the chan_websocket transport"):
        Bot.from_yaml("name: t\npipeline:\n  - echo: {}\n" + ari % ", media_transport: websocket")
    with pytest.raises(ConfigError, match=r"names no transport\.audiosocket"):
        Bot.from_yaml(
            "name: t\ntransport: {asterisk_websocket: {}}\npipeline:\n  - echo: {}\n" + ari % ""
        )
    with pytest.raises(ConfigError, match="needs media_transport: websocket"):
        Bot.from_yaml("name: t\npipeline:\n  - echo: {}\n" + ari % ", media_format: ulaw")


async def test_a_full_bot_refuses_with_503_and_an_address_not_allowed_with_403() -> None:
    """Refusals come before the upgrade, so Asterisk's Dial fails (CHANUNAVAIL) at once."""
    from websockets.exceptions import InvalidStatus

    async with serving(Bot.from_yaml(ECHO % ", max_calls: 1")) as server:
        first = Channel()
        call = asyncio.create_task(dial(uri(server, "?call=one"), first))
        await first.wait_for(lambda: "one" in server.calls)
        with pytest.raises(InvalidStatus, match="503"):
            await dial(uri(server, "?call=two"), Channel())
        await first.hang_up()
        await call
    text = ECHO % ", allow_from: ['10.0.0.0/8']"
    async with serving(Bot.from_yaml(text)) as server:
        with pytest.raises(InvalidStatus, match="403"):
            await dial(uri(server), Channel())
        assert server.calls == {}


async def test_serve_runs_a_chan_websocket_only_bot_and_drains_it_on_sigterm() -> None:
    """`run-pipeline serve` of a bot whose transport names only asterisk_websocket: no
    AudioSocket listener, calls over chan_websocket, SIGTERM ends them and stops."""
    import os
    import signal

    from helpers import free_port

    from voxpipe.bots.serve import serve as serve_bot

    port = free_port()
    text = (
        "name: ws-only\ntransport:\n"
        f'  asterisk_websocket: {{listen: "127.0.0.1:{port}", drain_s: 0}}\n'
        "pipeline:\n  - echo: {passthrough: true}\n"
    )
    servers: list[Any] = []
    up = asyncio.Event()

    def ready(server: Any) -> None:
        servers.append(server)
        up.set()

    running = asyncio.create_task(serve_bot(Bot.from_yaml(text), ready=ready))
    channel = Channel()
    try:
        await asyncio.wait_for(up.wait(), 20)
        assert not servers[0].listening  # no AudioSocket server was started
        call = asyncio.create_task(dial(f"ws://127.0.0.1:{port}/?call=s-1", channel))
        channel.say(tone(0.4, 16000))
        await channel.wait_for(lambda: len(channel.voiced()) >= 15)
        os.kill(os.getpid(), signal.SIGTERM)
        assert await asyncio.wait_for(running, 20) == 0
        await asyncio.wait_for(call, 10)
    finally:
        if not running.done():
            running.cancel()
    assert channel.closed.is_set()
