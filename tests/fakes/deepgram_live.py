"""A local fake of Deepgram's live transcription WebSocket (``/v1/listen``), from its docs.

The client connects with the options in the query string (``encoding``, ``sample_rate``,
``model``, ``interim_results``...) and ``Authorization: Token <key>``, streams raw audio as
binary messages and sends JSON control messages (``KeepAlive``, ``Finalize``,
``CloseStream``). The fake answers ``Results`` messages: interim ones (``is_final: false``) as
audio arrives, one more word of the scripted transcript per ``WORD_AUDIO_S`` of audio, and on
``Finalize`` the final one (``is_final``, ``speech_final`` and ``from_finalize`` true). A key
listed in ``refuse`` is refused at the handshake with 401.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

WORD_AUDIO_S = 0.3


@dataclass
class Session:
    """One connection: its query options, headers, the audio and control messages received."""

    options: dict[str, str]
    authorization: str
    audio: bytearray = field(default_factory=bytearray)
    controls: list[str] = field(default_factory=list)


class FakeDeepgram:
    """The fake on 127.0.0.1; ``url`` is the base URL the client takes (``ws://...``)."""

    def __init__(self) -> None:
        self.transcripts: collections.deque[str] = collections.deque()
        self.sessions: list[Session] = []
        self.refuse: set[str] = set()
        self._server: Server | None = None

    async def __aenter__(self) -> FakeDeepgram:
        self._server = await serve(
            self._handle, "127.0.0.1", 0, process_request=self._check, ping_interval=None
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._server.wait_closed(), 2)

    @property
    def url(self) -> str:
        assert self._server is not None
        port = next(iter(self._server.sockets)).getsockname()[1]
        return f"ws://127.0.0.1:{port}"

    def _check(self, connection: ServerConnection, request: Request) -> Response | None:
        if not request.path.startswith("/v1/listen"):
            return connection.respond(404, "no such endpoint\n")
        token = request.headers.get("Authorization", "").removeprefix("Token ")
        if token in self.refuse:
            return connection.respond(401, "invalid credentials\n")
        return None

    async def _handle(self, connection: ServerConnection) -> None:
        request = connection.request
        assert request is not None
        query = parse_qs(urlsplit(request.path).query)
        session = Session(
            {k: v[-1] for k, v in query.items()}, request.headers.get("Authorization", "")
        )
        self.sessions.append(session)
        rate = int(session.options.get("sample_rate", "16000"))
        heard = 0
        words_sent = 0
        with contextlib.suppress(Exception):
            async for message in connection:
                if isinstance(message, bytes):
                    session.audio += message
                    heard += len(message)
                    words = self.transcripts[0].split() if self.transcripts else []
                    due = min(len(words), int(heard / (2 * rate) / WORD_AUDIO_S))
                    if due > words_sent and session.options.get("interim_results") == "true":
                        words_sent = due
                        await connection.send(json.dumps(_results(" ".join(words[:due]), False)))
                    continue
                kind = json.loads(message).get("type")
                session.controls.append(kind)
                if kind == "Finalize":
                    text = self.transcripts.popleft() if self.transcripts else ""
                    await connection.send(json.dumps(_results(text, True)))
                    heard = words_sent = 0
                elif kind == "CloseStream":
                    await connection.close()
                    return


def _results(transcript: str, final: bool) -> dict[str, Any]:
    return {
        "type": "Results",
        "channel_index": [0, 1],
        "duration": 1.0,
        "start": 0.0,
        "is_final": final,
        "speech_final": final,
        "from_finalize": final,
        "channel": {
            "alternatives": [
                {
                    "transcript": transcript,
                    "confidence": 0.98,
                    "words": [
                        {"word": w, "start": 0.0, "end": 0.1, "confidence": 0.98}
                        for w in transcript.split()
                    ],
                }
            ]
        },
        "metadata": {
            "request_id": "fake-request",
            "model_info": {"name": "nova-3", "version": "fake", "arch": "fake"},
            "model_uuid": "fake-uuid",
        },
    }
