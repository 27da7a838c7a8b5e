"""Fuzzing a running bot over real sockets: the AudioSocket server, the HTTP API and the call
API's WebSocket, plus the YAML loader in this process.

A ``Target`` is ``run-pipeline serve`` on an echo+VAD bot with all three listeners, its log
kept in a file; a ``Neighbour`` is a healthy echo call running alongside the whole time (its
own thread and event loop, a 20 ms message out and one expected back); each surface is a
Hypothesis strategy of bad (and some good) inputs and a function that plays one case and
checks what came back. A case never raises: what went wrong is counted in the ``Report``
(crashes: the server died, stopped answering or answered 5xx / 1011; tracebacks: in its log).
``bench/fuzz.py`` runs 100,000 cases a surface; ``test_fuzz.py`` a few thousand.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import socket
import struct
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import hypothesis.strategies as st
from hypothesis import HealthCheck, Phase, given, seed, settings

ROOT = Path(__file__).resolve().parents[2]
CONFIGS = sorted((ROOT / "configs").glob("*.yaml")) + sorted(
    (ROOT / "tests/configs").glob("*.yaml")
)

BOT = """\
name: fuzz
transport:
  audiosocket:
    listen: "127.0.0.1:{port}"
    sample_rate: 8000
    max_calls: 400
    uuid_timeout_s: 0.5
    read_timeout_s: 0.5
  websocket: {{path: /api/v1/call, max_calls: 100, start_timeout_s: 0.5, max_message_bytes: 4096}}
http: {{listen: "127.0.0.1:{http_port}"}}
pipeline:
  - echo: {{passthrough: true}}
  - vad: {{engine: webrtc, aggressiveness: 2, start_ms: 200, stop_ms: 600}}
"""

# Lines of the bot's log that mean something went wrong inside it, whatever the input.
TRACEBACK_MARKS = (
    "Traceback (most recent call last)",
    "Task exception was never retrieved",
    "Exception in callback",
    "exception was never retrieved",
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Report:
    """What one surface's run found."""

    surface: str
    cases: int = 0
    crashes: int = 0
    tracebacks: int = 0
    seconds: float = 0.0
    outcomes: dict[str, int] = field(default_factory=dict)
    failures: list[str] = field(default_factory=list)

    def count(self, outcome: str) -> None:
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1

    def crash(self, what: str) -> None:
        self.crashes += 1
        if len(self.failures) < 10:
            self.failures.append(what)

    def line(self) -> str:
        rate = self.cases / self.seconds if self.seconds else 0.0
        top = ", ".join(f"{k} {v}" for k, v in sorted(self.outcomes.items(), key=lambda x: -x[1]))
        return (
            f"{self.surface}: {self.cases} cases in {self.seconds:.1f} s ({rate:.0f}/s), "
            f"{self.crashes} crashes, {self.tracebacks} tracebacks [{top}]"
        )


# --- the bot under test ------------------------------------------------------------------------


