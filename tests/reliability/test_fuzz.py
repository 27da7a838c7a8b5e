"""Fuzzing a running bot (``run-pipeline serve``) on every surface, a few hundred to a few
thousand cases each, with a healthy echo call alongside: no crash, no traceback in the bot's
log, every bad input ended on its own, the neighbour's audio flowing throughout.
``bench/fuzz.py`` is the long run."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fuzzing import Neighbour, Report, Target, fuzz, running_target

CASES = {"audiosocket": 600, "http": 800, "websocket": 800, "yaml": 2000}


@pytest.fixture(scope="module")
def target(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Target]:
    with running_target(tmp_path_factory.mktemp("fuzz")) as running:
        yield running


def check(report: Report, target: Target | None, neighbour: Neighbour | None, since: float) -> None:
    log = target.output()[-4000:] if target is not None else ""
    assert report.cases == CASES[report.surface], report.line()
    assert report.crashes == 0, "\n".join([report.line(), *report.failures, log])
    assert report.tracebacks == 0, (report.line(), log)
    assert len(report.outcomes) > 1, report.line()  # the cases did reach different ends
    if neighbour is not None:
        # The neighbour call kept its audio: every message echoed, no long silence (loose
        # bounds: the machine is shared, and the fuzzing client runs in this process).
        assert not neighbour.error, neighbour.error
        assert neighbour.share() > 0.9, (neighbour.sent, neighbour.received)
        assert neighbour.longest_gap(after=since) < 2.0, neighbour.longest_gap(after=since)


@pytest.mark.parametrize("surface", ["audiosocket", "http", "websocket"])
def test_fuzzing_a_running_bot_crashes_nothing_and_spares_the_neighbour_call(
    surface: str, target: Target, tmp_path: Path
) -> None:
    with Neighbour(target.port) as neighbour:
        since = time.monotonic()
        report = fuzz(surface, CASES[surface], tmp_path, target, seed_=17)
        print(report.line())
    check(report, target, neighbour, since)


def test_fuzzing_the_yaml_loader_gives_only_config_errors_with_file_and_line(
    tmp_path: Path,
) -> None:
    report = fuzz("yaml", CASES["yaml"], tmp_path, seed_=17)
    print(report.line())
    check(report, None, None, 0.0)
    assert report.outcomes["ConfigError"] > CASES["yaml"] // 2
