"""A short soak (``bench/soak.py`` is the long one): echo+VAD calls that hang up and call again
for half a minute; the bot's memory and file descriptors stay flat, no call is dropped."""

from __future__ import annotations

from pathlib import Path

from soaking import after_warm_up, drift, row, soak


async def test_a_short_soak_drops_no_call_and_leaks_no_memory_or_descriptors(
    tmp_path: Path,
) -> None:
    result = await soak(tmp_path, seconds=30, calls=20, conversations=0, sample_s=3, hold_s=(2, 6))
    table = "\n".join(row(s) for s in result.samples)
    assert result.calls > 60, table  # every caller called again several times
    assert result.dropped == 0, (result.problems, table)
    assert not result.problems, result.problems
    steady = after_warm_up(result.samples)
    assert len(steady) >= 6, table
    # Loose bounds (a short run on a shared machine; the long run holds 5 %): the calls churn
    # all the time, so a leak of a connection or a call's objects would show as growth.
    assert drift([float(s.fds["echo"]) for s in steady]) < 0.25, table
    assert drift([s.rss_mb["echo"] for s in steady]) < 0.10, table
    assert max(s.late_p99_ms for s in steady) < 500, table
