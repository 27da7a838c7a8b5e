"""A small client for the Asterisk REST Interface: the handful of requests a voice bot needs.

Every request is bounded by one overall timeout (``asyncio.timeout`` around httpx's own
per-phase timeouts), so a stalled Asterisk can never hold a call's setup or teardown for longer.
Failures of any kind come out as ``AriError``; the password never appears in messages.
"""

from __future__ import annotations

import asyncio
import base64
from typing import Any
from urllib.parse import urlencode, urlsplit, urlunsplit

import httpx


class AriError(Exception):
    """An ARI request failed: an HTTP error status, a timeout or a connection problem."""

    def __init__(self, method: str, path: str, status: int | None, message: str) -> None:
        self.method = method
        self.path = path
        self.status = status
        where = f"{method} /ari{path}"
        super().__init__(f"{where}: {status} {message}" if status else f"{where}: {message}")


class AriClient:
    """REST requests against ``<url>/ari`` with HTTP basic authentication."""

    def __init__(self, url: str, username: str, password: str, timeout_s: float) -> None:
        self.url = url.rstrip("/")
        self.timeout_s = timeout_s
        self._username = username
        self._password = password
        self._http = httpx.AsyncClient(
            base_url=f"{self.url}/ari",
            auth=(username, password),
            timeout=timeout_s,
            trust_env=False,
        )

    def events_url(self, app: str) -> str:
        """The WebSocket URL of the event stream for ``app`` (credentials go in a header)."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        query = urlencode({"app": app})
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/ari/events", query, ""))

    def auth_header(self) -> dict[str, str]:
        """The ``Authorization`` header for the events WebSocket."""
        token = base64.b64encode(f"{self._username}:{self._password}".encode()).decode()
        return {"Authorization": f"Basic {token}"}

    async def request(
        self,
        method: str,
        path: str,
        params: dict[str, str | int] | None = None,
        *,
        missing_ok: bool = False,
    ) -> Any:
        """Send one request; return the decoded JSON body (``None`` when empty).

        ``missing_ok``: a 404 (the channel or bridge is already gone) is not an error, which is
        what makes cleanup idempotent.
        """
        try:
            async with asyncio.timeout(self.timeout_s):
                response = await self._http.request(method, path, params=params)
        except (TimeoutError, httpx.TimeoutException):
            raise AriError(method, path, None, f"no answer within {self.timeout_s:g} s") from None
        except httpx.HTTPError as exc:
            raise AriError(method, path, None, str(exc) or type(exc).__name__) from None
        if response.status_code == 404 and missing_ok:
            return None
        if response.status_code >= 400:
            raise AriError(method, path, response.status_code, _error_message(response))
        if not response.content:
            return None
        return response.json()

    async def get_channel(self, channel_id: str) -> dict[str, Any] | None:
        """The channel's snapshot, or ``None`` when it no longer exists."""
        channel = await self.request("GET", f"/channels/{channel_id}", missing_ok=True)
        return channel if isinstance(channel, dict) else None

    async def answer(self, channel_id: str) -> None:
        """Answer a channel waiting in Stasis."""
        await self.request("POST", f"/channels/{channel_id}/answer")

    async def create_bridge(self, bridge_id: str, name: str) -> None:
        """Create a mixing bridge with the id we chose (so cleanup knows it even on a timeout)."""
        await self.request(
            "POST", "/bridges", {"type": "mixing", "bridgeId": bridge_id, "name": name}
        )

    async def add_channel(self, bridge_id: str, channel_id: str) -> None:
        """Put a channel into a bridge."""
        await self.request("POST", f"/bridges/{bridge_id}/addChannel", {"channel": channel_id})

    async def remove_channel(self, bridge_id: str, channel_id: str) -> None:
        """Take a channel out of a bridge (a bridge that is gone is fine)."""
        await self.request(
            "POST", f"/bridges/{bridge_id}/removeChannel", {"channel": channel_id}, missing_ok=True
        )

    async def delete_bridge(self, bridge_id: str) -> None:
        """Destroy a bridge; one that is already gone is fine."""
        await self.request("DELETE", f"/bridges/{bridge_id}", missing_ok=True)

    async def hangup(self, channel_id: str) -> None:
        """Hang up a channel; one that is already gone is fine."""
        await self.request(
            "DELETE", f"/channels/{channel_id}", {"reason": "normal"}, missing_ok=True
        )

    async def external_media(
        self,
        channel_id: str,
        app: str,
        external_host: str,
        data: str,
        media_format: str,
        transport: str = "audiosocket",
    ) -> dict[str, Any]:
        """Create the bot's media channel: AudioSocket (Asterisk connects to ``external_host``
        with ``data`` as the call's UUID) or chan_websocket (``transport="websocket"``: Asterisk
        dials the websocket_client.conf connection ``external_host``, or, with an empty one,
        waits for the bot on ``/media/<MEDIA_WEBSOCKET_CONNECTION_ID>``). Returns the channel.
        """
        params: dict[str, str | int] = {
            "channelId": channel_id,
            "app": app,
            "external_host": external_host,
            "encapsulation": "audiosocket",
            "transport": "tcp",
            "format": media_format,
            "data": data,
        }
        if transport == "websocket":
            params["encapsulation"] = "none"
            params["transport"] = "websocket"
            params["connection_type"] = "client" if external_host else "server"
            if not external_host:
                del params["external_host"]
        channel = await self.request("POST", "/channels/externalMedia", params)
        return channel if isinstance(channel, dict) else {}

    def media_url(self, connection_id: str) -> str:
        """chan_websocket's ``/media/<connection id>`` on Asterisk's HTTP server."""
        parts = urlsplit(self.url)
        scheme = "wss" if parts.scheme == "https" else "ws"
        return urlunsplit((scheme, parts.netloc, f"{parts.path}/media/{connection_id}", "", ""))

    async def continue_in_dialplan(
        self,
        channel_id: str,
        context: str | None = None,
        extension: str | None = None,
        priority: int | None = None,
    ) -> None:
        """Let a channel leave Stasis and go on at ``context``/``extension``/``priority``.

        Without a target it goes on at the priority after its ``Stasis()``.
        """
        target = {"context": context, "extension": extension, "priority": priority}
        params = {name: value for name, value in target.items() if value is not None}
        await self.request("POST", f"/channels/{channel_id}/continue", params)

    async def aclose(self) -> None:
        """Close the connection pool."""
        await self._http.aclose()


def _error_message(response: httpx.Response) -> str:
    """ARI's ``{"message": ...}`` body, or the reason phrase."""
    try:
        body = response.json()
    except ValueError:
        body = None
    if isinstance(body, dict) and isinstance(body.get("message"), str):
        return str(body["message"])
    return response.reason_phrase
