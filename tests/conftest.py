"""Shared fixtures: the recorded caller audio and the example bots."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AUDIO, RedisServer

REPO = Path(__file__).resolve().parents[1]
CONFIGS = REPO / "configs"


@pytest.fixture
def audio_dir() -> Path:
    """Recorded caller utterances (8 and 16 kHz WAV files with .txt transcripts)."""
    return AUDIO


@pytest.fixture
def echo_yaml() -> Path:
    """The echo bot's file."""
    return CONFIGS / "echo.yaml"


@pytest.fixture
def redis_port() -> Iterator[int]:
    """The port of a real redis-server started for this test (and answering pings)."""
    server = RedisServer()
    server.start()
    yield server.port
    server.stop()
