"""Loading bot files: every problem reported at once, with file:line:col, path and a hint."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

import pytest
from pydantic import Field, SecretStr

from voxpipe.bots.config import ConfigError, dump_settings, load_bot, parse_bot
from voxpipe.bots.registry import ProcessorType, Registry
from voxpipe.pipelines.settings import ProcessorSettings

CONFIGS = Path(__file__).resolve().parent / "configs"


class LoudSettings(ProcessorSettings):
    """Speak loudly."""

    provider: Literal["loud"] = Field(description="Which speaker.")
    voice: str = Field(description="The voice.")


class GoogleSettings(ProcessorSettings):
    """Speak through a cloud."""

    provider: Literal["google"] = Field(description="Which speaker.")
    voice: str = Field(description="The voice.")
    api_key: SecretStr = Field(SecretStr("built-in-key-1234"), description="The key.")


Speak = Annotated[LoudSettings | GoogleSettings, Field(discriminator="provider"), "Say things."]


class AssistantSettings(ProcessorSettings):
    """Calls tools."""

    tools: list[str] = Field(default_factory=list, description="Tools it may call.")


@pytest.fixture(scope="module")
def registry() -> Registry:
    """Built-in types plus ``speak``, a type with two providers."""
    registry = Registry.default(plugins=False)
    registry.add(ProcessorType("speak", Speak, origin="test"))
    registry.add(ProcessorType("assistant", AssistantSettings, origin="test"))
    return registry


def problems(name: str, registry: Registry) -> list[str]:
    """Every problem ``load_bot`` reports for ``tests/configs/<name>``, as printed."""
    with pytest.raises(ConfigError) as caught:
        load_bot(CONFIGS / name, registry)
    return [str(p).removeprefix(str(CONFIGS) + "/") for p in caught.value.problems]


EXPECTED = {
    "unknown_key.yaml": [
        "unknown_key.yaml:2:1: trasport: unknown key 'trasport' (did you mean 'transport'?)",
        "unknown_key.yaml:6:7: pipeline[0].echo.passthru: unknown key 'passthru' "
        "(did you mean 'passthrough'?)",
        "unknown_key.yaml:10:5: session_store.redis.ttl: unknown key 'ttl' (did you mean 'ttl_s'?)",
    ],
    "unknown_type.yaml": [
        "unknown_type.yaml:4:5: pipeline[1].ecko: unknown processor type 'ecko' "
        "(did you mean 'echo'?); `run-pipeline list` shows them all",
        "unknown_type.yaml:5:5: pipeline[2].vocoder: unknown processor type 'vocoder'; "
        "`run-pipeline list` shows them all",
    ],
    "bad_provider.yaml": [
        "bad_provider.yaml:5:17: pipeline[1].speak.provider: unknown provider 'googel' "
        "(did you mean 'google'?); expected one of: loud, google",
        "bad_provider.yaml:8:7: pipeline[2].speak: missing key 'provider'; "
        "expected one of: loud, google",
    ],
    "wrong_types.yaml": [
        "wrong_types.yaml:4:13: transport.audiosocket.listen: "
        "expected host:port, for example '0.0.0.0:9092'",
        "wrong_types.yaml:5:18: transport.audiosocket.sample_rate: "
        "Input should be 8000, 12000, 16000, 24000, 32000, 44100 or 48000 (got 11025)",
        "wrong_types.yaml:6:16: transport.audiosocket.max_calls: "
        "expected a number of calls (at least 1) or 'auto' (got 'many')",
        "wrong_types.yaml:9:20: pipeline[0].echo.passthrough: Input should be a valid boolean",
        "wrong_types.yaml:10:11: pipeline[1].echo: expected a mapping of settings, got 5",
    ],
    "missing_required.yaml": [
        "missing_required.yaml:1:1: name: required key is missing",
        "missing_required.yaml:1:1: pipeline: required key is missing",
        "missing_required.yaml:3:3: ari.username: required key is missing",
    ],
    "syntax_error.yaml": [
        "syntax_error.yaml:4:9: invalid YAML: while parsing a flow mapping "
        "expected ',' or '}', but got ':' (it began at line 3, column 11)",
    ],
    "duplicate_key.yaml": [
        "duplicate_key.yaml:5:7: pipeline[0].echo.passthrough: duplicate key 'passthrough'",
        "duplicate_key.yaml:6:1: name: duplicate key 'name'",
    ],
    "bad_env.yaml": [
        "bad_env.yaml:1:7: name: environment variable VOXPIPE_TEST_UNSET_NAME is not set",
        "bad_env.yaml:5:13: transport.audiosocket.listen: "
        "environment variable VOXPIPE_TEST_UNSET_HOST is not set",
    ],
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_a_broken_file_reports_every_problem_where_it_is(name: str, registry: Registry) -> None:
    assert problems(name, registry) == EXPECTED[name]


def test_every_broken_file_under_tests_configs_is_covered() -> None:
    files = {p.name for p in CONFIGS.glob("*.yaml")}
    assert files == {*EXPECTED, "valid.yaml"}


def test_the_valid_file_loads_with_environment_defaults(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    for var in ("VOXPIPE_TEST_PORT", "VOXPIPE_TEST_RATE", "VOXPIPE_TEST_ARI_PASSWORD"):
        monkeypatch.delenv(var, raising=False)
    loaded = load_bot(CONFIGS / "valid.yaml", registry)
    audiosocket = loaded.config.transport.audiosocket
    assert (audiosocket.listen, audiosocket.sample_rate, audiosocket.max_calls) == (
        "127.0.0.1:9092",
        8000,
        20,
    )
    assert [(s.type_name, s.index) for s in loaded.steps] == [("echo", 0), ("echo", 1)]
    assert loaded.config.ari is not None
    assert loaded.config.ari.password.get_secret_value() == "not-the-real-one"


def test_environment_variables_fill_values(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXPIPE_TEST_PORT", "7000")
    monkeypatch.setenv("VOXPIPE_TEST_RATE", "16000")
    monkeypatch.setenv("VOXPIPE_TEST_ARI_PASSWORD", "s3cr3t-from-env")
    loaded = load_bot(CONFIGS / "valid.yaml", registry)
    assert loaded.config.transport.audiosocket.listen == "127.0.0.1:7000"
    assert loaded.config.transport.audiosocket.sample_rate == 16000
    assert loaded.config.ari is not None
    assert loaded.config.ari.password.get_secret_value() == "s3cr3t-from-env"


@pytest.mark.parametrize(
    ("value", "env", "expected"),
    [
        ("${VOXPIPE_T}", {"VOXPIPE_T": "set"}, "set"),
        ("${VOXPIPE_T:-fallback}", {}, "fallback"),
        ("${VOXPIPE_T:-fallback}", {"VOXPIPE_T": ""}, "fallback"),
        ("${VOXPIPE_T-fallback}", {"VOXPIPE_T": ""}, ""),
        ("${VOXPIPE_T-fallback}", {}, "fallback"),
        ("a-${VOXPIPE_T}-b-${VOXPIPE_U:-u}", {"VOXPIPE_T": "t"}, "a-t-b-u"),
        ("${VOXPIPE_T:-}", {}, ""),
        ("0123", {}, "0123"),
        ("${VOXPIPE_T}", {"VOXPIPE_T": "0123"}, "0123"),
        ("${VOXPIPE_T}", {"VOXPIPE_T": "1234"}, "1234"),
        ("$VOXPIPE_T", {"VOXPIPE_T": "x"}, "$VOXPIPE_T"),
    ],
)
def test_interpolation(
    value: str, env: dict[str, str], expected: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("VOXPIPE_T", raising=False)
    monkeypatch.delenv("VOXPIPE_U", raising=False)
    for key, val in env.items():
        monkeypatch.setenv(key, val)
    loaded = parse_bot(f"name: bot\ndescription: '{value}'\npipeline: [echo: ]\n")
    assert loaded.config.description == expected


def test_a_missing_variable_is_a_problem_at_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VOXPIPE_MISSING", raising=False)
    text = "name: bot\npipeline:\n  - echo:\n      passthrough: ${VOXPIPE_MISSING}\n"
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "bot.yaml")
    assert [str(p) for p in caught.value.problems] == [
        "bot.yaml:4:20: pipeline[0].echo.passthrough: "
        "environment variable VOXPIPE_MISSING is not set"
    ]


def test_a_numeric_variable_fits_number_and_text_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VOXPIPE_RATE", "8000")
    text = (
        "name: ${VOXPIPE_RATE}\ntransport:\n  audiosocket:\n    sample_rate: ${VOXPIPE_RATE}\n"
        "    max_calls: '${VOXPIPE_RATE}'\npipeline: [echo: ]\n"
    )
    config = parse_bot(text).config
    assert config.name == "8000"
    assert config.transport.audiosocket.sample_rate == 8000
    assert config.transport.audiosocket.max_calls == 8000


def test_a_wrong_value_from_a_variable_is_shown(monkeypatch: pytest.MonkeyPatch) -> None:
    """The file says ``${VOXPIPE_RATE}``; only the message can tell what the variable held."""
    monkeypatch.setenv("VOXPIPE_RATE", "16k")
    text = (
        "name: b\ntransport: {audiosocket: {sample_rate: '${VOXPIPE_RATE}'}}\npipeline: [echo: ]\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "b.yaml")
    assert str(caught.value).endswith("48000 (got '16k')")


def test_problems_in_the_whole_file_come_at_once_in_line_order(registry: Registry) -> None:
    text = "name: [x]\nbogus: 1\npipeline:\n  - nope:\n  - echo: {passthrough: 3}\n"
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "b.yaml", registry)
    lines = [(p.line, p.path) for p in caught.value.problems]
    assert lines == [
        (1, "name"),
        (2, "bogus"),
        (4, "pipeline[0].nope"),
        (5, "pipeline[1].echo.passthrough"),
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "1:1: the file is empty"),
        ("- just\n- a list\n", "1:1: a bot file must be a mapping"),
        ("name: x\npipeline:\n  - echo: {}\n    vad: {}\n", "3:5: pipeline[0]: each pipeline step"),
        ("name: x\npipeline: []\n", "2:11: pipeline: List should have at least 1 item"),
        ("name: x\npipeline:\n  - echo:\n[1]: 2\n", "4:1: keys must be strings"),
        (
            "name: x\npipeline:\n\t- echo:\n",
            "3:1: invalid YAML: while scanning for the next token found character '\\t'"
            " that cannot start any token; YAML indents with spaces, not tabs",
        ),
    ],
)
def test_malformed_documents(text: str, message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "b.yaml")
    assert message in str(caught.value)


def test_an_unreadable_file_is_a_problem_not_a_crash(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read the file"):
        load_bot(tmp_path / "missing.yaml")
    binary = tmp_path / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00name")
    with pytest.raises(ConfigError, match="not UTF-8"):
        load_bot(binary)


def test_secrets_never_appear_in_dumps_reprs_or_errors(
    registry: Registry, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("VOXPIPE_TEST_ARI_PASSWORD", "hunter2-topsecret")
    monkeypatch.setenv("VOXPIPE_KEY", "sk-very-secret-key")
    loaded = load_bot(CONFIGS / "valid.yaml", registry)
    assert loaded.config.ari is not None
    text = (
        "name: s\npipeline:\n  - speak: {provider: google, voice: v, api_key: '${VOXPIPE_KEY}'}\n"
    )
    speak = parse_bot(text, registry=registry).steps[0].settings
    outputs = [
        str(dump_settings(loaded.config)),
        repr(loaded.config),
        str(loaded.config),
        str(dump_settings(speak)),
        repr(speak),
    ]
    for output in outputs:
        assert "hunter2-topsecret" not in output
        assert "sk-very-secret-key" not in output
    assert dump_settings(loaded.config)["ari"]["password"] == "**********"
    bad = (
        "name: s\npipeline:\n  - speak: {provider: google, voice: [1], api_key: '${VOXPIPE_KEY}'}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_bot(bad, registry=registry)
    assert "sk-very-secret-key" not in str(caught.value)
    assert re.search(r"speak\.voice: Input should be a valid string", str(caught.value))


def test_tool_references_and_tool_blocks_are_checked_together(registry: Registry) -> None:
    text = (
        "name: t\n"
        "pipeline:\n"
        "  - assistant: {tools: [hangup, lookup_ordr]}\n"
        "tools:\n"
        "  lookup_order:\n"
        "    http: {methd: GET, url: 'http://orders.example/{id}'}\n"
        "  weird: {description: nothing to do}\n"
    )
    with pytest.raises(ConfigError) as caught:
        parse_bot(text, "t.yaml", registry)
    assert [str(p) for p in caught.value.problems] == [
        "t.yaml:3:33: pipeline[0].assistant.tools[1]: unknown tool 'lookup_ordr' "
        "(did you mean 'lookup_order'?); declare it under `tools:`",
        "t.yaml:6:12: tools.lookup_order.http.methd: unknown key 'methd' (did you mean 'method'?)",
    ]
    fixed = text.replace("methd", "method")
    with pytest.raises(ConfigError) as caught:
        parse_bot(fixed, "t.yaml", registry)
    assert [str(p) for p in caught.value.problems][1:] == [
        "t.yaml:7:10: tools.weird: a tool needs `http` or `python` (or is `hangup`/`transfer`)"
    ]


def test_type_docs_come_from_the_models_only() -> None:
    assert ProcessorType("speak", Speak).doc == "Say things."
    assert ProcessorType("assistant", AssistantSettings).doc == "Calls tools."
    assert ProcessorType("bare", LoudSettings | GoogleSettings).doc == ""
