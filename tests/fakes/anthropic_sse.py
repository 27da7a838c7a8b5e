"""A local fake of the Anthropic Messages API speaking its real SSE streaming format.

``FakeHTTPServer`` is a minimal HTTP/1.1 server on 127.0.0.1 that answers each request with the
next scripted ``Reply`` (status, SSE events or a JSON body, delays, a stall) and records every
request. The ``anthropic_*`` helpers build the event sequences the real API streams.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Reply:
    """One scripted response."""

    status: int = 200
    events: list[tuple[str | None, Any]] = field(default_factory=list)
    body: Any = None
    delay_s: float = 0.0
    stall_after: int | None = None


@dataclass
class Request:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any


class FakeHTTPServer:
    """Answers requests in order from ``replies``; an empty script answers 500."""

    def __init__(self) -> None:
        self.replies: collections.deque[Reply] = collections.deque()
        self.requests: list[Request] = []
        self._server: asyncio.Server | None = None
        self._stalled: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> FakeHTTPServer:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        for writer in self._stalled:
            writer.close()
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        """Base URL of the server."""
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    def add(self, *replies: Reply) -> None:
        """Script the next responses."""
        self.replies.extend(replies)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except (asyncio.IncompleteReadError, ConnectionError):
            writer.close()
            return
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {}
        for line in lines[1:]:
            if ":" in line:
                name, value = line.split(":", 1)
                headers[name.strip().lower()] = value.strip()
        raw = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, path, headers, json.loads(raw) if raw else None))
        reply = self.replies.popleft() if self.replies else Reply(status=500, body={})
        if reply.delay_s:
            await asyncio.sleep(reply.delay_s)
        try:
            await self._respond(writer, reply)
        except ConnectionError:
            return
        if reply.stall_after is None:
            writer.close()

    async def _respond(self, writer: asyncio.StreamWriter, reply: Reply) -> None:
        if not reply.events:
            payload = json.dumps(reply.body if reply.body is not None else {}).encode()
            writer.write(
                f"HTTP/1.1 {reply.status} X\r\ncontent-type: application/json\r\n"
                f"content-length: {len(payload)}\r\nconnection: close\r\n\r\n".encode()
                + payload
            )
            await writer.drain()
            return
        writer.write(
            f"HTTP/1.1 {reply.status} OK\r\ncontent-type: text/event-stream\r\n"
            "cache-control: no-cache\r\nconnection: close\r\n\r\n".encode()
        )
        for i, (name, data) in enumerate(reply.events):
            if reply.stall_after is not None and i >= reply.stall_after:
                self._stalled.append(writer)
                return
            text = data if isinstance(data, str) else json.dumps(data)
            prefix = f"event: {name}\n" if name else ""
            writer.write(f"{prefix}data: {text}\n\n".encode())
            await writer.drain()
            await asyncio.sleep(0)


# --- Anthropic Messages API event sequences ------------------------------------------------------


def _event(data: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    return data["type"], data


def anthropic_reply(
    *texts: str, tool: tuple[str, str, list[str]] | None = None, stall_after: int | None = None
) -> Reply:
    """A streamed message: text deltas in one text block, then optionally one tool_use block
    (``(id, name, partial_json pieces)``)."""
    events = [
        _event(
            {
                "type": "message_start",
                "message": {
                    "id": "msg_fake",
                    "type": "message",
                    "role": "assistant",
                    "content": [],
                    "model": "claude-fake",
                    "stop_reason": None,
                    "stop_sequence": None,
                    "usage": {"input_tokens": 12, "output_tokens": 1},
                },
            }
        ),
        ("ping", {"type": "ping"}),
    ]
    index = 0
    if texts:
        events.append(
            _event(
                {
                    "type": "content_block_start",
                    "index": 0,
                    "content_block": {"type": "text", "text": ""},
                }
            )
        )
        for text in texts:
            events.append(
                _event(
                    {
                        "type": "content_block_delta",
                        "index": 0,
                        "delta": {"type": "text_delta", "text": text},
                    }
                )
            )
        events.append(_event({"type": "content_block_stop", "index": 0}))
        index = 1
    if tool is not None:
        tool_id, name, pieces = tool
        events.append(
            _event(
                {
                    "type": "content_block_start",
                    "index": index,
                    "content_block": {"type": "tool_use", "id": tool_id, "name": name, "input": {}},
                }
            )
        )
        for piece in pieces:
            events.append(
                _event(
                    {
                        "type": "content_block_delta",
                        "index": index,
                        "delta": {"type": "input_json_delta", "partial_json": piece},
                    }
                )
            )
        events.append(_event({"type": "content_block_stop", "index": index}))
    events.append(
        _event(
            {
                "type": "message_delta",
                "delta": {
                    "stop_reason": "tool_use" if tool else "end_turn",
                    "stop_sequence": None,
                },
                "usage": {"output_tokens": 20},
            }
        )
    )
    events.append(_event({"type": "message_stop"}))
    return Reply(events=events, stall_after=stall_after)


def anthropic_error(status: int = 529, kind: str = "overloaded_error") -> Reply:
    """An error response as the API sends it."""
    return Reply(
        status=status, body={"type": "error", "error": {"type": kind, "message": "Overloaded"}}
    )
