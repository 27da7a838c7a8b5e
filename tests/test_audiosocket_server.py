"""The AudioSocket server and transport over real loopback sockets.

A ``probe`` processor stands in for a bot: it speaks a tone when the call starts, obeys keys
(``#`` hang up, ``*`` barge in, ``0`` transfer) and records every frame it sees both ways.
"""

from __future__ import annotations

import asyncio
import math
import socket
import statistics
import uuid
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator

import numpy as np
import pytest
from helpers import observing
from pydantic import Field

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.frames import (
    BotStartedSpeakingFrame,
    BotStoppedSpeakingFrame,
    Direction,
    DTMFFrame,
    Frame,
    HangupFrame,
    OutputAudioFrame,
    StartFrame,
    TransferFrame,
    TTSStoppedFrame,
    Utterance,
)
from voxpipe.pipelines.call import Call
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import (
    Dtmf,
    Hangup,
    Say,
    Silence,
    WaitForHangup,
    place_call,
)
from voxpipe.transports.audiosocket.protocol import Kind, encode
from voxpipe.transports.audiosocket.server import AudioSocketServer

SEEN: dict[str, list[tuple[Frame, Direction]]] = defaultdict(list)
UTTERANCES: dict[str, Utterance] = {}


def tone(seconds: float, rate: int, hz: float = 440.0) -> bytes:
    """A sine tone at half scale, PCM16."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * hz * t) * 16000).astype("<i2").tobytes()


class Probe(FrameProcessor):
    """A stand-in bot: a tone at start, actions on keys, and a record of every frame."""

    def __init__(self, settings: ProbeSettings) -> None:
        super().__init__(name="probe")
        self.settings = settings

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        call_id = self.call.call_id
        SEEN[call_id].append((frame, direction))
        await self.push_frame(frame, direction)
        if isinstance(frame, StartFrame) and self.settings.speak_s:
            await self._speak(frame.sample_rate)
        elif isinstance(frame, DTMFFrame):
            if frame.digit == "#":
                await self.push_frame(HangupFrame(reason="caller pressed #"))
            elif frame.digit == "*":
                self.task.interrupt()
            elif frame.digit == "0":
                await self.push_frame(TransferFrame(context="operators", extension="100"))

    async def _speak(self, rate: int) -> None:
        audio = tone(self.settings.speak_s, rate)
        step = int(rate * self.settings.chunk_ms / 1000) * 2
        chunks = [audio[i : i + step] for i in range(0, len(audio), step)]
        utterance = Utterance("one two three four five six", frames_total=len(chunks))
        UTTERANCES[self.call.call_id] = utterance
        for chunk in chunks:
            await self.push_frame(OutputAudioFrame(chunk, rate, utterance=utterance))
        await self.push_frame(TTSStoppedFrame(text=utterance.text))


class ProbeSettings(ProcessorSettings):
    """Test bot."""

    speak_s: float = Field(0.0, description="Seconds of tone to say at the start.")
    chunk_ms: int = Field(20, description="Size of each audio frame it pushes.")

    def create(self, call: Call, bot: Bot) -> FrameProcessor:
        return Probe(self)


def probe_bot(pipeline: str = "  - probe: {}", transport: str = "", rate: int = 8000) -> Bot:
    registry = Registry.default()
    registry.add(ProcessorType("probe", ProbeSettings, origin="test"))
    text = (
        f"name: probe\ntransport:\n  audiosocket: {{sample_rate: {rate}{transport}}}\n"
        f"pipeline:\n{pipeline}\n"
    )
    return Bot.from_yaml(text, registry=registry)


class ServerEvents(events.Observer):
    """Keeps the call events the server reports."""

    def __init__(self) -> None:
        self.rejected: list[str] = []
        self.errors: list[str] = []
        self.ended: dict[str, str] = {}
        self.started: list[str] = []

    def call_started(self, call: Call) -> None:
        self.started.append(call.call_id)

    def call_rejected(self, reason: str) -> None:
        self.rejected.append(reason)

    def error(self, call: Call | None, kind: str) -> None:
        self.errors.append(kind)

    def call_ended(self, call: Call, reason: str) -> None:
        self.ended[call.call_id] = reason


@pytest.fixture
def server_events() -> Iterator[ServerEvents]:
    observer = ServerEvents()
    with observing(observer):
        yield observer


async def _closed_by_server(reader: asyncio.StreamReader, within_s: float = 3.0) -> bool:
    """Whether the server closes the connection (reading everything it still sends)."""
    try:
        async with asyncio.timeout(within_s):
            while await reader.read(4096):
                pass
    except TimeoutError:
        return False
    except ConnectionError:
        pass
    return True


@pytest.fixture
async def echo_server() -> AsyncIterator[AudioSocketServer]:
    bot = probe_bot("  - echo: {}", ", read_timeout_s: 0.3, uuid_timeout_s: 0.5")
    async with running_bot(bot) as server:
        yield server


UUID_MSG = encode(Kind.UUID, uuid.uuid4().bytes)
AUDIO_MSG = encode(Kind.AUDIO_8K, bytes(320))

# What follows a valid UUID, and how the call it opened must end.
AFTER_UUID = {
    "garbage": (
        AUDIO_MSG + b"GET / HTTP/1.1\r\n\r\n",
        "cancel: protocol error: unknown message kind 0x47",
    ),
    "zero_length": (AUDIO_MSG + b"\x10\x00\x00", "cancel: protocol error: zero-length"),
    "truncated": (
        AUDIO_MSG + b"\x10\x01\x40" + bytes(100),
        "cancel: protocol error: message of kind",
    ),
    "unknown_kind": (b"\x20\x00\x02ab", "cancel: protocol error: unknown message kind 0x20"),
    "error_0xff": (AUDIO_MSG + b"\xff\x00\x01\x07", "cancel: caller error 07"),
    "hangup_0x00": (AUDIO_MSG + b"\x00\x00\x00", "cancel: caller hung up"),
}
# Streams that never make a valid first message.
BEFORE_UUID = {
    "missing_uuid": AUDIO_MSG,
    "short_uuid": b"\x01\x00\x08" + bytes(8),
    "no_uuid_at_all": b"\x10",
    "truncated_uuid": b"\x01\x00\x10" + bytes(5),
}


async def _misbehave(port: int, wire: bytes) -> bool:
    """Send ``wire`` on a new connection; whether the server then closes it."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(wire)
    closed = await _closed_by_server(reader)
    writer.close()
    return closed


