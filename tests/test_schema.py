"""The JSON Schema and the YAML reference are generated from the models and kept up to date."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any, Literal

import jsonschema
import pytest
import yaml
from pydantic import Field

from voxpipe.bots.docs import END, START, reference
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.bots.schema import bot_schema, schema_text
from voxpipe.pipelines.settings import ProcessorSettings

ROOT = Path(__file__).resolve().parents[1]
SCHEMA_FILE = ROOT / "configs" / "voxpipe.schema.json"
# Bot files; ``*.test.yaml`` are their conversation tests (scenario files, their own schema).
EXAMPLES = sorted(p for p in (ROOT / "configs").glob("*.yaml") if not p.name.endswith(".test.yaml"))
SCENARIO_FILES = sorted((ROOT / "configs").glob("*.test.yaml"))
MODELINE = "# yaml-language-server: $schema=./voxpipe.schema.json"


@pytest.fixture(scope="module")
def builtin() -> Registry:
    return Registry.default(plugins=False)


def validator(schema: dict[str, Any]) -> jsonschema.Draft202012Validator:
    jsonschema.Draft202012Validator.check_schema(schema)
    return jsonschema.Draft202012Validator(schema)


def test_the_committed_schema_is_up_to_date(builtin: Registry) -> None:
    """If this fails: run-pipeline schema --builtin-only -o configs/voxpipe.schema.json"""
    assert SCHEMA_FILE.read_text(encoding="utf-8") == schema_text(builtin)


def test_the_reference_page_holds_the_current_yaml_reference(builtin: Registry) -> None:
    """If this fails: run-pipeline docs --builtin-only (it refreshes docs/reference.md)"""
    page = (ROOT / "docs" / "reference.md").read_text(encoding="utf-8")
    assert START in page and END in page
    current = page.split(START, 1)[1].split(END, 1)[0]
    assert current == "\n" + reference(builtin)


def test_the_reference_documents_every_type_and_setting(builtin: Registry) -> None:
    text = reference(builtin)
    for ptype in builtin:
        assert f"### `{ptype.name}`" in text
        for model in ptype.models:
            for name, field in model.model_fields.items():
                if name != "provider":
                    assert f"| `{field.alias or name}` |" in text


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda p: p.name)
def test_example_bots_name_the_schema_and_satisfy_it(example: Path) -> None:
    text = example.read_text(encoding="utf-8")
    assert text.splitlines()[0] == MODELINE
    schema = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    errors = [e.message for e in validator(schema).iter_errors(yaml.safe_load(text))]
    assert errors == []


def test_environment_references_are_allowed_where_numbers_go(builtin: Registry) -> None:
    schema = validator(bot_schema(builtin))
    bot = yaml.safe_load((ROOT / "tests" / "configs" / "valid.yaml").read_text())
    assert bot["transport"]["audiosocket"]["sample_rate"] == "${VOXPIPE_TEST_RATE:-8000}"
    assert list(schema.iter_errors(bot)) == []
    bot["transport"]["audiosocket"]["sample_rate"] = "fast"
    assert not schema.is_valid(bot)


@pytest.mark.parametrize(
    ("name", "fragment"),
    [
        ("unknown_key.yaml", "'trasport' was unexpected"),
        ("unknown_type.yaml", "is not valid under any of the given schemas"),
        ("wrong_types.yaml", "'many' is not valid under any of the given schemas"),
        ("missing_required.yaml", "'name' is a required property"),
    ],
)
def test_editors_catch_broken_bots(name: str, fragment: str, builtin: Registry) -> None:
    schema = validator(bot_schema(builtin))
    bot = yaml.safe_load((ROOT / "tests" / "configs" / name).read_text())
    messages = [error.message for error in schema.iter_errors(bot)]
    assert any(fragment in message for message in messages), messages


class CalmSettings(ProcessorSettings):
    """A calm voice."""

    provider: Literal["calm"] = Field(description="Which voice.")
    pace: float = Field(1.0, description="Speed.")


class BriskSettings(ProcessorSettings):
    """A brisk voice."""

    provider: Literal["brisk"] = Field(description="Which voice.")
    volume: int = Field(5, description="Loudness.")


Voice = Annotated[CalmSettings | BriskSettings, Field(discriminator="provider"), "A voice."]


def test_registered_types_and_their_providers_are_in_the_schema(builtin: Registry) -> None:
    registry = Registry.default(plugins=False)
    registry.add(ProcessorType("voice", Voice, origin="test"))
    schema = validator(bot_schema(registry))
    ok = {"name": "b", "pipeline": [{"voice": {"provider": "calm", "pace": 1.5}}, {"echo": None}]}
    assert list(schema.iter_errors(ok)) == []
    for step in (
        {"voice": {"provider": "shrill"}},
        {"voice": {"provider": "calm", "volume": 3}},
        {"voice": {"provider": "brisk"}, "echo": {}},
        {"voice": None},
    ):
        assert not schema.is_valid({"name": "b", "pipeline": [step]}), step
    assert not validator(bot_schema(builtin)).is_valid(ok)


@pytest.mark.parametrize("example", SCENARIO_FILES, ids=lambda p: p.name)
def test_scenario_files_name_their_schema_and_satisfy_it(example: Path) -> None:
    from voxpipe.scenarios.model import scenario_schema

    text = example.read_text(encoding="utf-8")
    assert text.splitlines()[0] == "# yaml-language-server: $schema=./voxpipe.test.schema.json"
    check = validator(scenario_schema())
    assert list(check.iter_errors(yaml.safe_load(text))) == []
    bad = [{"name": "x", "steps": [{"sing": "la"}]}]
    assert list(check.iter_errors(bad)), "the schema refuses unknown step keys"
