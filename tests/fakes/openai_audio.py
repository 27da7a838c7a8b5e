"""A local fake of OpenAI's audio endpoints, speaking their documented wire format.

* ``POST /v1/audio/transcriptions``: a ``multipart/form-data`` upload (``file``, ``model``,
  ``language``, ``stream``...). Answers ``{"text": ...}``, or with ``stream=true`` server-sent
  events ``transcript.text.delta`` (one per word) and ``transcript.text.done``.
* ``POST /v1/audio/speech``: a JSON body (``model``, ``voice``, ``input``,
  ``response_format``); answers raw PCM16 mono at 24 kHz (a tone per word: it cannot speak)
  in HTTP chunks, as the real endpoint streams it.
* ``POST /v1/chat/completions``: answers the scripted ``chats`` (``openai_sse.openai_reply``),
  so one fake serves a whole OpenAI-speaking bot.

Each endpoint answers from its own script (``transcripts``, ``speeches``) in order: a status, a
delay before answering, or a stall (the server goes silent mid-answer). An empty transcript
script answers 500; an empty speech script speaks. Every request is recorded, the uploaded
audio included.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import io
import json
import math
import struct
import wave
from dataclasses import dataclass, field
from typing import Any

from fakes.anthropic_sse import Reply

SPEECH_RATE = 24000
WORD_MS = 200


@dataclass
class Answer:
    """One scripted answer: the transcript (transcriptions), status, delay and stall."""

    text: str = ""
    status: int = 200
    delay_s: float = 0.0
    stall: bool = False


@dataclass
class AudioRequest:
    """One request the server received."""

    path: str
    headers: dict[str, str]
    fields: dict[str, str] = field(default_factory=dict)
    file: bytes = b""
    json: Any = None

    def wav(self) -> tuple[int, bytes]:
        """The uploaded WAV file's rate and PCM."""
        with wave.open(io.BytesIO(self.file)) as w:
            return w.getframerate(), w.readframes(w.getnframes())


