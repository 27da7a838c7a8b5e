"""Plugin processor types: found through the `voxpipe.processors` entry points, run from YAML."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from voxpipe.bots.bot import Bot
from voxpipe.bots.config import ConfigError
from voxpipe.bots.registry import Registry
from voxpipe.frames import EndFrame, TextFrame
from voxpipe.testing import RunningChain

ROOT = Path(__file__).resolve().parents[1]

PLUGIN = '''
"""A plugin processor type: shouts every text frame."""

from pydantic import Field, SecretStr

from voxpipe.frames import TextFrame
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.settings import ProcessorSettings


class Shout(FrameProcessor):
    def __init__(self, suffix):
        super().__init__(name="shout")
        self.suffix = suffix

    async def process_frame(self, frame, direction):
        if isinstance(frame, TextFrame):
            frame = TextFrame(frame.text.upper() + self.suffix)
        await self.push_frame(frame, direction)


class ShoutSettings(ProcessorSettings):
    """Shout every text frame."""

    suffix: str = Field("!", description="Added to every shouted text.")
    api_key: SecretStr = Field(SecretStr("plugin-default-secret"), description="A key.")

    def create(self, call, bot):
        return Shout(self.suffix)


class NotSettings:
    """Not a settings model at all."""
'''


@pytest.fixture
def plugin_dir(tmp_path: Path) -> Iterator[Path]:
    """A directory that looks like an installed distribution with three entry points:
    a good plugin, one that fails to import, and one that tries to replace a built-in."""
    (tmp_path / "voxpipe_shout_plugin.py").write_text(PLUGIN)
    dist = tmp_path / "voxpipe_shout_plugin-0.1.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: voxpipe-shout-plugin\nVersion: 0.1.0\n"
    )
    (dist / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [voxpipe.processors]
            shout = voxpipe_shout_plugin:ShoutSettings
            whisper_loudly = voxpipe_shout_plugin_missing:Settings
            echo = voxpipe_shout_plugin:ShoutSettings
            """
        )
    )
    yield tmp_path
    sys.modules.pop("voxpipe_shout_plugin", None)


@pytest.fixture
def registry(plugin_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Registry:
    monkeypatch.syspath_prepend(str(plugin_dir))
    importlib.invalidate_caches()
    return Registry.default()


def test_the_registry_finds_the_plugin_and_reports_bad_ones(registry: Registry) -> None:
    shout = registry.get("shout")
    assert shout is not None
    assert shout.origin == "plugin voxpipe-shout-plugin"
    assert shout.doc == "Shout every text frame."
    echo = registry.get("echo")
    assert echo is not None and echo.origin == "built-in"
    assert registry.get("whisper_loudly") is None
    assert any("'whisper_loudly'" in p and "failed to load" in p for p in registry.problems)
    assert any("'echo'" in p and "already registered by built-in" in p for p in registry.problems)


async def test_a_plugin_runs_from_yaml_through_a_pipeline_task(registry: Registry) -> None:
    bot = Bot.from_yaml(
        "name: shouter\npipeline:\n  - shout: {suffix: '!!'}\n  - echo:\n", registry=registry
    )
    chain = RunningChain(build=lambda up, down: bot.create_pipeline(bot.new_call(), tail=[down]))
    async with chain:
        chain.queue(TextFrame("hello"), EndFrame())
        assert await chain.finished() == "end"
    assert chain.down.texts() == ["HELLO!!"]


def test_a_plugin_type_is_validated_like_a_built_in(registry: Registry) -> None:
    with pytest.raises(ConfigError) as caught:
        Bot.from_yaml("name: s\npipeline:\n  - shout: {sufix: '?'}\n", "s.yaml", registry)
    assert [str(p) for p in caught.value.problems] == [
        "s.yaml:3:13: pipeline[0].shout.sufix: unknown key 'sufix' (did you mean 'suffix'?)"
    ]


def test_list_shows_plugins_with_origin_and_problems_but_never_secrets(plugin_dir: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(plugin_dir)}
    result = subprocess.run(
        [sys.executable, "-m", "voxpipe.bots.cli", "list"],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "shout (plugin voxpipe-shout-plugin): Shout every text frame." in out
    assert 'suffix: str = "!"  # Added to every shouted text.' in out
    assert "api_key: secret str = (secret)  # A key." in out
    assert "echo (built-in)" in out
    assert "problem: plugin 'whisper_loudly'" in out
    assert "plugin-default-secret" not in out + result.stderr
