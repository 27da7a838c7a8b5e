"""The resampler of a call's streams: exact 20 ms pieces, a millisecond or two of delay."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from voxpipe.transports.audiosocket.protocol import RATE_OF_KIND
from voxpipe.transports.audiosocket.resample import FILTERS, Resampler, _design
from voxpipe.transports.audiosocket.settings import PIPELINE_RATES

# Every conversion a call can need: the pipeline's rate to and from every AudioSocket rate.
PAIRS = sorted(
    {(a, b) for a in PIPELINE_RATES for b in RATE_OF_KIND.values() if a != b}
    | {(b, a) for a in PIPELINE_RATES for b in RATE_OF_KIND.values() if a != b}
)
COMMON = [(16000, 8000), (8000, 16000), (48000, 16000), (16000, 48000), (16000, 24000)]


def reference(samples: np.ndarray, in_rate: int, out_rate: int, quality: str) -> np.ndarray:
    """The same filter applied the plain way: zeros inserted, convolved, every M-th kept."""
    up, down, width, taps = _design(in_rate, out_rate, quality)
    h = np.zeros(width * up)
    for p in range(up):
        h[(width - 1 - np.arange(width)) * up + p] = taps[p]
    stuffed = np.zeros(len(samples) * up)
    stuffed[::up] = samples
    out = np.convolve(stuffed, h)[: len(stuffed)][::down]
    return np.clip(np.rint(out), -32768, 32767)


def tone(hz: float, rate: int, seconds: float = 1.0, level: float = 10000) -> bytes:
    t = np.arange(int(rate * seconds)) / rate
    return (np.sin(2 * math.pi * hz * t) * level).astype("<i2").tobytes()


def rms_db(pcm: bytes, level: float, skip: int) -> float:
    x = np.frombuffer(pcm, dtype="<i2")[skip:].astype(np.float64)
    return 20 * math.log10(math.sqrt(np.mean(x**2)) / (level / math.sqrt(2)) + 1e-12)


@pytest.mark.parametrize(("in_rate", "out_rate"), PAIRS)
def test_20ms_in_gives_exactly_20ms_out_at_once(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    size = int(in_rate * 0.02) * 2
    frame = (bytes(range(256)) * (size // 256 + 1))[:size]
    sizes = {len(resampler.process(frame)) for _ in range(60)}
    assert sizes == {int(out_rate * 0.02) * 2}


@pytest.mark.parametrize(("in_rate", "out_rate"), COMMON)
@pytest.mark.parametrize("quality", ["LQ", "HQ"])
def test_it_is_the_filter_it_claims_in_any_chunking(
    in_rate: int, out_rate: int, quality: str
) -> None:
    rng = np.random.default_rng(in_rate + out_rate)
    samples = rng.normal(0, 4000, in_rate // 2).astype("<i2")
    resampler = Resampler(in_rate, out_rate, quality)  # type: ignore[arg-type]
    out, i = [], 0
    while i < samples.size:
        n = int(rng.choice([1, 7, int(in_rate * 0.02), 1000, int(in_rate * 0.3)]))
        out.append(resampler.process(samples[i : i + n].tobytes()))
        i += n
    got = np.frombuffer(b"".join(out), dtype="<i2").astype(np.float64)
    want = reference(samples.astype(np.float64), in_rate, out_rate, quality)
    assert got.size == want.size == samples.size * out_rate // in_rate
    assert np.abs(got - want).max() <= 1  # float32 arithmetic: at most one step of rounding


@pytest.mark.parametrize(("in_rate", "out_rate"), COMMON)
def test_speech_band_passes_and_what_cannot_be_carried_is_stopped(
    in_rate: int, out_rate: int
) -> None:
    lower = min(in_rate, out_rate)
    skip = out_rate // 10
    passed = Resampler(in_rate, out_rate).process(tone(0.3 * lower, in_rate))
    assert abs(rms_db(passed, 10000, skip)) < 0.1
    if in_rate > out_rate:  # above the lower rate's band it must not fold back in
        attenuation, transition = FILTERS["LQ"]
        beyond = Resampler(in_rate, out_rate).process(tone((0.5 + transition) * lower, in_rate))
        assert rms_db(beyond, 10000, skip) < -attenuation + 3


@pytest.mark.parametrize(("in_rate", "out_rate"), [(16000, 8000), (8000, 16000)])
def test_the_delay_is_a_millisecond_or_two(in_rate: int, out_rate: int) -> None:
    resampler = Resampler(in_rate, out_rate)
    click = np.zeros(int(in_rate * 0.02), dtype="<i2")
    click[0] = 20000
    out = np.frombuffer(resampler.process(click.tobytes()), dtype="<i2")
    peak_s = int(np.argmax(np.abs(out.astype(np.int32)))) / out_rate
    assert peak_s == pytest.approx(resampler.delay_s, abs=1 / out_rate)
    assert resampler.delay_s < 0.002


def test_a_full_scale_input_is_clipped_not_wrapped() -> None:
    square = np.where(np.arange(1600) % 40 < 20, 32767, -32768).astype("<i2")
    out = np.frombuffer(Resampler(16000, 8000).process(square.tobytes()), dtype="<i2")
    assert out.max() == 32767 and out.min() == -32768
    assert np.abs(np.diff(out[40:].astype(np.int32))).max() < 40000, "a sample wrapped around"


def test_flush_gives_the_filters_tail_and_reset_forgets_it() -> None:
    resampler = Resampler(8000, 16000)
    body = resampler.process(tone(1000, 8000, 0.1))
    tail = resampler.flush()
    assert len(tail) == 2 * math.ceil(resampler.delay_s * 8000) * 2
    assert np.abs(np.frombuffer(tail, dtype="<i2")).max() > 100, "the sentence's end was held"
    resampler.process(tone(1000, 8000, 0.1))
    resampler.reset()
    after = np.frombuffer(resampler.process(bytes(320)), dtype="<i2")
    assert not after.any(), "audio from before the reset played on"
    assert len(body) == 3200


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(COMMON), st.lists(st.integers(0, 2000), min_size=1, max_size=12))
def test_output_length_follows_the_input_whatever_the_chunks(
    pair: tuple[int, int], sizes: list[int]
) -> None:
    in_rate, out_rate = pair
    resampler = Resampler(in_rate, out_rate)
    total = sum(len(resampler.process(bytes(2 * n))) for n in sizes) // 2
    assert total == -(-sum(sizes) * out_rate // in_rate)  # every output whose input has come


def test_equal_rates_pass_audio_through() -> None:
    pcm = tone(440, 16000, 0.02)
    resampler = Resampler(16000, 16000)
    assert resampler.process(pcm) is pcm
    assert resampler.flush() == b"" and resampler.delay_s == 0
