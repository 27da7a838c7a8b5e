"""Scale-out and shutdown with real processes: HAProxy in front of two bots, shared Redis state,
``serve --workers`` on one port, and SIGTERM draining a call before a clean exit."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest
import redis
from helpers import AUDIO

from voxpipe.transports.audiosocket.caller import (
    CallResult,
    Hangup,
    Say,
    Silence,
    WaitForBot,
    load_wav,
    place_call,
)

REPO = Path(__file__).resolve().parents[1]
SPEECH = load_wav(AUDIO / "caller_goodbye_8k.wav", 8000)

BOT = """
name: echo
transport:
  audiosocket: {{listen: "127.0.0.1:{port}", sample_rate: 8000, drain_s: {drain_s}}}
pipeline:
  - echo: {{passthrough: false}}
http: {{listen: "127.0.0.1:{http_port}"}}
session_store: {{redis: {{url: "redis://127.0.0.1:{redis_port}/0", ttl_s: 60}}}}
logging: {{format: json}}
"""

HAPROXY = """
defaults
  mode tcp
  timeout connect 1s
  timeout client 60s
  timeout server 60s
  retries 2
  option redispatch 1
frontend audiosocket
  bind 127.0.0.1:{port}
  default_backend bots
backend bots
  balance roundrobin
  option httpchk GET /health
  http-check expect status 200
  server bot1 127.0.0.1:{first} check port {first_http} inter 200ms fall 1 rise 2
  server bot2 127.0.0.1:{second} check port {second_http} inter 200ms fall 1 rise 2
