"""The HTTP API of a running bot: ``/health``, ``/metrics``, ``/calls``.

Bound to 127.0.0.1 unless configured otherwise; with ``http.token`` set, every request must
carry ``Authorization: Bearer <token>``. ``PUT /calls/{uuid}/log-level`` raises or lowers the
log level of one call of this worker while it runs (for debugging a single live call).
``GET /calls/{uuid}/outcome`` tells the dialplan how a call ended, in plain text
(``voxpipe.sessions.outcomes``): ``transfer,<context>,<extension>,<priority>``, ``hangup``,
``caller`` or ``error``; 404 ``unknown``. The dialplan's ``CURL()`` sends the bearer token with
``Set(CURLOPT(httpheader)=Authorization: Bearer <token>)``. With ``voxpipe.http.records``:
``POST /calls/{uuid}/context`` (the dialplan's caller context), ``GET /calls/history``,
``GET /calls/{uuid}`` and ``GET /calls/{uuid}/audio``. A request body over ``MAX_BODY_BYTES``
is answered 413 (FastAPI's ``max_body_size``), never buffered whole.
"""

from __future__ import annotations

import hmac
from typing import Any, Literal

from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from pydantic import BaseModel

from voxpipe import logs
from voxpipe.http.metrics import CONTENT_TYPE, Metrics
from voxpipe.http.outcomes import OutcomeLookup
from voxpipe.http.records import RecordsRoutes
from voxpipe.http.state import ServiceState

# The largest body any endpoint takes is a caller context (8 KiB); nothing is buffered past this.
MAX_BODY_BYTES = 64 * 1024


class LogLevel(BaseModel):
    """Body of ``PUT /calls/{uuid}/log-level``; ``null`` removes the override."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] | None


def create_app(
    state: ServiceState,
    metrics: Metrics,
    token: str | None = None,
    outcomes: OutcomeLookup | None = None,
    records: RecordsRoutes | None = None,
) -> FastAPI:
    """Build the API over ``state`` and ``metrics``; ``token`` turns on bearer authentication;
    ``outcomes`` answers for the calls that ended; ``records`` adds the caller context and
    call history endpoints (``voxpipe.http.records``)."""

    def authorize(request: Request) -> None:
        if token is None:
            return
        scheme, _, given = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(
                401, "a valid bearer token is required", {"WWW-Authenticate": "Bearer"}
            )

    app = FastAPI(
        title="voxpipe",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        dependencies=[Depends(authorize)],
        max_body_size=MAX_BODY_BYTES,
    )

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        """422 with where and what, never the input: FastAPI's own handler echoes it, and a
        body that is not UTF-8 text cannot be echoed as JSON (it answered 500)."""
        fields = ("loc", "msg", "type")
        detail = [{k: error[k] for k in fields if k in error} for error in exc.errors()]
        return JSONResponse({"detail": detail}, status_code=422)

    @app.get("/health")
    async def health() -> JSONResponse:
        """200 while the bot takes calls; 503 while draining or when a required provider is down."""
        status, body = await state.health()
        return JSONResponse(body, status_code=status)

    @app.get("/metrics")
    def prometheus() -> Response:
        """Prometheus text exposition."""
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/calls")
    async def calls() -> dict[str, Any]:
        """The calls in progress (every worker's when the session store is shared)."""
        listed = await state.calls()
        return {"count": len(listed), "calls": listed}

    @app.put("/calls/{call_id}/log-level")
    def call_log_level(call_id: str, body: LogLevel) -> dict[str, Any]:
        """Override the log level of one call in progress on this worker."""
        if call_id not in state.tracker.calls:
            raise HTTPException(404, f"no call {call_id} on this worker")
        logs.set_call_level(call_id, body.level)
        return {"uuid": call_id, "level": body.level}

    if records is not None:
        records.add_to(app)

    @app.get("/calls/{call_id}/outcome")
    async def call_outcome(call_id: str) -> PlainTextResponse:
        """How a call ended, one line the dialplan uses as is; 404 ``unknown``."""
        found = await outcomes.outcome(call_id) if outcomes is not None else None
        if found is None:
            return PlainTextResponse("unknown", status_code=404)
        return PlainTextResponse(found)

    return app
