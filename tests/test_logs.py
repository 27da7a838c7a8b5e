"""Log lines: one per event, JSON or text, naming the call and its trace, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import re
from collections.abc import Iterator

import pytest

from voxpipe import events, logs
from voxpipe.bots.bot import Bot
from voxpipe.pipelines.call import Call

BOT = """
name: desk
pipeline:
  - echo: {}
http: {listen: "127.0.0.1:0", token: "${DESK_HTTP_TOKEN}"}
ari: {url: "http://127.0.0.1:8088", username: asterisk, password: "ari-pa55word-xyz"}
session_store: {redis: {url: "redis://:redis-pa55-q7@127.0.0.1:6379/0"}}
"""


class Capture:
    """Installs the project's log setup on a string buffer and takes it down afterwards."""

    def __init__(self) -> None:
        self.stream = io.StringIO()
        self.handler: logging.Handler | None = None
        self.levels = {name: logging.getLogger(name).level for name in ("", "voxpipe")}

    def setup(self, fmt: str, level: str = "INFO", secrets: set[str] | None = None) -> None:
        self.handler = logs.setup_logging(level, fmt, secrets or set(), stream=self.stream)

    def lines(self) -> list[str]:
        return self.stream.getvalue().splitlines()

    def close(self) -> None:
        if self.handler is not None:
            logging.getLogger().removeHandler(self.handler)
        logs.set_call_level("-", None)
        events.unsubscribe(logs._call_context)
        for name, level in self.levels.items():
            logging.getLogger(name).setLevel(level)


@pytest.fixture
def capture() -> Iterator[Capture]:
    cap = Capture()
    yield cap
    cap.close()


async def test_json_lines_carry_the_call_uuid_and_a_trace_id(capture: Capture) -> None:
    capture.setup("json")
    call = Call(bot="desk")
    call.log.info("call from 127.0.0.1 started")
    events.emit.call_started(call)
    call.log.info("greeting played in %d ms", 812)
    call.log.warning("caller silent")
    events.emit.call_ended(call, "caller hung up")
    call.log.info("call ended")
    lines = [json.loads(line) for line in capture.lines()]
    assert [line["msg"] for line in lines] == [
        "call from 127.0.0.1 started",
        "greeting played in 812 ms",
        "caller silent",
        "call ended",
    ]
    for line in lines:
        assert line["call_id"] == call.call_id
        assert line["bot"] == "desk"
        assert re.fullmatch(r"[0-9a-f]{32}", line["trace_id"])
        assert line["trace_id"] == call.data["trace_id"]
        assert line["ts"].endswith("Z")
    assert lines[2]["level"] == "WARNING"


async def test_text_lines_name_the_call_and_trace(capture: Capture) -> None:
    capture.setup("text")
    call = Call(bot="desk")
    events.emit.call_started(call)
    call.log.info("transcript: %s", "where is my order")
    events.emit.call_ended(call, "caller hung up")
    (line,) = capture.lines()
    assert f"[call {call.call_id} trace {call.data['trace_id']}]" in line
    assert line.endswith(": transcript: where is my order")
    assert " INFO " in line


async def test_a_traceback_stays_on_one_json_line(capture: Capture) -> None:
    capture.setup("json")
    try:
        raise RuntimeError("tts failed")
    except RuntimeError:
        logging.getLogger("voxpipe.tts").exception("synthesis failed")
    (line,) = capture.lines()
    record = json.loads(line)
    assert "RuntimeError: tts failed" in record["exc"]
    assert record["call_id"] is None


async def test_library_lines_in_a_call_task_name_the_call(capture: Capture) -> None:
    capture.setup("json")
    call = Call(bot="desk")

    async def serve_call() -> None:
        events.emit.call_started(call)

        async def tool_request() -> None:
            logging.getLogger("httpx").warning("request to the order service timed out")

        await asyncio.create_task(tool_request())
        events.emit.call_ended(call, "caller hung up")

    await asyncio.create_task(serve_call())
    logging.getLogger("httpx").warning("outside any call")
    inside, outside = (json.loads(line) for line in capture.lines())
    assert inside["call_id"] == call.call_id
    assert inside["trace_id"] == call.data["trace_id"]
    assert outside["call_id"] is None


async def test_no_secret_from_the_config_is_ever_printed(
    capture: Capture, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DESK_HTTP_TOKEN", "http-t0ken-4be7")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-api03-env-secret-value")
    bot = Bot.from_yaml(BOT)
    capture.setup("json", secrets=logs.secret_values(bot.config))
    log = logging.getLogger("voxpipe.test")
    config = bot.config
    assert config.http is not None and config.http.token is not None and config.ari is not None
    log.info("ari login with %s", config.ari.password.get_secret_value())
    log.info("redis at %s", config.session_store.redis.url.get_secret_value())  # type: ignore[union-attr]
    log.info("api token=%s", config.http.token.get_secret_value())
    log.info("anthropic key %s", "sk-ant-api03-env-secret-value")
    log.info("header Authorization: Bearer abc.def-ghi")
    log.info("openai key sk-proj0123456789abcdefXYZ")
    try:
        raise ConnectionError("auth failed for ari-pa55word-xyz")
    except ConnectionError:
        log.exception("ARI refused us")
    output = capture.stream.getvalue()
    for secret in (
        "ari-pa55word-xyz",
        "redis-pa55-q7",
        "http-t0ken-4be7",
        "sk-ant-api03-env-secret-value",
        "abc.def-ghi",
        "sk-proj0123456789abcdefXYZ",
    ):
        assert secret not in output
    assert len(capture.lines()) == 7
    assert "***" in output
    assert '"redis at ***"' in output


async def test_one_call_can_log_at_debug_while_the_others_stay_at_info(capture: Capture) -> None:
    capture.setup("json", level="INFO")
    loud, quiet = Call(bot="desk"), Call(bot="desk")
    events.emit.call_started(loud)
    events.emit.call_started(quiet)
    logs.set_call_level(loud.call_id, "DEBUG")
    loud.log.debug("vad: speech started")
    quiet.log.debug("vad: speech started")
    logging.getLogger("voxpipe.server").debug("not about a call")
    events.emit.call_ended(loud, "caller hung up")
    loud.log.debug("after the end")
    lines = [json.loads(line) for line in capture.lines()]
    assert [(line["call_id"], line["msg"]) for line in lines] == [
        (loud.call_id, "vad: speech started")
    ]
    assert logs.call_level(loud.call_id) is None
    assert logging.getLogger("voxpipe").level == logging.INFO
    events.emit.call_ended(quiet, "caller hung up")


def test_short_or_empty_values_are_not_treated_as_secrets() -> None:
    redact = logs.Redactor(["", "ab", "long-secret"])
    assert redact("ab long-secret") == "ab ***"