async def test_malformed_streams_end_only_their_own_calls(
    echo_server: AudioSocketServer, server_events: ServerEvents
) -> None:
    good = asyncio.create_task(
        place_call(
            "127.0.0.1", echo_server.port, [Silence(0.4), Say(tone(1.2, 8000)), Silence(0.3)]
        )
    )
    await asyncio.sleep(0.2)
    ids = {name: uuid.uuid4() for name in AFTER_UUID}
    streams = {
        name: encode(Kind.UUID, ids[name].bytes) + rest for name, (rest, _) in AFTER_UUID.items()
    }
    streams.update(BEFORE_UUID)
    closed = await asyncio.gather(*(_misbehave(echo_server.port, w) for w in streams.values()))
    assert dict(zip(streams, closed, strict=True)) == dict.fromkeys(streams, True)
    result = await good
    assert result.hung_up_by == "caller"
    voice_s = sum(end - start for start, end in result.bot_segments)
    assert voice_s > 1.0, f"the good call heard {voice_s:.2f} s of its 1.2 s echo"
    await asyncio.sleep(0.1)
    assert not echo_server.calls
    for name, (_, reason) in AFTER_UUID.items():
        assert server_events.ended[str(ids[name])].startswith(reason), name
    assert server_events.rejected.count("bad first message") == len(BEFORE_UUID)
    assert server_events.errors.count("protocol") == 4 + len(BEFORE_UUID)


async def test_a_health_check_connection_is_not_an_error(
    echo_server: AudioSocketServer, server_events: ServerEvents
) -> None:
    _reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    writer.close()
    await asyncio.sleep(0.2)
    assert server_events.rejected == [] and server_events.errors == []


async def test_dtmf_reaches_the_bot_and_a_bot_hangup_plays_out_first() -> None:
    bot = probe_bot("  - probe: {speak_s: 1.0}")
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1",
            server.port,
            [Silence(0.2), Dtmf("19#"), WaitForHangup(5.0)],
            call_id=str(uuid.uuid4()),
        )
    digits = [f.digit for f, _ in SEEN[result.call_id] if isinstance(f, DTMFFrame)]
    assert digits == ["1", "9", "#"]
    assert result.hung_up_by == "bot"
    assert result.messages[-1][1] == Kind.HANGUP
    audio = [m for m in result.messages if m[1] == Kind.AUDIO_8K and m[2] == 320]
    assert len(audio) >= 50, "the bot hung up before its queued second of audio was played"
    assert UTTERANCES[result.call_id].finished