class Target:
    """``run-pipeline serve`` on the fuzz bot: AudioSocket, HTTP API and call API."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.http_port = free_port()
        self.bot = workdir / "fuzz.yaml"
        self.bot.write_text(BOT.format(port=self.port, http_port=self.http_port))
        self.log = workdir / "fuzz.log"
        self._out: Any = self.log.open("wb")
        binary = Path(sys.executable).with_name("run-pipeline")
        self.popen: subprocess.Popen[bytes] | None = subprocess.Popen(
            [str(binary), "serve", str(self.bot)], stdout=self._out, stderr=subprocess.STDOUT
        )

    @classmethod
    def attached(cls, port: int, http_port: int, log: Path) -> Target:
        """The bot another process started (``bench/fuzz.py --jobs``)."""
        target = cls.__new__(cls)
        target.port, target.http_port, target.log = port, http_port, log
        target._out, target.popen = None, None
        return target

    def wait_ready(self, limit_s: float = 60.0) -> None:
        deadline = time.monotonic() + limit_s
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"the bot exited at start:\n{self.output()}")
            if self.healthy():
                return
            time.sleep(0.1)
        raise RuntimeError(f"the bot did not start:\n{self.output()}")

    def healthy(self) -> bool:
        try:
            status, _ = http_request(self.http_port, b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        except OSError:
            return False
        return status == 200

    def alive(self) -> bool:
        return self.popen.poll() is None if self.popen is not None else self.healthy()

    def output(self) -> str:
        if self._out is not None:
            self._out.flush()
        return self.log.read_text(errors="replace")

    def traceback_excerpts(self, limit: int = 3) -> list[str]:
        """The first ``limit`` tracebacks in the bot's log, with the lines before them."""
        lines = self.output().splitlines()
        found = [i for i, line in enumerate(lines) if any(m in line for m in TRACEBACK_MARKS)]
        return ["\n".join(lines[max(0, i - 3) : i + 80]) for i in found[:limit]]

    def tracebacks(self) -> int:
        text = self.output()
        return sum(text.count(mark) for mark in TRACEBACK_MARKS)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(10)
        if self._out is not None:
            self._out.close()


@contextlib.contextmanager
def running_target(workdir: Path) -> Iterator[Target]:
    target = Target(workdir)
    try:
        target.wait_ready()
        yield target
    finally:
        target.stop()


# --- the healthy neighbour ---------------------------------------------------------------------

FRAME = 320  # 20 ms of PCM16 at 8 kHz


class Neighbour:
    """A healthy echo call alongside the fuzzing: a 20 ms message every 20 ms, its echo counted.

    Runs in its own thread and event loop. ``gaps()`` is the longest silence between two
    messages from the bot; ``share()`` the messages received over those sent.
    """

    def __init__(self, port: int) -> None:
        self.port = port
        self.sent = 0
        self.received = 0
        self.arrivals: list[float] = []
        self.error: str = ""
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    def __enter__(self) -> Neighbour:
        self._thread.start()
        deadline = time.monotonic() + 10
        while self.received < 5 and time.monotonic() < deadline and not self.error:
            time.sleep(0.02)
        if self.received < 5:
            raise RuntimeError(f"the neighbour call did not get its echo: {self.error}")
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    async def _run(self) -> None:
        tone = struct.pack("<160h", *[int(8000 * ((i % 20) - 10) / 10) for i in range(160)])
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", self.port)
            writer.write(b"\x01\x00\x10" + uuid.uuid4().bytes)

            async def listen() -> None:
                while True:
                    header = await reader.readexactly(3)
                    size = int.from_bytes(header[1:], "big")
                    await reader.readexactly(size)
                    if header[0] == 0x00:
                        self.error = "the bot hung up the neighbour"
                        return
                    self.received += 1
                    self.arrivals.append(time.monotonic())

            listener = asyncio.create_task(listen())
            start = time.monotonic()
            while not self._stop.is_set() and not listener.done():
                self.sent += 1
                writer.write(b"\x10" + FRAME.to_bytes(2, "big") + tone)
                await asyncio.sleep(max(0.0, start + self.sent * 0.02 - time.monotonic()))
            if listener.done() and not self.error:
                self.error = f"the neighbour's line ended: {listener.exception()!r}"
            writer.write(b"\x00\x00\x00")
            await writer.drain()
            listener.cancel()
            writer.close()
        except (OSError, asyncio.IncompleteReadError) as exc:
            self.error = f"the neighbour's line failed: {exc!r}"

    def longest_gap(self, after: float = 0.0) -> float:
        times = [t for t in self.arrivals if t >= after]
        return max((b - a for a, b in itertools.pairwise(times)), default=0.0)

    def share(self) -> float:
        return self.received / self.sent if self.sent else 0.0


# --- the AudioSocket surface -------------------------------------------------------------------

KINDS = [0x00, 0x01, 0x03, 0x10, 0x11, 0x12, 0x13, 0x16, 0x18, 0xFF]


