"""The call API's WebSocket route and the page that talks to it, on the bot's HTTP server.

``add_call_api(app, api, token, web=...)`` adds the route at ``transport.websocket.path`` and,
with ``web``, the page at ``GET /``. With ``http.token`` set, a client proves it holds the token
in one of three ways: the ``Authorization: Bearer <token>`` header (gateways), a
``bearer.<token>`` WebSocket subprotocol (browsers, which cannot set headers on a WebSocket: the
page offers ``voxpipe.call.v1`` and ``bearer.<token>``, and the server answers
``voxpipe.call.v1``), or a ``token`` query parameter (easy to try, but proxies log URLs). A
client without it gets an ``error`` event (``unauthorized``) and close code 1008. The page
itself holds nothing secret and is served without the token.
"""

from __future__ import annotations

import functools
import hmac
import html
from importlib import resources
from typing import TYPE_CHECKING

from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from voxpipe.transports.websocket.protocol import POLICY, ProtocolError, error_event

if TYPE_CHECKING:
    from fastapi import FastAPI

    from voxpipe.transports.websocket.server import CallApi

SUBPROTOCOL = "voxpipe.call.v1"
TOKEN_SUBPROTOCOL = "bearer."


class StarletteSocket:
    """A Starlette WebSocket as the call API's ``MessageSocket``."""

    __slots__ = ("_closed", "_receive", "_send")

    def __init__(self, websocket: WebSocket) -> None:
        self._receive = websocket.receive
        self._send = websocket.send
        self._closed = False

    async def receive(self) -> str | bytes:
        if self._closed:
            raise EOFError("the client closed the connection")
        message = await self._receive()
        if message["type"] == "websocket.disconnect":
            self._closed = True
            raise EOFError(f"the client closed the connection ({message.get('code', 1005)})")
        data = message.get("bytes")
        if data is not None:
            return bytes(data)
        return str(message.get("text") or "")

    async def send(self, message: str | bytes) -> None:
        kind = "bytes" if isinstance(message, bytes) else "text"
        try:
            await self._send({"type": "websocket.send", kind: message})
        except WebSocketDisconnect as exc:
            self._closed = True
            raise EOFError("the client is gone") from exc

    async def close(self, code: int, reason: str = "") -> None:
        try:
            await self._send({"type": "websocket.close", "code": code, "reason": reason})
        except WebSocketDisconnect as exc:
            raise EOFError("the client is gone") from exc


def _offered_token(websocket: WebSocket) -> list[str]:
    """Every token the client offers: header, subprotocol, query parameter."""
    found: list[str] = []
    scheme, _, given = websocket.headers.get("authorization", "").partition(" ")
    if scheme.lower() == "bearer" and given:
        found.append(given)
    for protocol in websocket.scope.get("subprotocols", []):
        if protocol.startswith(TOKEN_SUBPROTOCOL):
            found.append(protocol[len(TOKEN_SUBPROTOCOL) :])
    query = websocket.query_params.get("token")
    if query:
        found.append(query)
    return found


def authorized(websocket: WebSocket, token: str | None) -> bool:
    """Whether the client holds ``token`` (always, when there is none)."""
    if token is None:
        return True
    expected = token.encode()
    return any(hmac.compare_digest(given.encode(), expected) for given in _offered_token(websocket))


def add_call_api(app: FastAPI, api: CallApi, token: str | None, *, web: bool = False) -> None:
    """Add the call API's route (and with ``web`` the page at ``/``) to ``app``.

    Both are plain Starlette routes, outside the API's bearer dependency: the route checks the
    token its own way (see the module doc), and the page needs none.
    """

    async def call(websocket: WebSocket) -> None:
        protocols = websocket.scope.get("subprotocols", [])
        await websocket.accept(subprotocol=SUBPROTOCOL if SUBPROTOCOL in protocols else None)
        socket = StarletteSocket(websocket)
        if not authorized(websocket, token):
            refusal = ProtocolError(
                "unauthorized",
                "a valid token is required: an Authorization: Bearer header, a "
                f"'{TOKEN_SUBPROTOCOL}<token>' subprotocol or a 'token' query parameter",
                POLICY,
            )
            from voxpipe import events

            events.emit.call_rejected("unauthorized")
            try:
                await socket.send(error_event(refusal))
                await socket.close(refusal.code, refusal.reason)
            except EOFError:
                pass
            return
        client = websocket.client
        peer = f"{client.host}:{client.port}" if client else "?"
        await api.serve(socket, trace_header=websocket.headers.get("x-trace-id"), peer=peer)

    app.router.add_websocket_route(api.settings.path, call)
    if web:

        async def page(request: Request) -> HTMLResponse:
            return HTMLResponse(_page(api.bot.name, api.settings.path))

        app.add_route("/", page, methods=["GET"])


@functools.lru_cache(maxsize=8)
def _page(bot: str, path: str) -> str:
    """The page (``voxpipe/http/page.html``) for ``bot``, connecting to the call API at ``path``."""
    text = resources.files("voxpipe.http").joinpath("page.html").read_text(encoding="utf-8")
    return text.replace("{{BOT}}", html.escape(bot)).replace(
        "{{CALL_PATH}}", html.escape(path, quote=True)
    )
