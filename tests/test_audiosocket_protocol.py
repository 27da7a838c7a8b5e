"""The AudioSocket codec: every kind built and parsed, and every malformed stream refused."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxpipe.transports.audiosocket.protocol import (
    DTMF_DIGITS,
    KIND_OF_RATE,
    RATE_OF_KIND,
    Kind,
    Message,
    ProtocolError,
    encode,
    read_message,
)

AUDIO_KINDS = sorted(RATE_OF_KIND)


def _reader(data: bytes, eof: bool = True) -> asyncio.StreamReader:
    reader = asyncio.StreamReader()
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def _valid_message() -> st.SearchStrategy[Message]:
    audio = st.tuples(
        st.sampled_from(AUDIO_KINDS),
        st.integers(1, 0xFFFF // 2).flatmap(lambda n: st.binary(min_size=2 * n, max_size=2 * n)),
    )
    return st.one_of(
        st.just(Message(Kind.HANGUP)),
        st.uuids().map(lambda u: Message(Kind.UUID, u.bytes)),
        st.sampled_from(sorted(DTMF_DIGITS)).map(lambda d: Message(Kind.DTMF, d.encode())),
        audio.map(lambda ka: Message(ka[0], ka[1])),
        st.binary(max_size=64).map(lambda b: Message(Kind.ERROR, b)),
    )


def test_0x12_is_16k_and_0x11_is_12k() -> None:
    assert KIND_OF_RATE[16000] == Kind.AUDIO_16K == 0x12
    assert RATE_OF_KIND[Kind.AUDIO_12K] == 12000
    assert {int(k) for k in AUDIO_KINDS} == set(range(0x10, 0x19))


def test_hangup_is_the_bare_header() -> None:
    assert encode(Kind.HANGUP) == b"\x00\x00\x00"


@settings(max_examples=150, deadline=None)
@given(st.lists(_valid_message(), min_size=1, max_size=5))
async def test_every_kind_round_trips(messages: list[Message]) -> None:
    wire = b"".join(encode(m.kind, m.payload) for m in messages)
    reader = _reader(wire)
    decoded = [await read_message(reader, 1.0) for _ in messages]
    assert decoded == messages
    with pytest.raises(EOFError):
        await read_message(reader, 1.0)


@given(st.integers(0, 0xFFFF), st.sampled_from(AUDIO_KINDS))
def test_header_is_kind_then_big_endian_length(size: int, kind: Kind) -> None:
    payload = bytes(size + size % 2)[:0xFFFF] if size else b"\x01\x00"
    wire = encode(kind, payload)
    assert wire[0] == kind
    assert int.from_bytes(wire[1:3], "big") == len(payload)
    assert wire[3:] == payload


async def test_uuid_is_sixteen_raw_bytes() -> None:
    call_id = uuid.uuid4()
    wire = encode(Kind.UUID, call_id.bytes)
    assert len(wire) == 19
    message = await read_message(_reader(wire), 1.0)
    assert message.call_id == str(call_id)


@pytest.mark.parametrize("kind", [Kind.UUID, Kind.DTMF, Kind.AUDIO_8K, Kind.AUDIO_16K])
def test_encode_refuses_what_asterisk_would_hang_up_on(kind: Kind) -> None:
    with pytest.raises(ValueError):
        encode(kind, b"")
    with pytest.raises(ValueError):
        encode(kind, bytes(0x10000))


@pytest.mark.parametrize(
    ("wire", "problem"),
    [
        (b"\x42\x00\x02ab", "unknown message kind 0x42"),
        (b"\x02\x00\x01x", "unknown message kind 0x02"),
        (b"\x10\x00\x00", "zero-length"),
        (b"\x01\x00\x08" + bytes(8), "UUID message of 8 bytes"),
        (b"\x03\x00\x01x", "DTMF message"),
        (b"\x03\x00\x02" + b"12", "DTMF message"),
        (b"\x10\x00\x03abc", "odd length"),
        (b"\x10\x01\x40" + bytes(100), "connection closed inside a message"),
        (b"\x10\x01", "connection closed inside a message"),
    ],
)
async def test_malformed_messages_are_protocol_errors(wire: bytes, problem: str) -> None:
    with pytest.raises(ProtocolError, match=problem):
        await read_message(_reader(wire), 1.0)


async def test_a_message_that_stalls_midway_times_out() -> None:
    reader = _reader(b"\x10\x01\x40" + bytes(100), eof=False)
    with pytest.raises(ProtocolError, match=r"incomplete after 0\.2 s"):
        await read_message(reader, 0.2)


async def test_a_quiet_line_is_not_a_stall() -> None:
    reader = _reader(b"", eof=False)
    waiting = asyncio.create_task(read_message(reader, 0.05))
    await asyncio.sleep(0.2)
    assert not waiting.done()
    reader.feed_data(encode(Kind.DTMF, b"5"))
    assert (await waiting).digit == "5"


async def test_payload_split_across_writes_is_reassembled() -> None:
    payload = bytes(range(256)) * 4
    wire = encode(Kind.AUDIO_16K, payload)
    reader = _reader(b"", eof=False)
    waiting = asyncio.create_task(read_message(reader, 1.0))
    for start in range(0, len(wire), 7):
        reader.feed_data(wire[start : start + 7])
        await asyncio.sleep(0)
    assert await waiting == Message(Kind.AUDIO_16K, payload)
