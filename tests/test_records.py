"""Call records against a real PostgreSQL and SQLite: migrations, partitions, whole calls
recorded over AudioSocket, a database outage mid-call, the signed post-call hook, settings."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import wave
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from helpers import AUDIO, PostgresServer, observing
from sqlalchemy import inspect, text

from voxpipe.bots.bot import Bot
from voxpipe.bots.call import running_bot
from voxpipe.bots.config import ConfigError, parse_bot
from voxpipe.http import OperationsApi
from voxpipe.http.metrics import Metrics
from voxpipe.records import migrate
from voxpipe.records.partitions import partitions
from voxpipe.records.service import CallRecords, make_engine, records_of
from voxpipe.records.writer import RecordWriter
from voxpipe.testing import until
from voxpipe.transports.audiosocket.caller import (
    Hangup,
    Say,
    Silence,
    WaitForBot,
    WaitForHangup,
    load_wav,
    place_call,
)

ROOT = Path(__file__).resolve().parents[1]
TABLES = {"calls", "call_turns", "call_tool_calls", "customers"}
INDEXES = {"idx_calls_caller_id", "idx_calls_started_at", "idx_call_turns_call_id"}

# A bot that needs no speech models: it greets, and prompts a silent caller (tone voice).
PROMPTING_BOT = """
name: {name}
greeting: "{greeting}"
transport:
  audiosocket: {{listen: "127.0.0.1:0", sample_rate: 8000, keepalive_s: 0.2, drain_s: 1}}
pipeline:
  - vad: {{engine: webrtc}}
  - llm: {{provider: scripted, intents: [{{keywords: [hello], reply: "Hi."}}]}}
  - tts: {{provider: tone, word_ms: 40}}
  - silence_timeout: {{after_s: {after_s}, prompt: "Are you still there?", max_prompts: 20}}
call_records: {{url: "{url}", migrate: true, flush_interval_s: 0.05, timeout_s: 1}}
"""


def prompting_bot(url: str, name: str = "prompter", after_s: float = 1.2, **extra: str) -> Bot:
    text_ = PROMPTING_BOT.format(name=name, greeting="Hello there.", url=url, after_s=after_s)
    for key, block in extra.items():
        text_ += f"{key}: {block}\n"
    return Bot.from_yaml(text_)


def demo_bot(url: str, extra: str = "") -> Bot:
    text_ = (ROOT / "configs" / "demo.yaml").read_text()
    text_ += f'call_records: {{url: "{url}", migrate: true, flush_interval_s: 0.05}}\n' + extra
    return Bot.from_yaml(text_)


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite+aiosqlite:///{tmp_path / 'calls.db'}"


async def written(bot: Bot, call_id: str, done: Any, timeout_s: float = 15.0) -> dict[str, Any]:
    """The call's record once ``done(record)`` holds (the writer works in the background)."""
    records = records_of(bot)
    assert records is not None
    found: dict[str, Any] | None = None
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                found = await records.get_call(call_id)
            except Exception:
                found = None
            if found is not None and done(found):
                return found
            await asyncio.sleep(0.1)


# --- migrations and partitions ------------------------------------------------------------------


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return sqlite_url(tmp_path)
    url: str = request.getfixturevalue("postgres_url")
    return url


async def test_migrations_create_the_tables_and_indexes_and_take_them_away(
    database_url: str,
) -> None:
    engine = make_engine(database_url)
    try:
        assert await migrate.current(engine) is None
        await migrate.upgrade(engine)
        assert await migrate.current(engine) == migrate.head()

        def shape(conn: Any) -> tuple[set[str], set[str]]:
            found = inspect(conn)
            tables = set(found.get_table_names()) & TABLES
            indexes = {i["name"] for t in tables for i in found.get_indexes(t)}
            return tables, indexes

        async with engine.connect() as conn:
            tables, indexes = await conn.run_sync(shape)
        assert tables == TABLES
        assert indexes >= INDEXES | {"idx_customers_phone"}

        await migrate.downgrade(engine)
        assert await migrate.current(engine) is None
        async with engine.connect() as conn:
            tables, _ = await conn.run_sync(shape)
        assert tables == set()
        await migrate.upgrade(engine)  # and up again, from nothing
        assert await migrate.current(engine) == migrate.head()
    finally:
        await engine.dispose()


