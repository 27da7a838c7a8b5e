"""Shared fixtures: the recorded caller audio and the example bots."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest
from helpers import AUDIO, PostgresServer, RedisServer

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


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One real PostgreSQL server for the whole test session (initdb takes seconds)."""
    server = PostgresServer()
    server.start()
    yield server
    server.remove()


_databases = itertools.count(1)


@pytest.fixture
def postgres_url(postgres: PostgresServer) -> Iterator[str]:
    """The URL of a fresh, empty database of the session's PostgreSQL, for this test."""
    if postgres.process is None:  # a test stopped it and failed before starting it again
        postgres.start()
    name = f"test_{next(_databases)}"
    yield postgres.create_database(name)
    if postgres.process is None:
        postgres.start()
    postgres.psql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