@st.composite
def audiosocket_messages(draw: st.DrawFn) -> bytes:
    """One message, well or badly formed: a kind, a declared length, and some payload."""
    shape = draw(st.sampled_from(range(10)))
    if shape == 0:  # raw bytes
        return draw(st.binary(min_size=1, max_size=64))
    kind = draw(st.sampled_from(KINDS) if shape < 8 else st.integers(0, 255))
    if shape == 1:  # huge declared length, little payload
        declared = draw(st.integers(1024, 0xFFFF))
        return bytes([kind]) + declared.to_bytes(2, "big") + draw(st.binary(max_size=32))
    if kind in (0x10, 0x11, 0x12, 0x13, 0x16, 0x18) and shape < 6:
        samples = draw(st.sampled_from([160, 320, 1, 0, 4000]))
        payload = os.urandom(samples * 2)
        if shape == 5:
            payload += b"\x00"  # odd length
    elif kind == 0x01 and shape < 6:
        payload = uuid.uuid4().bytes if shape < 4 else draw(st.binary(max_size=40))
    elif kind == 0x03 and shape < 6:
        payload = draw(st.sampled_from([b"1", b"#", b"x", b"12", b""]))
    else:
        payload = draw(st.binary(max_size=128))
    declared = len(payload) if shape != 7 else draw(st.integers(0, 300))
    return bytes([kind]) + declared.to_bytes(2, "big") + payload


@dataclass
class AudioSocketCase:
    opening: bytes  # a valid UUID message, or not
    messages: list[bytes]
    flood: int  # valid audio messages sent at once after the messages
    end: str  # close, shutdown, abort, stall, dribble, hangup
    cut: int  # bytes cut off the end of the stream (a truncation)


_QUICK = ["close", "shutdown", "hangup", "abort"] * 5
_ENDS = [*_QUICK, "stall", *_QUICK, "dribble"]


@st.composite
def audiosocket_cases(draw: st.DrawFn) -> AudioSocketCase:
    opening = b"\x01\x00\x10" + uuid.uuid4().bytes if draw(st.sampled_from(range(4))) else b""
    messages = draw(st.lists(audiosocket_messages(), max_size=6))
    flood = draw(st.sampled_from([0, 0, 0, 0, 0, 50, 300]))
    # One case in 40 is slow (the bot's timeouts end it): a stall or slowloris dribbling.
    end = draw(st.sampled_from(_ENDS))
    cut = draw(st.integers(0, 3)) if draw(st.booleans()) else 0
    return AudioSocketCase(opening, messages, flood, end, cut)


def _read_all(sock: socket.socket, limit_s: float) -> bytes:
    """What the peer sends until it closes, or until ``limit_s`` has passed."""
    deadline = time.monotonic() + limit_s
    chunks = []
    with contextlib.suppress(TimeoutError, OSError):
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            if not (chunk := sock.recv(65536)):
                break
            chunks.append(chunk)
    return b"".join(chunks)


def _valid_audiosocket(data: bytes) -> bool:
    """Whatever the bot sent parses as AudioSocket: known kinds, whole messages."""
    at = 0
    while at + 3 <= len(data):
        kind, size = data[at], int.from_bytes(data[at + 1 : at + 3], "big")
        if kind not in (0x00, 0x10, 0x11, 0x12, 0x13, 0x14, 0x15, 0x16, 0x17, 0x18, 0xFF):
            return False
        at += 3 + size
    return at == len(data)


