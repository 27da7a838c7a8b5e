"""The scenario file: a list of scenarios, each a list of caller steps and expectations.

Loaded like a bot file: every problem is reported at once with file, line, column and the path
inside the document (``[2].steps[3].bot_says``); ``load_scenarios`` raises ``ConfigError``.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import Field, ValidationError, field_validator, model_validator

from voxpipe.bots.document import Document
from voxpipe.bots.problems import ConfigError, Problem, report
from voxpipe.pipelines.settings import Settings

DTMF_DIGITS = frozenset("0123456789*#ABCD")
# The keys of which a step gives exactly one: what the caller does, or what it expects.
ACTIONS = (
    "say",
    "wav",
    "silence",
    "dtmf",
    "hang_up",
    "barge_in",
    "bot_says",
    "bot_silent",
    "outcome",
    "bot_stops_within",
)
_OUTCOME = re.compile(r"hangup|caller|transfer,[^,\s]+,[^,\s]+(,\d+)?")


class Step(Settings):
    """One step of a scenario: give exactly one caller action or expectation.

    ``within`` goes with ``bot_says`` (or stands alone: the bot must start answering within
    that long); ``bot_stops_within`` goes with ``barge_in`` or directly after one.
    """

    say: str | None = Field(
        None, description="The caller says this (synthesised with the packaged piper voice)."
    )
    wav: str | None = Field(
        None,
        description="The caller plays this WAV file (16-bit PCM; a relative path is read from "
        "the scenario file's folder).",
    )
    silence: float | None = Field(
        None, ge=0, le=600, description="The caller stays quiet this many seconds."
    )
    dtmf: str | None = Field(
        None, description="The caller presses these keys (0-9 * # A-D), 100 ms apart."
    )
    hang_up: bool | None = Field(
        None, description="The caller hangs up (write `- hang_up` or `hang_up: true`)."
    )
    barge_in: str | None = Field(
        None,
        description="The caller says this while the bot is speaking: the step waits for the "
        "bot to start speaking, then talks over it.",
    )
    bot_says: str | None = Field(
        None,
        description="A regular expression (case-insensitive) the bot's next speech must match: "
        "what the caller heard, transcribed offline, and, when the bot is served in-process, "
        "the bot's own words.",
    )
    within: float | None = Field(
        None,
        gt=0,
        le=600,
        description="Turn latency bound in seconds: from the end of the caller's last speech "
        "(or keys, or the call's start) to the bot's first audio.",
    )
    bot_silent: float | None = Field(
        None, gt=0, le=600, description="The bot says nothing for this many seconds."
    )
    outcome: str | None = Field(
        None,
        description="How the call must end: `hangup` (the bot hung up), `caller` (the caller "
        "did) or `transfer,<context>,<extension>` (optionally `,<priority>`). Waits for the "
        "end of the call (up to `timeout_s`).",
    )
    bot_stops_within: int | None = Field(
        None,
        gt=0,
        le=60000,
        description="After a `barge_in`: the bot's audio stops within this many ms of the "
        "caller starting to speak over it.",
    )
    timeout_s: float | None = Field(
        None,
        gt=0,
        le=600,
        description="How long a waiting step (`bot_says`, `barge_in`, `outcome`) waits at most "
        "(default: the scenario's `timeout_s`).",
    )

    @field_validator("dtmf")
    @classmethod
    def _digits(cls, value: str | None) -> str | None:
        if value is not None:
            bad = sorted(set(value.upper()) - DTMF_DIGITS)
            if not value or bad:
                raise ValueError(f"DTMF keys are 0-9 * # A-D, got {value!r}")
            return value.upper()
        return value

    @field_validator("bot_says")
    @classmethod
    def _regex(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                re.compile(value)
            except re.error as exc:
                raise ValueError(f"invalid regular expression: {exc}") from None
        return value

    @field_validator("outcome")
    @classmethod
    def _outcome(cls, value: str | None) -> str | None:
        if value is not None and not _OUTCOME.fullmatch(value.strip()):
            raise ValueError(
                f"expected hangup, caller or transfer,<context>,<extension>; got {value!r}"
            )
        return None if value is None else value.strip()

    @model_validator(mode="after")
    def _one_action(self) -> Step:
        given = [key for key in ACTIONS if getattr(self, key) is not None]
        if self.bot_stops_within is not None and self.barge_in is not None:
            given.remove("bot_stops_within")
        if not given and self.within is not None:
            return self
        if len(given) != 1:
            what = ", ".join(given) if given else "none"
            raise ValueError(f"a step gives exactly one of {', '.join(ACTIONS)} (got {what})")
        if self.within is not None and given[0] != "bot_says":
            raise ValueError("`within` goes with `bot_says` (or stands alone)")
        if self.hang_up is False:
            raise ValueError("`hang_up: false` does nothing; leave the step out")
        return self

    @property
    def action(self) -> str:
        """The step's action or expectation key (``within`` for a lone latency bound)."""
        return next((key for key in ACTIONS if getattr(self, key) is not None), "within")


