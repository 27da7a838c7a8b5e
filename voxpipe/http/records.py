"""The HTTP side of caller context and call records.

- ``POST /calls/{uuid}/context``: the dialplan tells the bot who is calling before it connects
  the call, ``CURL(http://bot:8080/calls/${VOXPIPE_ID}/context,number=${CALLERID(num)}&...)``:
  a form body (or JSON), ``number``, ``name`` and any channel variables the bot lists. It answers
  ``ok``; the call with that UUID then starts with it (``voxpipe.records.context``).
- ``GET /calls/history?since=&caller=&outcome=&limit=``: recorded calls, newest first.
- ``GET /calls/{uuid}``: one call's record with its transcript and tool calls.
- ``GET /calls/{uuid}/audio``: its recording (a stereo WAV), when the bot records audio.

All behind the API's bearer token, like every endpoint. Without ``call_records`` the history
endpoints answer 404; while the database does not answer, 503.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

from fastapi import FastAPI, HTTPException, Request
from fastapi.responses import FileResponse, PlainTextResponse
from starlette.requests import ClientDisconnect

from voxpipe.records.context import PendingContexts, context_from_form, pending_contexts

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot
    from voxpipe.records.service import CallRecords

MAX_CONTEXT_BYTES = 8192


class RecordsRoutes:
    """The endpoints above, over a bot's posted contexts and (optionally) its call records."""

    def __init__(self, contexts: PendingContexts, records: CallRecords | None = None) -> None:
        self.contexts = contexts
        self.records = records

    @classmethod
    def for_bot(cls, bot: Bot) -> RecordsRoutes:
        """The routes of ``bot`` (call after ``bot.prepare()``)."""
        records = None
        if bot.config.call_records is not None or bot.config.hooks.call_ended is not None:
            from voxpipe.records.service import records_of

            records = records_of(bot)
        redis = bot.config.session_store.redis
        url = redis.url.get_secret_value() if redis is not None else None
        return cls(pending_contexts(bot, url), records)

    def _records(self) -> CallRecords:
        if self.records is None or self.records.engine is None:
            raise HTTPException(404, "this bot keeps no call records (call_records: in its file)")
        return self.records

    def add_to(self, app: FastAPI) -> None:
        """Add the endpoints to ``app`` (``/calls/history`` before ``/calls/{uuid}``)."""

        @app.post("/calls/{call_id}/context")
        async def post_context(call_id: str, request: Request) -> PlainTextResponse:
            """Who is calling, from the dialplan, before it connects the call."""
            try:
                key = str(uuid.UUID(call_id))
            except ValueError:
                raise HTTPException(400, f"{call_id!r} is not a call UUID") from None
            try:
                body = await request.body()
            except ClientDisconnect:  # a body the server could not parse: it answered 400
                raise HTTPException(400, "the request body did not arrive whole") from None
            if len(body) > MAX_CONTEXT_BYTES:
                raise HTTPException(413, f"a caller context is at most {MAX_CONTEXT_BYTES} bytes")
            await self.contexts.put(key, context_from_form(_fields(request, body)))
            return PlainTextResponse("ok")

        @app.get("/calls/history")
        async def history(
            since: str | None = None,
            caller: str | None = None,
            outcome: str | None = None,
            limit: int = 100,
        ) -> dict[str, Any]:
            """Recorded calls, newest first."""
            from voxpipe.records.queries import parse_since

            records = self._records()
            try:
                start = parse_since(since) if since else None
            except ValueError as exc:
                raise HTTPException(400, str(exc)) from None
            calls = await _answer(
                records.list_calls(
                    since=start, caller=caller, outcome=outcome, limit=max(1, min(limit, 1000))
                )
            )
            return {"count": len(calls), "calls": calls}

        @app.get("/calls/{call_id}")
        async def call_record(call_id: str) -> dict[str, Any]:
            """One recorded call with its transcript and tool calls."""
            found: dict[str, Any] | None = await _answer(self._records().get_call(call_id))
            if found is None:
                raise HTTPException(404, f"no call {call_id} in the records")
            return found

        @app.get("/calls/{call_id}/audio")
        async def call_audio(call_id: str) -> FileResponse:
            """The call's recording (stereo WAV: caller left, bot right)."""
            records = self._records()
            found = await _answer(records.get_call(call_id))
            settings = records.settings
            audio_dir = settings.audio.dir if settings and settings.audio else None
            recording = found.get("recording") if found else None
            if not recording or audio_dir is None or not _inside(recording, audio_dir):
                raise HTTPException(404, f"no recording of call {call_id}")
            path = Path(recording)
            return FileResponse(path, media_type="audio/wav", filename=f"{call_id}.wav")


def _inside(recording: str, audio_dir: str) -> bool:
    """Whether ``recording`` is a file in the recordings' directory (and nothing else is served)."""
    path = Path(recording).resolve()
    return path.is_file() and path.is_relative_to(Path(audio_dir).resolve())


def _fields(request: Request, body: bytes) -> dict[str, str]:
    """The posted fields: JSON when it says so, else a form (what ``CURL()`` sends)."""
    text = body.decode("utf-8", "replace")
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            value = json.loads(text)
        except ValueError:
            raise HTTPException(400, "the body is not JSON") from None
        if not isinstance(value, dict):
            raise HTTPException(400, "the body must be a JSON object")
        return {str(k): "" if v is None else str(v) for k, v in value.items()}
    return dict(parse_qsl(text, keep_blank_values=True))


async def _answer(work: Any) -> Any:
    """Await a records query; a database that does not answer is a 503."""
    try:
        return await work
    except HTTPException:
        raise
    except Exception as exc:
        raise HTTPException(503, f"the call records database does not answer: {exc}") from None