async def test_partitions_are_made_ahead_and_dropped_past_retention(postgres_url: str) -> None:
    from voxpipe.records.settings import CallRecordsSettings, HooksSettings

    settings = CallRecordsSettings.model_validate(
        {"url": postgres_url, "migrate": True, "keep_days": 90, "months_ahead": 2}
    )
    records = CallRecords("p", settings, HooksSettings())
    await records.start()
    assert records.engine is not None
    try:
        await records.run_upkeep(datetime(2026, 1, 15, tzinfo=UTC))
        async with records.engine.connect() as conn:
            found = await conn.run_sync(partitions)
        assert {"calls_y2026m01", "calls_y2026m02", "calls_y2026m03"} <= set(found["calls"])
        assert "call_turns_y2026m03" in found["call_turns"]
        assert "call_tool_calls_y2026m03" in found["call_tool_calls"]
        async with records.engine.begin() as conn:
            for day in ("2026-01-20", "2026-03-20"):
                await conn.execute(
                    text(
                        "INSERT INTO calls (id, started_at, bot, way_in) "
                        f"VALUES ('{day}', '{day} 10:00:00+00', 'p', 'audiosocket')"
                    )
                )

        # 90 days before 2026-06-15 is 2026-03-17: January and February are wholly older.
        await records.run_upkeep(datetime(2026, 6, 15, tzinfo=UTC))
        async with records.engine.connect() as conn:
            found = await conn.run_sync(partitions)
            left = (await conn.execute(text("SELECT id FROM calls ORDER BY id"))).scalars().all()
        names = set(found["calls"])
        assert "calls_y2026m01" not in names and "calls_y2026m02" not in names
        assert "call_turns_y2026m02" not in found["call_turns"]
        assert {"calls_y2026m03", "calls_y2026m06", "calls_y2026m08"} <= names
        assert left == ["2026-03-20"]
    finally:
        await records.aclose()


async def test_sqlite_deletes_calls_past_retention(tmp_path: Path) -> None:
    from voxpipe.records.settings import CallRecordsSettings, HooksSettings

    settings = CallRecordsSettings.model_validate(
        {"url": sqlite_url(tmp_path), "migrate": True, "keep_days": 30}
    )
    records = CallRecords("s", settings, HooksSettings())
    await records.start()
    assert records.engine is not None
    try:
        async with records.engine.begin() as conn:
            for call_id, day in (("old", "2026-01-01"), ("new", "2026-02-20")):
                await conn.execute(
                    text(
                        "INSERT INTO calls (id, started_at, bot, way_in) "
                        f"VALUES ('{call_id}', '{day} 10:00:00', 's', 'audiosocket')"
                    )
                )
                await conn.execute(
                    text(
                        "INSERT INTO call_turns (call_id, turn_index, started_at, speaker, text)"
                        f" VALUES ('{call_id}', 0, '{day} 10:00:01', 'bot', 'Hello.')"
                    )
                )
        await records.run_upkeep(datetime(2026, 3, 1, tzinfo=UTC))
        async with records.engine.connect() as conn:
            calls = (await conn.execute(text("SELECT id FROM calls"))).scalars().all()
            turns = (await conn.execute(text("SELECT call_id FROM call_turns"))).scalars().all()
        assert calls == ["new"] and turns == ["new"]
    finally:
        await records.aclose()