async def test_caller_hangup_ends_the_pipeline(server_events: ServerEvents) -> None:
    bot = probe_bot("  - probe: {speak_s: 5.0}")
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [Silence(0.5), Hangup()])
        await until(lambda: result.call_id in server_events.ended)
        assert not server.calls
    assert server_events.ended[result.call_id] == "cancel: caller hung up"
    utterance = UTTERANCES[result.call_id]
    assert 0 < utterance.frames_played < utterance.frames_total


async def test_caller_hangup_message_ends_the_call(
    echo_server: AudioSocketServer, server_events: ServerEvents
) -> None:
    call_id = uuid.uuid4()
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    writer.write(encode(Kind.UUID, call_id.bytes) + AUDIO_MSG + encode(Kind.HANGUP))
    assert await _closed_by_server(reader)
    await asyncio.sleep(0.1)
    assert server_events.ended[str(call_id)] == "cancel: caller hung up"


async def test_the_caller_gets_audio_at_its_own_rate_from_a_16k_pipeline() -> None:
    bot = probe_bot("  - echo: {}", rate=16000)
    async with running_bot(bot) as server:
        for rate, kind in ((8000, Kind.AUDIO_8K), (16000, Kind.AUDIO_16K)):
            result = await place_call(
                "127.0.0.1", server.port, [Say(tone(1.0, rate)), Silence(0.4)], rate=rate
            )
            sizes = {size for _, k, size in result.messages if k == kind}
            assert {k for _, k, _ in result.messages} == {kind}
            assert int(rate * 0.02) * 2 in sizes
            assert 0.8 < sum(end - start for start, end in result.bot_segments) < 1.3


async def test_max_calls_closes_excess_connections_at_once(server_events: ServerEvents) -> None:
    bot = probe_bot("  - echo: {}", ", max_calls: 1")
    async with running_bot(bot) as server:
        first = asyncio.create_task(place_call("127.0.0.1", server.port, [Silence(1.0)]))
        await asyncio.sleep(0.3)
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UUID_MSG + AUDIO_MSG)
        assert await _closed_by_server(reader, within_s=0.5)
        writer.close()
        assert server_events.rejected == ["max_calls"]
        assert len(server.calls) == 1
        (active,) = server.calls.values()
        sock = active.connection.writer.get_extra_info("socket")
        assert sock.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert active.rate == 8000
        await first
        again = await place_call("127.0.0.1", server.port, [Say(tone(0.5, 8000)), Silence(0.3)])
        assert again.bot_segments


async def test_allow_from_refuses_other_networks(server_events: ServerEvents) -> None:
    bot = probe_bot("  - echo: {}", ', allow_from: ["10.0.0.0/8"]')
    async with running_bot(bot) as server:
        reader, writer = await asyncio.open_connection("127.0.0.1", server.port)
        writer.write(UUID_MSG)
        assert await _closed_by_server(reader, within_s=0.5)
        writer.close()
    assert server_events.rejected == ["allow_from"]
    assert server_events.started == []


async def test_barge_in_stops_the_bot_within_a_frame_or_two() -> None:
    bot = probe_bot("  - probe: {speak_s: 4.0, chunk_ms: 200}")
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [Silence(1.0), Dtmf("*"), Silence(1.0)])
    pressed = next(e.t for e in result.timeline if e.what == "presses *")
    assert len(result.bot_segments) == 1
    assert result.bot_segments[0][1] < pressed + 0.1, "the bot went on talking"
    assert result.bot_segments[0][1] - result.bot_segments[0][0] > 0.7
    frames = [type(f) for f, d in SEEN[result.call_id] if d is Direction.UPSTREAM]
    assert frames[:2] == [BotStartedSpeakingFrame, BotStoppedSpeakingFrame]
    utterance = UTTERANCES[result.call_id]
    assert 0 < utterance.frames_played < utterance.frames_total
    assert utterance.spoken_text() not in ("", utterance.text)


async def test_a_silent_bot_keeps_the_line_alive() -> None:
    bot = probe_bot(transport=", keepalive_s: 0.2")
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [Silence(1.3)])
    assert result.bot_segments == []
    keepalives = [m for m in result.messages if m[1] == Kind.AUDIO_8K and m[2] == 320]
    assert 4 <= len(keepalives) <= 8
    assert result.received == bytes(len(result.received))


class FakeController:
    """Records the transfer the bot asks Asterisk for."""

    def __init__(self) -> None:
        self.transfers: list[tuple[str, str, int]] = []

    async def transfer(self, context: str, extension: str, priority: int = 1) -> None:
        self.transfers.append((context, extension, priority))

    async def hangup(self) -> None:
        raise AssertionError("not expected")