"""


_given: set[int] = set()


def free_port(span: int = 1) -> int:
    """A free loopback port ``p`` (with ``p+1 .. p+span-1`` free too) never handed out before
    in this run, so that the processes of one test cannot be given the same port."""
    for _ in range(100):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = int(sock.getsockname()[1])
            wanted = set(range(port, port + span))
            if wanted & _given or not all(_bindable(p) for p in wanted - {port}):
                continue
        _given.update(wanted)
        return port
    raise RuntimeError("no free loopback port")


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def haproxy_binary() -> str:
    """HAProxy from the Debian package, installed on first use (the test run is root in CI)."""
    found = shutil.which("haproxy") or shutil.which("haproxy", path="/usr/sbin")
    if found is None:
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=True, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "haproxy"], check=True, env=env)
        found = shutil.which("haproxy", path="/usr/sbin:/usr/bin")
    assert found is not None, "haproxy is required: apt-get install haproxy"
    return found


class Process:
    """A child process whose output goes to a file the test prints when something fails."""

    def __init__(self, command: list[str], log: Path) -> None:
        self.log = log
        self.out = log.open("wb")
        self.popen = subprocess.Popen(command, stdout=self.out, stderr=subprocess.STDOUT)

    def output(self) -> str:
        self.out.flush()
        return self.log.read_text(errors="replace")

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.kill()
            self.popen.wait(10)
        self.out.close()


@pytest.fixture
def processes() -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in started:
        process.stop()


@pytest.fixture
def redis_port(processes: list[Process], tmp_path: Path) -> int:
    port = free_port()
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    command = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly"]
    processes.append(Process([*command, "no"], tmp_path / "redis.log"))
    return port


def serve(
    processes: list[Process],
    tmp_path: Path,
    name: str,
    redis_port: int,
    *extra: str,
    drain_s: float = 20.0,
) -> tuple[Process, int, int]:
    """Start ``run-pipeline serve`` on the echo bot; returns it, its AudioSocket and HTTP ports."""
    port, http_port = free_port(), free_port(span=2)
    bot = tmp_path / f"{name}.yaml"
    bot.write_text(
        BOT.format(port=port, http_port=http_port, redis_port=redis_port, drain_s=drain_s)
    )
    command = [sys.executable, "-m", "voxpipe.bots.cli", "serve", str(bot), *extra]
    process = Process(command, tmp_path / f"{name}.log")
    processes.append(process)
    return process, port, http_port


async def wait_healthy(process: Process, http_port: int) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(600):
            assert process.popen.poll() is None, process.output()
            try:
                response = await http.get(f"http://127.0.0.1:{http_port}/health")
                if response.status_code == 200:
                    return
            except httpx.TransportError:
                pass
            await asyncio.sleep(0.05)
    raise AssertionError(f"no healthy /health on port {http_port}:\n{process.output()}")


async def calls_taken(http_port: int) -> float:
    """``voxpipe_calls_total`` of the bot served with its HTTP API on ``http_port``."""
    async with httpx.AsyncClient() as http:
        text = (await http.get(f"http://127.0.0.1:{http_port}/metrics")).text
    found = re.search(r'^voxpipe_calls_total\{bot="echo"\} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


async def worker_pid(http_port: int) -> int:
    """The process id of the worker whose HTTP API is on ``http_port``."""
    async with httpx.AsyncClient() as http:
        body = (await http.get(f"http://127.0.0.1:{http_port}/health")).json()
    return int(body["worker"].rpartition(":")[2])


async def short_call(port: int) -> CallResult:
    return await place_call(
        "127.0.0.1", port, [Say(SPEECH[:4800]), WaitForBot(3.0, quiet_s=0.2), Hangup()]
    )


@pytest.fixture
async def balanced(
    processes: list[Process], tmp_path: Path, redis_port: int
) -> AsyncIterator[tuple[int, list[tuple[Process, int, int]]]]:
    """HAProxy on a loopback port in front of two bot processes sharing one Redis."""
    bots = [serve(processes, tmp_path, f"bot{i}", redis_port) for i in (1, 2)]
    front = free_port()
    config = tmp_path / "haproxy.cfg"
    config.write_text(
        HAPROXY.format(
            port=front,
            first=bots[0][1],
            second=bots[1][1],
            first_http=bots[0][2],
            second_http=bots[1][2],
        )
    )
    proxy = Process([haproxy_binary(), "-f", str(config), "-db"], tmp_path / "haproxy.log")
    processes.append(proxy)
    for process, _, http_port in bots:
        await wait_healthy(process, http_port)
    await asyncio.sleep(1.0)  # two health checks: HAProxy sees both bots up
    assert proxy.popen.poll() is None, proxy.output()
    yield front, bots


async def test_calls_through_haproxy_spread_over_both_bots_and_survive_one_dying(
    balanced: tuple[int, list[tuple[Process, int, int]]],
) -> None:
    front, bots = balanced
    (first, _, first_http), (second, _, second_http) = bots
    results = [await short_call(front) for _ in range(4)]
    assert all(result.bot_audio_s() > 0.2 for result in results)
    assert await calls_taken(first_http) == 2
    assert await calls_taken(second_http) == 2

    second.popen.send_signal(signal.SIGKILL)
    second.popen.wait(10)
    results = [await short_call(front) for _ in range(3)]
    assert all(result.bot_audio_s() > 0.2 for result in results), first.output()
    assert await calls_taken(first_http) == 5


async def test_calls_on_any_bot_process_lists_every_call(
    balanced: tuple[int, list[tuple[Process, int, int]]],
) -> None:
    front, bots = balanced
    (_, _, first_http), (_, _, second_http) = bots
    script = [Say(SPEECH[:8000]), Silence(4.0), Hangup()]
    calls = [asyncio.create_task(place_call("127.0.0.1", front, script)) for _ in range(2)]
    seen: dict[str, set[str]] = {}
    async with httpx.AsyncClient() as http:
        for _ in range(60):
            for http_port in (first_http, second_http):
                body = (await http.get(f"http://127.0.0.1:{http_port}/calls")).json()
                seen[str(http_port)] = {entry["worker"] for entry in body["calls"]}
            if all(len(workers) == 2 for workers in seen.values()):
                break
            await asyncio.sleep(0.1)
    await asyncio.gather(*calls)
    assert seen[str(first_http)] == seen[str(second_http)]
    assert len(seen[str(first_http)]) == 2


async def test_workers_share_one_audiosocket_port_and_a_dead_one_is_restarted(
    processes: list[Process], tmp_path: Path, redis_port: int
) -> None:
    supervisor, port, http_port = serve(
        processes, tmp_path, "workers", redis_port, "--workers", "2"
    )
    await wait_healthy(supervisor, http_port)
    await wait_healthy(supervisor, http_port + 1)
    results = await asyncio.gather(*(short_call(port) for _ in range(12)))
    assert all(result.bot_audio_s() > 0.2 for result in results)
    taken = [await calls_taken(http_port), await calls_taken(http_port + 1)]
    assert sum(taken) == 12
    assert min(taken) >= 1, taken

    second_pid = await worker_pid(http_port + 1)
    os.kill(second_pid, signal.SIGKILL)
    for _ in range(200):
        with contextlib.suppress(httpx.TransportError):
            if await worker_pid(http_port + 1) != second_pid:
                break
        await asyncio.sleep(0.05)
    assert await worker_pid(http_port + 1) != second_pid, supervisor.output()

    supervisor.popen.send_signal(signal.SIGTERM)
    assert supervisor.popen.wait(30) == 0, supervisor.output()


async def test_calls_of_a_killed_worker_leave_calls_and_redis_at_once(
    processes: list[Process], tmp_path: Path, redis_port: int
) -> None:
    supervisor, port, http_port = serve(processes, tmp_path, "killed", redis_port, "--workers", "2")
    await wait_healthy(supervisor, http_port)
    await wait_healthy(supervisor, http_port + 1)
    victim = await worker_pid(http_port + 1)
    victim_name = f"{socket.gethostname()}:{victim}"
    # The kernel picks the worker of each call: place calls until both workers carry some.
    script = [Say(SPEECH[:4800]), Silence(8.0), Hangup()]
    calls: list[asyncio.Task[CallResult]] = []
    carried: dict[str, str] = {}
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{http_port}") as http:
        for _ in range(20):
            calls.append(asyncio.create_task(place_call("127.0.0.1", port, script)))
            for _ in range(40):
                await asyncio.sleep(0.05)
                listed = (await http.get("/calls")).json()["calls"]
                carried = {entry["uuid"]: entry["worker"] for entry in listed}
                if len(carried) == len(calls):
                    break
            if len(set(carried.values())) == 2:
                break
        doomed = {uuid for uuid, worker in carried.items() if worker == victim_name}
        assert doomed and len(doomed) < len(carried), (carried, supervisor.output())

        os.kill(victim, signal.SIGKILL)
        # Each record would stay listed for its TTL (60 s) if nobody ended it.
        for _ in range(100):
            listed = (await http.get("/calls")).json()["calls"]
            if not doomed & {entry["uuid"] for entry in listed}:
                break
            await asyncio.sleep(0.05)
        survivors = {entry["uuid"] for entry in listed}
        outcomes = [(await http.get(f"/calls/{uuid}/outcome")).text for uuid in doomed]
    results = await asyncio.gather(*calls)

    assert survivors == set(carried) - doomed, supervisor.output()
    assert outcomes == ["error"] * len(doomed)
    records = redis.Redis(port=redis_port)
    for uuid in doomed:
        record = json.loads(records.get(f"call_session:{uuid}") or "null")
        assert record["state"] == "ended", record
        assert "history" in record  # kept for whoever investigates, as a failed call's
    by_id = {result.call_id: result for result in results}
    assert {by_id[uuid].hung_up_by for uuid in doomed} == {"bot"}
    assert {by_id[uuid].hung_up_by for uuid in survivors} == {"caller"}
    assert f"worker {victim_name} died with {len(doomed)} call(s)" in supervisor.output()

    supervisor.popen.send_signal(signal.SIGTERM)
    assert await asyncio.to_thread(supervisor.popen.wait, 30) == 0, supervisor.output()


async def test_sigterm_drains_the_call_in_progress_then_exits_cleanly(
    processes: list[Process], tmp_path: Path, redis_port: int
) -> None:
    bot, port, http_port = serve(processes, tmp_path, "drain", redis_port)
    await wait_healthy(bot, http_port)
    script = [Say(SPEECH[:8000]), Silence(3.0), Say(SPEECH[:8000]), Silence(0.5), Hangup()]
    call = asyncio.create_task(place_call("127.0.0.1", port, script))
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            if (await http.get(f"http://127.0.0.1:{http_port}/health")).json()["active_calls"]:
                break
            await asyncio.sleep(0.05)
        bot.popen.send_signal(signal.SIGTERM)
        await asyncio.sleep(0.5)
        health = await http.get(f"http://127.0.0.1:{http_port}/health")
    with pytest.raises(OSError):
        await place_call("127.0.0.1", port, [Say(SPEECH[:1600]), Hangup()])
    result = await call
    assert health.status_code == 503
    assert health.json()["status"] == "draining"
    assert result.hung_up_by == "caller"
    assert result.bot_audio_s() > 4.0
    code = await asyncio.to_thread(bot.popen.wait, 30)
    assert code == 0, bot.output()


async def test_workers_that_cannot_start_stop_the_supervisor_with_an_error(
    processes: list[Process], tmp_path: Path, redis_port: int
) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    bot_file = tmp_path / "busy.yaml"
    http_port = busy.getsockname()[1]
    bot_file.write_text(
        BOT.format(port=free_port(), http_port=http_port, redis_port=redis_port, drain_s=1)
    )
    command = [sys.executable, "-m", "voxpipe.bots.cli", "serve", str(bot_file)]
    supervisor = Process([*command, "--workers", "2"], tmp_path / "busy.log")
    processes.append(supervisor)
    try:
        code = await asyncio.to_thread(supervisor.popen.wait, 60)
    finally:
        busy.close()
    assert code == 1, supervisor.output()
    assert "failed at start" in supervisor.output()