async def test_a_database_without_the_tables_stops_the_bot_with_what_to_do(
    tmp_path: Path,
) -> None:
    from voxpipe.pipelines.settings import ProviderError

    bot = Bot.from_yaml(
        PROMPTING_BOT.format(name="x", greeting="Hi.", url=sqlite_url(tmp_path), after_s=5).replace(
            "migrate: true", "migrate: false"
        )
    )
    with pytest.raises(ProviderError, match="db upgrade"):
        await bot.prepare()
    await bot.close()


# --- whole calls ---------------------------------------------------------------------------------


async def test_a_whole_demo_call_is_recorded_with_its_turns_and_tool_calls(
    postgres_url: str,
) -> None:
    bot = demo_bot(postgres_url)
    async with running_bot(bot) as server:
        result = await place_call(
            "127.0.0.1",
            server.port,
            [
                WaitForBot(15),
                Say(load_wav(AUDIO / "caller_order_status_16k.wav", 16000)),
                WaitForBot(20),
                Say(load_wav(AUDIO / "caller_operator_16k.wav", 16000)),
                WaitForHangup(30),
            ],
            rate=16000,
        )
        assert result.hung_up_by == "bot"
        record = await written(bot, result.call_id, lambda r: r["outcome"] is not None)
    await bot.close()

    assert record["outcome"] == "transfer"
    assert record["transfer_target"] == "transfer-to-operator,100,1"
    assert record["bot"] == "acme-order-desk" and record["way_in"] == "audiosocket"
    assert record["duration_s"] > 3 and record["trace_id"]
    turns = [(t["speaker"], t["text"]) for t in record["turns"]]
    assert turns[0] == ("bot", "Hello, this is the ACME order desk. How can I help you?")
    assert turns[1][0] == "caller" and "status of my order" in turns[1][1].lower()
    assert turns[2] == ("bot", "Sure. What is your order number?")
    assert turns[3][0] == "caller" and "operator" in turns[3][1].lower()
    assert turns[4][0] == "bot" and "transfer you to an operator" in turns[4][1]
    assert [t["index"] for t in record["turns"]] == list(range(len(record["turns"])))
    assert record["turns"][2]["latency_ms"] > 0  # from the caller's stop to the bot's audio
    starts = [t["started_at"] for t in record["turns"]]
    assert starts == sorted(starts)
    (tool,) = record["tool_calls"]
    assert tool["tool"] == "transfer" and tool["error"] is None
    assert tool["duration_ms"] >= 0 and tool["turn"] == 4


async def test_the_call_goes_on_while_the_database_is_down_and_is_written_when_it_is_back(
    postgres: PostgresServer, postgres_url: str
) -> None:
    bot = prompting_bot(postgres_url, http='{listen: "127.0.0.1:0"}')
    await bot.prepare()
    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    records = records_of(bot)
    assert records is not None and records.writer is not None
    call_id = "7d3f1e9c-4b8a-4c6e-9f0a-1b2c3d4e5f60"
    try:
        async with running_bot(bot) as server, httpx.AsyncClient() as http:
            calling = asyncio.create_task(
                place_call(
                    "127.0.0.1",
                    server.port,
                    [WaitForBot(5), Silence(9), Hangup()],
                    call_id=call_id,
                )
            )
            await written(bot, call_id, lambda r: len(r["turns"]) >= 1)
            postgres.stop()
            try:
                await until(lambda: records.status().startswith("degraded"), 15)
                health = (await http.get(f"http://127.0.0.1:{api.port}/health")).json()
                assert health["status"] == "degraded"
                assert health["call_records"].startswith("degraded")
                await asyncio.sleep(2.5)  # the bot keeps prompting the silent caller
            finally:
                postgres.start()
            result = await calling
            assert result.hung_up_by == "caller"
            # Prompts were heard after the database went away: the call went on.
            assert len(result.bot_segments) >= 4
            record = await written(bot, call_id, lambda r: r["outcome"] is not None, 30)
            health = (await http.get(f"http://127.0.0.1:{api.port}/health")).json()
            assert health["status"] == "ok"
    finally:
        await api.stop()
        await bot.close()
    assert record["outcome"] == "caller"
    prompts = [t for t in record["turns"] if t["text"] == "Are you still there?"]
    assert len(prompts) >= 3
    assert records.writer.dropped == 0