async def test_transfer_plays_out_calls_the_controller_then_hangs_up(
    server_events: ServerEvents,
) -> None:
    controller = FakeController()

    async def attach(call: Call) -> None:
        call.controller = controller

    bot = probe_bot("  - probe: {speak_s: 0.6}")
    async with running_bot(bot) as server:
        server.on_call_start.append(attach)
        result = await place_call(
            "127.0.0.1", server.port, [Silence(0.1), Dtmf("0"), WaitForHangup(5.0)]
        )
    assert controller.transfers == [("operators", "100", 1)]
    assert result.hung_up_by == "bot"
    assert result.messages[-1][1] == Kind.HANGUP
    assert result.bot_segments[-1][1] - result.bot_segments[0][0] > 0.5
    assert server_events.ended[result.call_id] == "transferred"


async def test_a_call_is_hung_up_at_its_maximum_duration() -> None:
    bot = probe_bot("  - echo: {}", ", max_call_s: 0.5")
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [WaitForHangup(5.0)])
    assert result.hung_up_by == "bot"
    assert 0.4 < result.timeline[-1].t < 2.0


async def test_outbound_audio_is_paced_at_one_message_per_20ms() -> None:
    bot = probe_bot("  - probe: {speak_s: 5.0, chunk_ms: 5000}")
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [Silence(5.6)])
    arrivals = [t for t, kind, size in result.messages if kind == Kind.AUDIO_8K and size == 320]
    voiced = arrivals[: int(5.0 / 0.02)]
    gaps = np.diff(voiced)
    assert 18e-3 <= statistics.median(gaps) <= 22e-3
    assert voiced[-1] - voiced[0] > 4.5, "the prompt was sent faster than real time"
    window_counts = [
        int(np.searchsorted(voiced, t + 0.01) - np.searchsorted(voiced, t)) for t in voiced
    ]
    # A 5 s reply sent at once would be 250 messages in a burst. After a stall (a busy machine)
    # an output catches up at most 100 ms, five slots; otherwise messages leave one per slot.
    assert max(window_counts) <= 6, "a burst of messages left within 10 ms"
    assert np.percentile(window_counts, 95) <= 2, "messages left in bursts"


async def test_resampled_speech_plays_whole_and_is_reported_spoken() -> None:
    bot = probe_bot("  - probe: {speak_s: 1.0, chunk_ms: 20}", rate=16000)
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [Silence(1.5)], rate=8000)
    samples = np.abs(np.frombuffer(result.received, dtype="<i2").astype(np.int32))
    loud = np.flatnonzero(samples > 50)
    assert (loud[-1] - loud[0]) / 8000 > 0.99, "the end of the sentence was lost"
    assert np.diff(loud).max() < 10, "audio went missing inside the sentence"
    utterance = UTTERANCES[result.call_id]
    assert utterance.finished
    assert utterance.spoken_text() == utterance.text


async def test_a_caller_that_stops_reading_is_hung_up(
    monkeypatch: pytest.MonkeyPatch, server_events: ServerEvents
) -> None:
    from voxpipe.transports.audiosocket import transport

    monkeypatch.setattr(transport, "MAX_SEND_BACKLOG", 16 * 1024)
    bot = probe_bot("  - probe: {speak_s: 20.0}", ", output_rate: 48000")
    async with running_bot(bot) as server:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        sock.setblocking(False)
        await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", server.port))
        call_id = uuid.uuid4()
        sock.send(encode(Kind.UUID, call_id.bytes))
        await until(lambda: str(call_id) in server.calls)
        server_side = server.calls[str(call_id)].connection.writer.get_extra_info("socket")
        server_side.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)  # no kernel slack
        await until(lambda: str(call_id) in server_events.ended)
        sock.close()
    assert server_events.ended[str(call_id)] == "cancel: peer stopped reading"


async def test_a_configured_output_rate_overrides_the_callers() -> None:
    bot = probe_bot("  - echo: {}", ", output_rate: 16000")
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1", server.port, [Say(tone(0.6, 8000)), Silence(0.3)], rate=8000
        )
    assert {kind for _, kind, _ in result.messages} == {Kind.AUDIO_16K}
    assert result.bot_segments