def play_audiosocket(target: Target, case: AudioSocketCase, report: Report) -> None:
    stream = case.opening + b"".join(case.messages)
    if case.flood:
        stream += (b"\x10\x01\x40" + bytes(FRAME)) * case.flood
    if case.cut:
        stream = stream[: -case.cut] if len(stream) > case.cut else b""
    if case.end == "hangup":
        stream += b"\x00\x00\x00"
    elif case.end == "stall":  # a message that stops halfway
        stream += b"\x10\x01\x40" + bytes(10)
    try:
        sock = socket.create_connection(("127.0.0.1", target.port), timeout=5)
    except OSError as exc:
        report.crash(f"audiosocket: cannot connect: {exc!r}")
        return
    with sock:
        try:
            if case.end == "dribble":  # slowloris: one byte at a time, slower than allowed
                for byte in stream[:40]:
                    sock.sendall(bytes([byte]))
                    time.sleep(0.05)
            else:
                sock.sendall(stream)
        except OSError:
            report.count("closed by the bot while sending")
            return
        if case.end == "abort":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            report.count("abort")
            return
        if case.end == "close":
            report.count("close")
            return
        # After a hangup too: a cut stream may swallow the hangup into a valid message.
        if case.end in ("shutdown", "dribble", "hangup"):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
        # The bot must end the connection itself: at once for a protocol error or a hangup,
        # after its read or UUID timeout for a stall, or when our end of stream reaches it.
        started = time.monotonic()
        received = _read_all(sock, 5.0)
        waited = time.monotonic() - started
        if waited >= 4.9:
            report.crash(f"audiosocket: the bot kept the connection open ({case!r:.300})")
        elif not _valid_audiosocket(received):
            report.crash(f"audiosocket: the bot sent a malformed stream {received[:40]!r}")
        else:
            report.count(f"{case.end}, ended by the bot")


# --- the HTTP surface --------------------------------------------------------------------------


def http_request(port: int, request: bytes, limit_s: float = 5.0) -> tuple[int | None, bytes]:
    """Send raw bytes as a request; the status (None: closed without one) and the response."""
    with socket.create_connection(("127.0.0.1", port), timeout=limit_s) as sock:
        with contextlib.suppress(OSError):
            sock.sendall(request)
        response = _read_all(sock, 0.5)
        if not response:  # a body shorter than its Content-Length: the server waits for it
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_WR)
            response = _read_all(sock, limit_s)
    if not response.startswith(b"HTTP/1.1 "):
        return None, response
    try:
        return int(response[9:12]), response
    except ValueError:
        return None, response


PATHS = [
    "/health",
    "/metrics",
    "/calls",
    "/calls/history",
    "/calls/{uuid}",
    "/calls/{uuid}/outcome",
    "/calls/{uuid}/log-level",
    "/calls/{uuid}/context",
    "/calls/{uuid}/audio",
    "/api/v1/call",
    "/",
    "/nope",
]
TOKEN = st.text(
    alphabet=st.characters(min_codepoint=33, max_codepoint=126, exclude_characters=" "),
    min_size=1,
    max_size=12,
)