async def test_a_full_queue_drops_counts_and_reports(tmp_path: Path) -> None:
    engine = make_engine(f"sqlite+aiosqlite:///{tmp_path / 'missing' / 'calls.db'}")
    writer = RecordWriter(engine, queue_size=100, flush_interval_s=0.01, timeout_s=0.5)
    writer.start()
    metrics = Metrics()
    try:
        with observing(metrics):
            accepted = [writer.put("turn", {"call_id": str(i)}) for i in range(150)]
        assert accepted.count(False) == 50 and writer.dropped == 50
        await until(lambda: writer.status() != "ok", 10)
        assert writer.status().startswith("degraded")
        assert b"voxpipe_records_dropped_total 50.0" in metrics.render()
    finally:
        await writer.close(0.1)
        await engine.dispose()
    assert writer.dropped == 150  # what could not be written by the end is counted too


# --- the post-call hook ---------------------------------------------------------------------------


class HookReceiver:
    """A local HTTP server answering POSTs with scripted statuses; keeps what it received."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.received: list[tuple[int, dict[str, str], bytes]] = []
        self.arrived = asyncio.Event()
        self.server: asyncio.Server | None = None

    @property
    def url(self) -> str:
        assert self.server is not None
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}/hooks/call"

    async def __aenter__(self) -> HookReceiver:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while await reader.readline():
            headers: dict[str, str] = {}
            while (line := await reader.readline()) not in (b"\r\n", b""):
                key, _, value = line.decode().partition(":")
                headers[key.strip().lower()] = value.strip()
            body = await reader.readexactly(int(headers.get("content-length", "0")))
            status = self.statuses.pop(0) if self.statuses else 200
            self.received.append((status, headers, body))
            writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\n\r\n".encode())
            await writer.drain()
            if status == 200:
                self.arrived.set()
        writer.close()


def verify(secret: str, headers: dict[str, str], body: bytes) -> bool:
    """What a receiver does: recompute the signature over ``"<t>.<body>"``."""
    parts = dict(part.split("=", 1) for part in headers["x-voxpipe-signature"].split(","))
    expected = hmac.new(
        secret.encode(), parts["t"].encode() + b"." + body, hashlib.sha256
    ).hexdigest()
    return hmac.compare_digest(expected, parts["v1"])


async def test_the_hook_gets_a_signed_record_after_a_500_then_a_200(tmp_path: Path) -> None:
    async with HookReceiver([500, 200]) as receiver:
        hook = (
            f'{{call_ended: {{url: "{receiver.url}", secret: "s3cret", backoff_s: 0.1, '
            "retries: 3}}"
        )
        bot = prompting_bot(sqlite_url(tmp_path), hooks=hook)
        async with running_bot(bot) as server:
            result = await place_call(
                "127.0.0.1", server.port, [WaitForBot(5), Silence(2.5), Hangup()]
            )
            async with asyncio.timeout(10):
                await receiver.arrived.wait()
        await bot.close()
    assert [status for status, _, _ in receiver.received] == [500, 200]
    (_, first, first_body), (_, headers, body) = receiver.received
    assert first_body == body
    assert first["x-voxpipe-delivery"] == headers["x-voxpipe-delivery"]
    assert headers["x-voxpipe-event"] == "call_ended"
    assert verify("s3cret", headers, body)
    assert not verify("other", headers, body)
    assert not verify("s3cret", headers, body.replace(b"caller", b"bot"))
    record = json.loads(body)
    assert record["uuid"] == result.call_id and record["outcome"] == "caller"
    assert record["turns"][0]["text"] == "Hello there."
    assert any(t["text"] == "Are you still there?" for t in record["turns"])


async def test_a_hook_that_never_answers_does_not_hold_up_the_call(tmp_path: Path) -> None:
    async with HookReceiver([500] * 10) as receiver:
        hook = (
            f'{{call_ended: {{url: "{receiver.url}", secret: "k", backoff_s: 0.05, retries: 2}}}}'
        )
        bot = prompting_bot(sqlite_url(tmp_path), hooks=hook)
        metrics = Metrics()
        with observing(metrics):
            async with running_bot(bot) as server:
                result = await place_call("127.0.0.1", server.port, [WaitForBot(5), Hangup()])
                record = await written(bot, result.call_id, lambda r: r["outcome"] is not None)
                records = records_of(bot)
                assert records is not None and records.hook is not None
                hook = records.hook
                await until(lambda: hook.given_up >= 1, 10)
        await bot.close()
    assert record["outcome"] == "caller"
    assert len(receiver.received) == 3  # the first attempt and two retries
    assert b'voxpipe_errors_total{kind="hook"} 3.0' in metrics.render()


# --- audio, the HTTP API and the command line ----------------------------------------------------


async def test_recording_is_stereo_caller_left_bot_right_and_playable_during_the_call(
    tmp_path: Path,
) -> None:
    import numpy as np

    audio = f'{{dir: "{tmp_path / "rec"}"}}'
    bot = Bot.from_yaml(
        PROMPTING_BOT.format(
            name="rec", greeting="Hello there.", url=sqlite_url(tmp_path), after_s=30
        ).replace("timeout_s: 1}", f"timeout_s: 1, audio: {audio}}}")
    )
    caller_audio = load_wav(AUDIO / "caller_yes_8k.wav", 8000)
    async with running_bot(bot) as server:
        calling = asyncio.create_task(
            place_call(
                "127.0.0.1",
                server.port,
                [WaitForBot(5), Silence(1.5), Say(caller_audio), Silence(1.0), Hangup()],
            )
        )
        files: list[Path] = []
        async with asyncio.timeout(10):
            while not files:
                files = list((tmp_path / "rec").glob("*/*.wav"))
                await asyncio.sleep(0.1)
        await asyncio.sleep(1.5)
        with wave.open(str(files[0])) as partial:  # mid-call: already a valid WAV
            assert partial.getnchannels() == 2 and partial.getnframes() > 0
        result = await calling
        record = await written(bot, result.call_id, lambda r: r["outcome"] is not None)
    await bot.close()
    assert record["recording"] == str(files[0])
    assert files[0].name == f"{result.call_id}.wav"
    with wave.open(str(files[0])) as done:
        assert (done.getnchannels(), done.getsampwidth(), done.getframerate()) == (2, 2, 8000)
        frames = np.frombuffer(done.readframes(done.getnframes()), dtype="<i2").reshape(-1, 2)
    seconds = len(frames) / 8000
    assert abs(seconds - record["duration_s"]) < 1.0

    def loud(channel: Any, start_s: float, end_s: float) -> float:
        part = channel[int(start_s * 8000) : int(end_s * 8000)].astype(float)
        return float(np.sqrt(np.mean(part**2))) if len(part) else 0.0

    caller, bot_side = frames[:, 0], frames[:, 1]
    greeting_end = result.bot_segments[0][1]
    # The greeting is on the right only; the caller's words on the left only, after it.
    assert loud(bot_side, 0.0, greeting_end) > 300 and loud(caller, 0.0, greeting_end) < 50
    windows = [i / 10 for i in range(int(seconds * 10))]
    spoke = [t for t in windows if loud(caller, t, t + 0.1) > 300]
    assert spoke and spoke[0] > greeting_end
    assert spoke[-1] - spoke[0] < len(caller_audio) / 16000 + 0.3
    assert max(loud(bot_side, t, t + 0.1) for t in spoke) < 50


async def test_history_call_and_audio_endpoints_behind_the_token(tmp_path: Path) -> None:
    audio = f'{{dir: "{tmp_path / "rec"}"}}'
    bot = Bot.from_yaml(
        PROMPTING_BOT.format(
            name="api", greeting="Hello there.", url=sqlite_url(tmp_path), after_s=30
        ).replace("timeout_s: 1}", f"timeout_s: 1, audio: {audio}}}")
        + 'http: {listen: "127.0.0.1:0", token: "t0k"}\n'
    )
    await bot.prepare()
    api = OperationsApi.for_bot(bot)
    assert api is not None
    await api.start()
    auth = {"Authorization": "Bearer t0k"}
    try:
        async with running_bot(bot) as server:
            result = await place_call("127.0.0.1", server.port, [WaitForBot(5), Hangup()])
            await written(bot, result.call_id, lambda r: r["outcome"] is not None)
        base = f"http://127.0.0.1:{api.port}"
        async with httpx.AsyncClient(base_url=base) as http:
            assert (await http.get("/calls/history")).status_code == 401
            assert (await http.get(f"/calls/{result.call_id}")).status_code == 401
            listed = (await http.get("/calls/history?since=1h&outcome=caller", headers=auth)).json()
            assert [c["uuid"] for c in listed["calls"]] == [result.call_id]
            none = (await http.get("/calls/history?outcome=transfer", headers=auth)).json()
            assert none["count"] == 0
            bad = await http.get("/calls/history?since=yesterday", headers=auth)
            assert bad.status_code == 400 and "30m" in bad.json()["detail"]
            one = (await http.get(f"/calls/{result.call_id}", headers=auth)).json()
            assert one["turns"][0]["text"] == "Hello there."
            wav = await http.get(f"/calls/{result.call_id}/audio", headers=auth)
            assert wav.status_code == 200 and wav.content[:4] == b"RIFF"
            assert wav.headers["content-type"] == "audio/wav"
            missing = await http.get("/calls/00000000-0000-0000-0000-000000000000", headers=auth)
            assert missing.status_code == 404
    finally:
        await api.stop()
        await bot.close()


async def test_cli_lists_and_shows_calls(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from voxpipe.bots.cli import main

    bot = prompting_bot(sqlite_url(tmp_path))
    async with running_bot(bot) as server:
        result = await place_call("127.0.0.1", server.port, [WaitForBot(5), Silence(2.5), Hangup()])
        await written(bot, result.call_id, lambda r: r["outcome"] is not None)
    await bot.close()
    url = sqlite_url(tmp_path)

    def run(*argv: str) -> tuple[int, str]:
        code = main(list(argv))
        return code, capsys.readouterr().out

    code, out = await asyncio.to_thread(run, "calls", "list", "--url", url, "--outcome", "caller")
    assert code == 0 and result.call_id in out and "caller" in out
    code, out = await asyncio.to_thread(run, "calls", "list", "--url", url, "--caller", "555")
    assert code == 0 and out.strip() == "no calls"
    code, out = await asyncio.to_thread(run, "calls", "show", result.call_id, "--url", url)
    assert code == 0
    assert "outcome:   caller" in out and "bot     Hello there." in out
    assert "Are you still there?" in out
    code, out = await asyncio.to_thread(
        run, "calls", "show", result.call_id, "--url", url, "--json"
    )
    assert json.loads(out)["uuid"] == result.call_id


# --- settings -------------------------------------------------------------------------------------

BAD = """name: bad
pipeline:
  - vad: {engine: webrtc}
