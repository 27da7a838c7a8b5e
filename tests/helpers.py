"""What many tests share: the recorded caller audio, bots' calls, event observers, servers.

Frame recorders, ``until`` and the fakes are in ``voxpipe.testing`` (``Recorder`` is imported
here too).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import redis

from voxpipe import events
from voxpipe.bots.bot import Bot
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.pipelines.task import PipelineTask
from voxpipe.testing import Recorder, RunningChain

AUDIO = Path(__file__).resolve().parent / "audio"

# An HTTP tool the LLM tests offer the model; format with the order server's ``url``.
LOOKUP_TOOL = """
      tools: [lookup_order, hangup]
tools:
  lookup_order:
    description: Look up an order by its number.
    parameters: {{order_id: {{type: string}}}}
    http: {{url: "{url}/orders/{{order_id}}", timeout_s: 2}}
"""

ObserverT = TypeVar("ObserverT", bound=events.Observer)


@contextlib.contextmanager
def observing(observer: ObserverT) -> Iterator[ObserverT]:
    """Subscribe ``observer`` to the process-wide call events for the ``with`` block."""
    events.subscribe(observer)
    try:
        yield observer
    finally:
        events.unsubscribe(observer)


class RunningCalls:
    """Runs calls of bots with a ``Recorder`` at the tail; cancels them all on exit."""

    def __init__(self) -> None:
        self.runners: list[tuple[PipelineTask, asyncio.Task[str]]] = []
        self.chains: list[RunningChain] = []

    async def chain(self, bot: Bot, timeout_s: float = 10.0) -> RunningChain:
        """Start one call of ``bot`` between the recorders of a ``RunningChain`` (``up`` at the
        head, ``down`` at the tail); return once the start frame reached the tail."""
        await bot.prepare()

        def build(up: Recorder, down: Recorder) -> PipelineTask:
            return bot.create_pipeline(bot.new_call(), head=[up], tail=[down])

        chain = RunningChain(build=build, timeout_s=timeout_s)
        self.chains.append(chain)
        await chain.start()
        assert not chain.done, f"the call of {bot.name} ended at once: {chain.end_reason}"
        return chain

    async def start(
        self, bot: Bot, out: Recorder, head: FrameProcessor | None = None
    ) -> PipelineTask:
        """Start one call of ``bot`` with ``out`` at the tail; return once a frame reached it."""
        await bot.prepare()
        task = bot.create_pipeline(bot.new_call(), head=[head] if head else None, tail=[out])
        self.runners.append((task, asyncio.create_task(task.run())))
        await out.wait_for(lambda: bool(out.frames))
        return task

    async def __aenter__(self) -> RunningCalls:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        for task, runner in self.runners:
            task.cancel("test over")
            await runner
        for chain in self.chains:
            await chain.__aexit__(kind, error, traceback)


class TTFB(events.Observer):
    """Notes each provider's time to first byte: (kind, provider, seconds)."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, float]] = []

    def provider_ttfb(self, call: Any, kind: str, provider: str, seconds: float) -> None:
        self.seen.append((kind, provider, seconds))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class RedisServer:
    """A real redis-server on a loopback port, which a test can stop and start again."""

    def __init__(self) -> None:
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None
        binary = shutil.which("redis-server") or "/usr/bin/redis-server"
        self.command = [binary, "--port", str(self.port), "--bind", "127.0.0.1"]
        self.command += ["--save", "", "--appendonly", "no"]

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            self.command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.client().ping():
                    return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(5)
            self.process = None

    def client(self) -> redis.Redis:
        return redis.Redis(port=self.port, socket_timeout=2)


class PostgresServer:
    """A real PostgreSQL server of its own (initdb in a temporary directory, a free loopback
    port), which a test can stop and start again. Run as root, the server runs as the
    ``postgres`` user (PostgreSQL refuses to run as root), started straight under that user
    so that signals reach it."""

    def __init__(self) -> None:
        import glob
        import os
        import tempfile

        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=_version_key)
        if not found:
            raise RuntimeError("PostgreSQL is not installed (Debian package postgresql)")
        self.bin = Path(found[-1]).parent
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="voxpipe-pg-"))
        self.data = self.root / "data"
        self.as_user: dict[str, Any] = {}
        if os.geteuid() == 0:
            self.as_user = {"user": "postgres", "group": "postgres", "extra_groups": []}
            shutil.chown(self.root, "postgres", "postgres")
        self.process: subprocess.Popen[bytes] | None = None
        self._run(
            [str(self.bin / "initdb"), "-D", str(self.data), "-U", "postgres", "-A", "trust"],
            "initdb",
        )

    def _run(self, command: list[str], what: str) -> None:
        done = subprocess.run(
            command, capture_output=True, timeout=120, check=False, cwd=self.root, **self.as_user
        )
        if done.returncode != 0:
            raise RuntimeError(f"{what} failed: {done.stderr.decode(errors='replace')}")

    def url(self, database: str = "postgres") -> str:
        """The SQLAlchemy URL of ``database`` on this server (asyncpg driver)."""
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{database}"

    def start(self) -> None:
        command = [str(self.bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += [
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            f"unix_socket_directories={self.root}",
        ]
        command += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        command += ["-c", "full_page_writes=off", "-c", "max_connections=60"]
        self.process = subprocess.Popen(
            command,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=self.root,
            **self.as_user,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            ready = subprocess.run(
                [str(self.bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(self.port)],
                check=False,
            )
            if ready.returncode == 0:
                return
            if self.process.poll() is not None:
                break
            time.sleep(0.05)
        raise RuntimeError(f"PostgreSQL did not start on port {self.port}")

    def stop(self) -> None:
        """Stop at once (fast shutdown: open connections are cut, as in an outage)."""
        if self.process is not None:
            self.process.send_signal(2)  # SIGINT: PostgreSQL's fast shutdown
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5)
            self.process = None

    def create_database(self, name: str) -> str:
        """A fresh empty database; its SQLAlchemy URL."""
        self.psql(f'DROP DATABASE IF EXISTS "{name}"')
        self.psql(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        """Run ``sql`` with psql; its output (unaligned, tuples only)."""
        command = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port)]
        command += ["-U", "postgres", "-d", database, "-XAtq", "-v", "ON_ERROR_STOP=1", "-c", sql]
        done = subprocess.run(
            command,
            capture_output=True,
            timeout=30,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"psql failed: {done.stderr.decode(errors='replace')}")
        return done.stdout.decode()

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


def _version_key(path: str) -> tuple[int, ...]:
    version = Path(path).parents[1].name
    return tuple(int(part) for part in version.split(".") if part.isdigit())