def one_in(draw: st.DrawFn, n: int) -> bool:
    """True about once in ``n`` draws (Hypothesis favours an integer range's ends, so the rare
    value is one in the middle)."""
    return bool(draw(st.integers(0, n - 1)) == n // 2)


@st.composite
def http_requests(draw: st.DrawFn) -> bytes:
    methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"]
    method = draw(TOKEN if one_in(draw, 10) else st.sampled_from(methods))
    path = draw(st.sampled_from(PATHS)).replace(
        "{uuid}",
        draw(st.sampled_from([str(uuid.uuid4()), "x", "%00", "..%2f..", "a" * 300]) | TOKEN),
    )
    if one_in(draw, 6):
        path += "?" + draw(
            st.sampled_from(["since=x", "limit=-1", "limit=99999999999999999999", "a=%ff"])
        )
    if one_in(draw, 10):
        path = "/" + draw(st.binary(max_size=40)).hex()
    body_kind = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    if body_kind == 0:
        body = b""
    elif body_kind == 1:
        body = json.dumps(
            {"level": draw(st.sampled_from(["DEBUG", "INFO", "loud", None, 3]))}
        ).encode()
    elif body_kind == 2:
        body = draw(st.binary(max_size=200))  # not UTF-8, most likely
    elif body_kind == 3:
        body = b"{" * draw(st.integers(1, 5000))  # bad, deep JSON
    elif body_kind == 4:
        body = b"caller=" + os.urandom(draw(st.sampled_from([100, 9000, 200_000])))  # oversized
    elif body_kind == 5:
        body = b"x" * draw(st.sampled_from([1_100_000, 70_000]))
    elif body_kind == 6:
        body = ("name=" + draw(st.text(max_size=50)) + "&tier=gold").encode()
    else:
        body = json.dumps(
            draw(
                st.recursive(
                    st.none() | st.booleans() | st.integers() | st.text(max_size=8),
                    lambda c: (
                        st.lists(c, max_size=3)
                        | st.dictionaries(st.text(max_size=5), c, max_size=3)
                    ),
                    max_leaves=10,
                )
            )
        ).encode()
    headers = [b"Host: 127.0.0.1", b"Connection: close"]
    length = draw(st.sampled_from([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]))
    if length < 6:
        headers.append(b"Content-Length: %d" % len(body))
    elif length == 6:
        headers.append(
            b"Content-Length: "
            + draw(st.sampled_from([b"-1", b"99999999999999", b"abc", b"10, 20", b"1000000000"]))
        )
    elif length == 7:
        headers.append(b"Transfer-Encoding: chunked")
        body = b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) if draw(st.booleans()) else body
    content_type = draw(
        st.sampled_from(
            [
                b"application/json",
                b"application/x-www-form-urlencoded",
                b"text/plain; charset=latin-1",
                b"multipart/form-data; boundary=x",
                b"",
            ]
        )
    )
    if content_type:
        headers.append(b"Content-Type: " + content_type)
    for _ in range(draw(st.sampled_from([0, 0, 1, 2, 3]))):
        name = draw(
            st.sampled_from(
                [
                    b"Authorization",
                    b"X-Trace-ID",
                    b"Upgrade",
                    b"Expect",
                    b"X-" + os.urandom(3).hex().encode(),
                ]
            )
        )
        if one_in(draw, 4):
            value = draw(st.binary(max_size=60)).replace(b"\r", b"").replace(b"\n", b"")
        else:
            value = draw(TOKEN).encode()
        headers.append(name + b": " + value)
    if one_in(draw, 20):
        headers.append(b"X-Big: " + b"a" * 70_000)
    if one_in(draw, 25):
        return draw(st.binary(min_size=1, max_size=300))
    line = method.encode() + b" " + path.encode("utf-8", "surrogateescape") + b" HTTP/1.1"
    return line + b"\r\n" + b"\r\n".join(headers) + b"\r\n\r\n" + body


def play_http(target: Target, request: bytes, report: Report) -> None:
    try:
        status, response = http_request(target.http_port, request)
    except OSError as exc:
        report.crash(f"http: cannot connect: {exc!r}")
        return
    if status is not None and status >= 500:
        report.crash(f"http: {status} for {request[:200]!r}: {response[:300]!r}")
        return
    report.count(str(status) if status is not None else "closed without a response")


# --- the call API's WebSocket surface ----------------------------------------------------------

EVENTS = ["call_start", "dtmf", "call_terminated", "stop_audio", "transcript", "nope", ""]
GOOD_CLOSES = {1000, 1001, 1007, 1008, 1009, 1013}


@st.composite
def websocket_messages(draw: st.DrawFn) -> str | bytes:
    shape = draw(st.sampled_from(range(10)))
    if shape == 0:
        return draw(st.binary(max_size=40)) + (b"\x00" * draw(st.sampled_from([0, 1, 640, 5000])))
    if shape == 1:
        return draw(st.text(max_size=80))
    if shape == 2:
        return "{" * draw(st.integers(1, 3000))
    if shape == 3:
        return bytes(draw(st.sampled_from([320, 641, 4096, 4097])))
    payload = draw(
        st.none()
        | st.dictionaries(
            st.sampled_from(["call_id", "trace_id", "initial_vars", "sample_rate", "digit", "x"]),
            st.none()
            | st.integers()
            | st.text(max_size=40)
            | st.floats()
            | st.dictionaries(st.text(max_size=5), st.text(max_size=5), max_size=60),
            max_size=4,
        )
        | st.integers()
        | st.text(max_size=10)
    )
    message: dict[str, Any] = {"event": draw(st.sampled_from(EVENTS) | st.integers())}
    if payload is not None:
        message["payload"] = payload
    return json.dumps(message)