def speech_pcm(text: str) -> bytes:
    """What the fake voice says for ``text``: a 440 Hz beep per word, 24 kHz PCM16 mono."""
    samples = SPEECH_RATE * WORD_MS // 1000
    beep = b"".join(
        struct.pack("<h", int(6000 * math.sin(2 * math.pi * 440 * i / SPEECH_RATE)))
        for i in range(samples * 4 // 5)
    )
    word = beep + bytes(2 * (samples - samples * 4 // 5))
    return word * max(1, len(text.split()))


class FakeOpenAIAudio:
    """The fake server on 127.0.0.1; ``url`` is the API base URL (``.../v1``)."""

    def __init__(self) -> None:
        self.transcripts: collections.deque[Answer] = collections.deque()
        self.speeches: collections.deque[Answer] = collections.deque()
        self.chats: collections.deque[Reply] = collections.deque()
        self.requests: list[AudioRequest] = []
        self.arrived = asyncio.Event()
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()

    async def __aenter__(self) -> FakeOpenAIAudio:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in list(self._open):
            writer.close()
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}/v1"

    def of(self, path: str) -> list[AudioRequest]:
        """The requests to ``path`` (``/v1/audio/speech``...)."""
        return [r for r in self.requests if r.path == path]

    async def wait_for(self, path: str, count: int = 1, limit_s: float = 5.0) -> None:
        """Wait until ``count`` requests to ``path`` have arrived."""
        async with asyncio.timeout(limit_s):
            while len(self.of(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()

    # --- HTTP ------------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._open.add(writer)
        try:
            while await self._one(reader, writer):
                pass
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self._open.discard(writer)
            writer.close()

    async def _one(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        _method, path, _ = lines[0].split(" ", 2)
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        if headers.get("transfer-encoding", "").lower() == "chunked":
            body = bytearray()
            while True:
                size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                body += await reader.readexactly(size + 2)
                if size == 0:
                    break
                del body[-2:]
        else:
            body = bytearray(await reader.readexactly(int(headers.get("content-length", "0"))))
        request = AudioRequest(path.split("?")[0], headers)
        self.arrived.set()
        if request.path.endswith("/audio/transcriptions"):
            _parse_multipart(request, bytes(body), headers.get("content-type", ""))
            self.requests.append(request)
            await self._transcribe(request, writer)
        elif request.path.endswith("/chat/completions"):
            request.json = json.loads(body)
            self.requests.append(request)
            await self._chat(writer)
        elif request.path.endswith("/audio/speech"):
            request.json = json.loads(body)
            self.requests.append(request)
            await self._speak(request, writer)
        else:
            self.requests.append(request)
            await _json(writer, 404, {"error": {"message": "no such endpoint", "type": "x"}})
        return True

    async def _transcribe(self, request: AudioRequest, writer: asyncio.StreamWriter) -> None:
        answer = self.transcripts.popleft() if self.transcripts else Answer(status=500)
        await asyncio.sleep(answer.delay_s)
        if answer.status != 200:
            await _error(writer, answer.status)
            return
        if request.fields.get("stream") != "true":
            if answer.stall:
                await asyncio.sleep(3600)
            await _json(writer, 200, {"text": answer.text})
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        words = answer.text.split()
        for i, word in enumerate(words):
            delta = {"type": "transcript.text.delta", "delta": (" " if i else "") + word}
            await _chunk(writer, f"data: {json.dumps(delta)}\n\n".encode())
            await asyncio.sleep(0.01)
        if answer.stall:
            await asyncio.sleep(3600)
        done = {"type": "transcript.text.done", "text": answer.text}
        await _chunk(writer, f"data: {json.dumps(done)}\n\n".encode())
        await _chunk(writer, b"")

    async def _chat(self, writer: asyncio.StreamWriter) -> None:
        reply = self.chats.popleft() if self.chats else Reply(status=500, body={})
        if not reply.events:
            await _json(writer, reply.status, reply.body or {})
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        for _name, data in reply.events:
            text = data if isinstance(data, str) else json.dumps(data)
            await _chunk(writer, f"data: {text}\n\n".encode())
        await _chunk(writer, b"")

    async def _speak(self, request: AudioRequest, writer: asyncio.StreamWriter) -> None:
        answer = self.speeches.popleft() if self.speeches else Answer()
        await asyncio.sleep(answer.delay_s)
        if answer.status != 200:
            await _error(writer, answer.status)
            return
        pcm = speech_pcm(request.json["input"])
        writer.write(
            b"HTTP/1.1 200 OK\r\ncontent-type: application/octet-stream\r\n"
            b"transfer-encoding: chunked\r\n\r\n"
        )
        step = SPEECH_RATE * 2 // 10  # 100 ms of audio per chunk
        for start in range(0, len(pcm), step):
            await _chunk(writer, pcm[start : start + step])
            await asyncio.sleep(0.005)
            if answer.stall:
                await asyncio.sleep(3600)
        await _chunk(writer, b"")


async def _chunk(writer: asyncio.StreamWriter, data: bytes) -> None:
    writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
    await writer.drain()


async def _json(writer: asyncio.StreamWriter, status: int, body: Any) -> None:
    payload = json.dumps(body).encode()
    writer.write(
        f"HTTP/1.1 {status} X\r\ncontent-type: application/json\r\n"
        f"content-length: {len(payload)}\r\n\r\n".encode()
        + payload
    )
    await writer.drain()


async def _error(writer: asyncio.StreamWriter, status: int) -> None:
    await _json(
        writer, status, {"error": {"message": "server error", "type": "server_error", "code": None}}
    )


def _parse_multipart(request: AudioRequest, body: bytes, content_type: str) -> None:
    boundary = content_type.split("boundary=", 1)[1].strip('"').encode()
    for part in body.split(b"--" + boundary):
        if b"\r\n\r\n" not in part:
            continue
        head, _, value = part.partition(b"\r\n\r\n")
        value = value.removesuffix(b"\r\n")
        disposition = next(
            (line for line in head.decode().split("\r\n") if "content-disposition" in line.lower()),
            "",
        )
        name = disposition.split('name="', 1)[1].split('"', 1)[0] if 'name="' in disposition else ""
        if "filename=" in disposition:
            request.file = value
        elif name:
            request.fields[name] = value.decode()
