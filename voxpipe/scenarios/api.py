"""How a call ended, asked of a running bot's HTTP API (``run-pipeline test --api URL``).

Over ``--connect`` the caller only sees the socket close: a transfer and a hang-up look the same.
The bot's API answers ``GET /calls/{uuid}/outcome`` (the line the dialplan reads:
``transfer,<context>,<extension>,<priority>``, ``hangup``, ``caller`` or ``error``), so the
runner asks it once the call is over.
"""

from __future__ import annotations

import asyncio
import time

# How long to keep asking while the API does not know the call yet (404), and how often.
UNKNOWN_WAIT_S = 5.0
POLL_S = 0.1


class OutcomeApi:
    """The outcome endpoint of a running bot; ``token`` is sent as a bearer token."""

    def __init__(self, url: str, token: str | None = None, timeout_s: float = 10.0) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.timeout_s = timeout_s

    async def outcome(self, call_id: str) -> str:
        """The call's outcome line; ``RuntimeError`` with the reason when it cannot be had."""
        try:
            import httpx
        except ImportError:  # pragma: no cover - the http extra is missing
            raise RuntimeError("--api needs httpx: pip install 'voxpipe[http]'") from None
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        where = f"{self.url}/calls/{call_id}/outcome"
        deadline = time.monotonic() + UNKNOWN_WAIT_S
        async with httpx.AsyncClient(timeout=self.timeout_s, headers=headers) as client:
            while True:
                try:
                    response = await client.get(where)
                except httpx.HTTPError as exc:
                    raise RuntimeError(f"cannot ask the bot's API at {self.url}: {exc}") from None
                if response.status_code == 200:
                    return response.text.strip()
                if response.status_code == 401:
                    raise RuntimeError(
                        f"the bot's API at {self.url} refused the token (401): give --token "
                        "or VOXPIPE_API_TOKEN, the bot's http.token"
                    )
                if response.status_code != 404:
                    raise RuntimeError(
                        f"the bot's API answered {response.status_code} for {where}: "
                        f"{response.text.strip()[:200]}"
                    )
                if time.monotonic() >= deadline:
                    raise RuntimeError(
                        f"the bot's API at {self.url} does not know call {call_id} (404): "
                        "is it the API of the bot called?"
                    )
                await asyncio.sleep(POLL_S)