@st.composite
def websocket_cases(draw: st.DrawFn) -> list[str | bytes]:
    opening: list[str | bytes] = []
    if draw(st.sampled_from(range(3))):
        rate = draw(st.sampled_from([8000, 16000, 12345]))
        opening.append(json.dumps({"event": "call_start", "payload": {"sample_rate": rate}}))
    return opening + draw(st.lists(websocket_messages(), max_size=5))


def play_websocket(target: Target, messages: list[str | bytes], report: Report) -> None:
    from websockets.exceptions import ConnectionClosed, InvalidStatus
    from websockets.sync.client import connect

    url = f"ws://127.0.0.1:{target.http_port}/api/v1/call"
    try:
        with connect(url, open_timeout=5, close_timeout=2, max_size=None) as ws:
            try:
                for message in messages:
                    ws.send(message)
                ws.close(1000)
            except ConnectionClosed:
                pass
            events = []
            with contextlib.suppress(ConnectionClosed, TimeoutError):
                while True:
                    received = ws.recv(timeout=5)
                    if isinstance(received, str):
                        events.append(json.loads(received)["event"])
            code = ws.close_code
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status >= 500:
            report.crash(f"websocket: handshake answered {status}")
        else:
            report.count(f"handshake {status}")
        return
    except (OSError, TimeoutError) as exc:
        report.crash(f"websocket: {exc!r} for {messages!r:.300}")
        return
    if code not in GOOD_CLOSES:
        report.crash(f"websocket: closed with {code} after {events} for {messages!r:.300}")
        return
    report.count(f"closed {code}" + (" after error" if "error" in events else ""))


# --- the YAML loader surface -------------------------------------------------------------------


# Mutations: 0 drop a line, 1 repeat one, 2 replace a value, 3 flip a byte, 4 insert junk,
# 5 (one in 30) an alias bomb (it costs the loader a quarter second to refuse).
_HOW = [0, 1, 2, 3, 4] * 3 + [5] + [0, 1, 2, 3, 4] * 3


def yaml_mutations() -> st.SearchStrategy[bytes]:
    """The shipped bot files, mutated: lines dropped, duplicated or swapped, values replaced with
    other types, bytes flipped, aliases and nesting added; and documents from scratch."""
    texts = [path.read_bytes() for path in CONFIGS]
    junk = st.sampled_from(
        [
            b"[",
            b"{",
            b"&a",
            b"*a",
            b"!!int x",
            b"!!float y",
            b"!!binary ###",
            b"- ",
            b": ",
            b"\t",
            b"${NOPE}",
            b"${X:-3}",
            b"null",
            b"~",
            b"1e999",
            b"-0",
            b"0x1F",
            b"[1, {a: b}]",
            b"\xff\xfe",
            b"'",
            b'"',
            b"%TAG ! x",
            b"---",
            b"...",
            b"!!python/object:os.system ls",
            b"? [a]",
        ]
    )

    @st.composite
    def mutate(draw: st.DrawFn) -> bytes:
        lines = draw(st.sampled_from(texts)).split(b"\n")
        for _ in range(draw(st.integers(1, 4))):
            at = draw(st.integers(0, max(0, len(lines) - 1)))
            how = draw(st.sampled_from(_HOW))
            if how == 0 and lines:
                del lines[at]
            elif how == 1:
                lines.insert(at, lines[draw(st.integers(0, len(lines) - 1))] if lines else b"")
            elif how == 2 and lines:
                head, sep, _ = lines[at].partition(b": ")
                lines[at] = head + (sep or b": ") + draw(junk)
            elif how == 3 and lines:
                data = bytearray(lines[at] or b" ")
                data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
                lines[at] = bytes(data)
            elif how == 4:
                lines.insert(at, draw(junk) + draw(junk))
            else:
                lines[at:at] = [b"x: &x [" + b"a," * 9 + b"]"] + [
                    b"x%d: &x%d [" % (i, i)
                    + b",".join([b"*x" if i == 0 else b"*x%d" % (i - 1)] * 9)
                    + b"]"
                    for i in range(draw(st.integers(1, 8)))
                ]
        return b"\n".join(lines)

    nested = st.integers(1, 3000).map(lambda n: b"name: " + b"[" * n + b"]" * n)
    nested_maps = st.integers(1, 2000).map(lambda n: b"x: " + b"{a: " * n + b"1" + b"}" * n)
    scratch = st.recursive(
        st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=10),
        lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
        max_leaves=20,
    ).map(lambda d: json.dumps(d).encode())
    return st.one_of(
        mutate(), mutate(), mutate(), nested, nested_maps, scratch, st.binary(max_size=200)
    )