class Scenario(Settings):
    """One simulated call: a name and its steps, played in order."""

    name: str = Field(description="The scenario's name (in the report and the JUnit test case).")
    steps: list[Step] = Field(min_length=1, description="Caller actions and expectations.")
    rate: Literal[8000, 16000] = Field(
        8000, description="The caller's audio rate in Hz (AudioSocket's 8 or 16 kHz)."
    )
    timeout_s: float = Field(
        20.0, gt=0, le=600, description="How long a waiting step waits by default, in seconds."
    )
    max_duration_s: float = Field(
        120.0, gt=0, le=3600, description="The whole call is given up after this many seconds."
    )

    @field_validator("steps", mode="before")
    @classmethod
    def _bare_words(cls, value: Any) -> Any:
        """``- hang_up`` is short for ``- hang_up: true``."""
        if isinstance(value, list):
            return [{"hang_up": True} if item == "hang_up" else item for item in value]
        return value


class ScenarioFile(Settings):
    """A scenario file: the scenarios to play against one bot."""

    scenarios: list[Scenario] = Field(min_length=1, description="The scenarios, in order.")


def parse_scenarios(text: str, file: str = "<string>") -> list[Scenario]:
    """Parse and validate a scenario document (a list of scenarios, or ``scenarios:`` holding
    one); raise ``ConfigError`` with every problem found, each at its file:line:col."""
    doc = Document(file)
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError([Problem(file, line, col, "", f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        raise ConfigError([Problem(file, 1, 1, "", "the file is empty; it needs scenarios")])
    data = doc.build(node)
    prefix: tuple[str | int, ...] = ()
    if isinstance(data, dict) and set(data) == {"scenarios"}:
        data, prefix = data["scenarios"], ("scenarios",)
    if not isinstance(data, list):
        doc.problem((), "a scenario file is a list of scenarios, each with `name` and `steps`")
        raise ConfigError(doc.problems)
    scenarios: list[Scenario] = []
    for index, entry in enumerate(data):
        try:
            scenario = Scenario.model_validate(entry)
        except ValidationError as exc:
            report(doc, (*prefix, index), entry, exc, Scenario)
            continue
        scenarios.append(scenario)
        for i, step in enumerate(scenario.steps):
            if step.action == "bot_stops_within" and (
                i == 0 or scenario.steps[i - 1].barge_in is None
            ):
                where = (*prefix, index, "steps", i, "bot_stops_within")
                doc.problem(where, "`bot_stops_within` must follow a `barge_in` step", at_key=True)
    names = [s.name for s in scenarios]
    for index, name in enumerate(names):
        if name in names[:index]:
            doc.problem((*prefix, index, "name"), f"another scenario is named {name!r}")
    if doc.problems:
        doc.problems.sort(key=lambda p: (p.line, p.column))
        raise ConfigError(doc.problems)
    return scenarios


def load_scenarios(path: str | os.PathLike[str]) -> list[Scenario]:
    """Read and validate a scenario file (see ``parse_scenarios``)."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError([Problem(str(path), 1, 1, "", f"cannot read: {exc.strerror}")]) from None
    return parse_scenarios(text, str(path))


def scenario_schema() -> dict[str, Any]:
    """The JSON Schema of scenario files (a list of scenarios, or ``scenarios:`` with one)."""
    from pydantic import TypeAdapter

    schema = TypeAdapter(ScenarioFile).json_schema()
    defs = schema.pop("$defs", {})
    step = defs["Step"]
    steps = {
        "type": "array",
        "minItems": 1,
        "description": defs["Scenario"]["properties"]["steps"].get("description", ""),
        "items": {"anyOf": [{"const": "hang_up"}, {"$ref": "#/$defs/Step"}]},
    }
    defs["Scenario"]["properties"]["steps"] = steps
    defs["Step"] = step
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "voxpipe conversation tests",
        "description": "Scenarios for `run-pipeline test`: simulated calls and what the bot "
        "must do in them.",
        "anyOf": [
            {"type": "array", "minItems": 1, "items": {"$ref": "#/$defs/Scenario"}},
            {"$ref": "#/$defs/ScenarioFile"},
        ],
        "$defs": {**defs, "ScenarioFile": schema},
    }


def scenario_schema_text() -> str:
    """The scenario schema as the text written to ``configs/voxpipe.test.schema.json``."""
    return json.dumps(scenario_schema(), indent=2) + "\n"