async def test_a_greeting_waits_for_the_callers_first_audio_and_speaks_at_its_rate() -> None:
    """A channel bridged late (ARI externalMedia, Dial(AudioSocket)) sends its first audio
    300 ms after the UUID: the greeting queued before then must still go out as 0x12."""
    bot = probe_bot("  - probe: {speak_s: 1.0}", rate=8000)
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1", server.port, [Silence(1.8)], rate=16000, first_audio_after_s=0.3
        )
    audio = [(t, kind, size) for t, kind, size in result.messages if kind != Kind.HANGUP]
    assert {kind for _, kind, _ in audio} == {Kind.AUDIO_16K}
    assert {size for _, _, size in audio[:-1]} == {640}, "not whole 20 ms frames"
    assert audio[0][0] >= 0.29, "the bot spoke before it could know the caller's rate"
    spoken = sum(end - start for start, end in result.bot_segments)
    assert 0.95 < spoken < 1.1
    assert UTTERANCES[result.call_id].finished


async def test_a_caller_silent_past_the_wait_hears_8k_then_its_own_rate() -> None:
    bot = probe_bot("  - probe: {speak_s: 2.0}", ", first_audio_wait_s: 0.2", rate=16000)
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1", server.port, [Silence(2.8)], rate=16000, first_audio_after_s=0.7
        )
    audio = [(t, kind, size) for t, kind, size in result.messages if kind != Kind.HANGUP]
    kinds = [kind for _, kind, _ in audio]
    assert set(kinds) == {Kind.AUDIO_8K, Kind.AUDIO_16K}
    switch = kinds.index(Kind.AUDIO_16K)
    assert set(kinds[switch:]) == {Kind.AUDIO_16K}, "the rate went back and forth"
    assert 0.15 < audio[0][0] < 0.5, "the bot waited past first_audio_wait_s"
    assert 0.65 < audio[switch][0] < 1.0, "queued audio kept the old rate"
    spoken = sum(end - start for start, end in result.bot_segments)
    assert 1.9 < spoken < 2.15, "re-rating lost or repeated audio"
    assert UTTERANCES[result.call_id].finished


async def test_an_echo_leaves_as_the_callers_audio_arrives() -> None:
    """One whole message out for each message in, sent on arrival, not at the next slot."""
    bot = probe_bot("  - echo: {}", rate=8000)
    async with running_bot(bot) as server:
        for rate in (8000, 16000):
            result = await place_call(
                "127.0.0.1", server.port, [Say(tone(1.0, rate)), Silence(0.5)], rate=rate
            )
            frame = int(rate * 0.02) * 2
            sizes = [size for _, kind, size in result.messages if kind != Kind.HANGUP]
            assert set(sizes) == {frame}
            (sent_start, sent_end), (heard_start, heard_end) = (
                result.caller_segments[0],
                result.bot_segments[0],
            )
            assert heard_start - sent_start < 0.015, "the echo waited for a slot"
            assert abs((heard_end - heard_start) - (sent_end - sent_start)) < 0.03


async def test_messages_split_or_batched_in_the_stream_are_all_heard(
    echo_server: AudioSocketServer,
) -> None:
    """Asterisk writes one message per write, but TCP may split or join them."""
    frames = [bytes([i]) * 320 for i in range(1, 7)]
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    writer.write(UUID_MSG + b"".join(encode(Kind.AUDIO_8K, f) for f in frames[:3]))
    split = encode(Kind.AUDIO_8K, frames[3])
    for piece in (split[:2], split[2:100], split[100:]):  # within read_timeout_s
        await asyncio.sleep(0.05)
        writer.write(piece)
    writer.write(b"".join(encode(Kind.AUDIO_8K, f) for f in frames[4:]))
    heard = b""
    async with asyncio.timeout(3):
        while len(heard) < 6 * 323:
            heard += await reader.read(4096)
    writer.close()
    assert heard[: 6 * 323] == b"".join(encode(Kind.AUDIO_8K, f) for f in frames)


async def test_a_message_that_trickles_in_is_cut_at_read_timeout_s(
    echo_server: AudioSocketServer, server_events: ServerEvents
) -> None:
    """read_timeout_s bounds the whole of a started message, not each piece of it."""
    call_id = uuid.uuid4()
    reader, writer = await asyncio.open_connection("127.0.0.1", echo_server.port)
    writer.write(encode(Kind.UUID, call_id.bytes) + b"\x10\x01\x40")
    loop = asyncio.get_running_loop()
    started = loop.time()
    closed = asyncio.create_task(_closed_by_server(reader, within_s=3.0))
    while not closed.done() and loop.time() - started < 2.5:
        writer.write(b"\x00")  # a byte every 0.1 s: each read well within 0.3 s
        await asyncio.sleep(0.1)
    assert await closed
    assert loop.time() - started < 1.0
    writer.close()
    await asyncio.sleep(0.1)
    assert server_events.ended[str(call_id)].startswith(
        "cancel: protocol error: message of kind 0x10"
    )