def play_yaml(workdir: Path, text: bytes, report: Report) -> None:
    from voxpipe.bots.config import ConfigError, load_bot

    path = workdir / "bot.yaml"
    path.write_bytes(text)
    started = time.monotonic()
    try:
        load_bot(path)
    except ConfigError as exc:
        if not exc.problems or not all(str(p).startswith(f"{path}:") for p in exc.problems):
            report.crash(f"yaml: an error without file:line: {exc!s:.200}")
        else:
            report.count("ConfigError")
    except Exception as exc:  # what the loader must never raise
        report.crash(f"yaml: {type(exc).__name__}: {exc!s:.200} for {text[:300]!r}")
        report.tracebacks += 1
    else:
        report.count("valid")
    if time.monotonic() - started > 5.0:
        report.crash(f"yaml: {time.monotonic() - started:.1f} s for {text[:300]!r}")


# --- running a surface -------------------------------------------------------------------------

SURFACES = ("audiosocket", "http", "websocket", "yaml")


def run_cases(
    strategy: st.SearchStrategy[Any],
    play: Callable[[Any], None],
    cases: int,
    seed_: int,
) -> None:
    """Play ``cases`` examples of ``strategy`` (Hypothesis draws them; nothing is shrunk: a
    case records what went wrong instead of raising)."""

    @seed(seed_)
    @settings(
        max_examples=cases,
        database=None,
        deadline=None,
        phases=[Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(strategy)
    def one(case: Any) -> None:
        play(case)

    one()


def fuzz(
    surface: str,
    cases: int,
    workdir: Path,
    target: Target | None = None,
    seed_: int = 0,
    progress: Callable[[Report], None] | None = None,
) -> Report:
    """Fuzz one surface with ``cases`` cases; the target (a running bot) for all but yaml."""
    report = Report(surface)
    started = time.monotonic()
    logged_before = target.tracebacks() if target is not None else 0

    def counted(play: Callable[[Any], None]) -> Callable[[Any], None]:
        def one(case: Any) -> None:
            play(case)
            report.cases += 1
            if progress is not None and report.cases % 5000 == 0:
                report.seconds = time.monotonic() - started
                progress(report)
            if target is not None and report.cases % 500 == 0 and not target.alive():
                raise RuntimeError(f"the bot died:\n{target.output()[-3000:]}")

        return one

    if surface == "yaml":
        run_cases(yaml_mutations(), counted(lambda t: play_yaml(workdir, t, report)), cases, seed_)
    else:
        assert target is not None
        strategy, play = {
            "audiosocket": (audiosocket_cases(), play_audiosocket),
            "http": (http_requests(), play_http),
            "websocket": (websocket_cases(), play_websocket),
        }[surface]
        run_cases(strategy, counted(lambda c: play(target, c, report)), cases, seed_)
        if not target.alive():
            report.crash("the bot died")
        elif not target.healthy():
            report.crash("the bot no longer answers /health")
        report.tracebacks += target.tracebacks() - logged_before
    report.seconds = time.monotonic() - started
    return report