call_records:
  url: "mysql://root@localhost/calls"
  keep_days: 0
  keep_dayz: 3
  audio: {format: mp3}
hooks:
  call_ended: {url: "ftp://x", secret: "s"}
caller:
  variables: [ACCOUNT, "not a name"]
"""


def test_bad_call_records_settings_are_reported_with_file_line_and_column() -> None:
    with pytest.raises(ConfigError) as error:
        parse_bot(BAD, "bad.yaml")
    lines = [str(p) for p in error.value.problems]
    assert any(
        line.startswith("bad.yaml:5:8: call_records.url: unsupported database 'mysql'")
        for line in lines
    ), lines
    assert any(
        line.startswith("bad.yaml:6:14: call_records.keep_days: Input should be greater")
        for line in lines
    ), lines
    assert any(
        line.startswith("bad.yaml:7:3: call_records.keep_dayz: unknown key 'keep_dayz'")
        and "(did you mean 'keep_days'?)" in line
        for line in lines
    ), lines
    assert any(line.startswith("bad.yaml:8:19: call_records.audio.format:") for line in lines), (
        lines
    )
    assert any("hooks.call_ended.url: a hook URL starts with http://" in line for line in lines)
    assert any(
        "caller.variables: 'not a name' is not a channel variable name" in line for line in lines
    )
    assert "mysql://root" not in "\n".join(lines)  # the URL may hold a password


SERVE = """
import asyncio, sys
from voxpipe.bots.bot import Bot
from voxpipe.bots.serve import serve
sys.exit(asyncio.run(serve(Bot.load(sys.argv[1]), host="127.0.0.1", port=0)))
"""


async def test_nothing_is_lost_across_a_sigterm_drain(postgres_url: str, tmp_path: Path) -> None:
    import re
    import signal
    import sys

    from voxpipe.records import queries

    bot_file = tmp_path / "bot.yaml"
    # Records wait 30 s to be batched: only the drain at shutdown can write them in time.
    bot_file.write_text(
        PROMPTING_BOT.format(
            name="drained", greeting="Hello there.", url=postgres_url, after_s=1.2
        ).replace("flush_interval_s: 0.05", "flush_interval_s: 30, batch_size: 10000")
    )
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SERVE,
        str(bot_file),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    assert proc.stdout is not None
    try:
        port = 0
        async with asyncio.timeout(60):
            while not port:
                line = (await proc.stdout.readline()).decode()
                assert line, "serve exited before listening"
                found = re.search(r"listening for AudioSocket on 127\.0\.0\.1:(\d+)", line)
                port = int(found.group(1)) if found else 0
        call = asyncio.create_task(place_call("127.0.0.1", port, [WaitForHangup(30)]))
        await asyncio.sleep(4.0)  # the greeting and a few prompts
        proc.send_signal(signal.SIGTERM)
        result = await call
        async with asyncio.timeout(30):
            assert await proc.wait() == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert result.hung_up_by == "bot"
    heard = len(result.bot_segments)
    engine = make_engine(postgres_url)
    try:
        record = await queries.get_call(engine, result.call_id)
    finally:
        await engine.dispose()
    assert record is not None
    assert record["outcome"] == "error" and "shutting down" in record["error"]
    texts = [t["text"] for t in record["turns"]]
    assert texts[0] == "Hello there."
    assert len(texts) == heard  # every stretch of bot speech the caller heard is a turn


async def test_a_burst_of_callers_is_recorded_whole(postgres_url: str) -> None:
    bot = prompting_bot(postgres_url, after_s=30)
    async with running_bot(bot, max_calls=30) as server:
        results = await asyncio.gather(
            *(place_call("127.0.0.1", server.port, [WaitForBot(10), Hangup()]) for _ in range(20))
        )
        records = [
            await written(bot, r.call_id, lambda r: r["outcome"] is not None) for r in results
        ]
        listed = await records_of(bot).list_calls(limit=100)  # type: ignore[union-attr]
    await bot.close()
    assert {r["outcome"] for r in records} == {"caller"}
    assert all(r["turns"][0]["text"] == "Hello there." for r in records)
    assert {c["uuid"] for c in listed} == {r.call_id for r in results}
