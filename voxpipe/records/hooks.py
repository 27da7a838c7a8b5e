"""Post-call hooks: each ended call's record POSTed as JSON, signed, retried, in the background.

The body is the call record (``calls`` row, transcript and tool calls, as ``GET /calls/{uuid}``
answers). Headers: ``X-Voxpipe-Event: call_ended``, ``X-Voxpipe-Delivery`` (one id per record,
the same on every retry, to drop duplicates) and ``X-Voxpipe-Signature: t=<unix time>,
v1=<hex>``, where ``v1`` is the HMAC-SHA256 of ``"<t>.<body>"`` with the hook's ``secret``;
the receiver recomputes it and compares (and may refuse old ``t``). A non-2xx answer, a timeout
or a connection error is retried after ``backoff_s``, doubling, ``retries`` times; each failed
attempt is logged and counted (``voxpipe_errors_total{kind="hook"}``). A call never waits for
its hook; at shutdown, deliveries still trying get a few seconds, then are given up (logged).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import logging
import time
import uuid
from typing import TYPE_CHECKING, Any

from voxpipe import events

if TYPE_CHECKING:
    from voxpipe.records.settings import WebhookSettings

log = logging.getLogger("voxpipe.records")

# Deliveries in flight at once, at most; beyond that a record's hook is given up (and logged).
MAX_PENDING = 1000


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """The ``v1`` value: hex HMAC-SHA256 of ``"<timestamp>.<body>"``."""
    message = timestamp.encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signed_headers(secret: str, body: bytes, event: str, delivery: str) -> dict[str, str]:
    """The headers of one attempt to deliver ``body``."""
    timestamp = str(int(time.time()))
    return {
        "Content-Type": "application/json",
        "User-Agent": "voxpipe",
        "X-Voxpipe-Event": event,
        "X-Voxpipe-Delivery": delivery,
        "X-Voxpipe-Signature": f"t={timestamp},v1={signature(secret, timestamp, body)}",
    }


class HookSender:
    """Delivers one hook's POSTs, each on its own background task."""

    def __init__(self, settings: WebhookSettings, event: str = "call_ended") -> None:
        import httpx

        self.settings = settings
        self.event = event
        self._secret = settings.secret.get_secret_value()
        self._client = httpx.AsyncClient(timeout=settings.timeout_s, follow_redirects=False)
        self._tasks: set[asyncio.Task[None]] = set()
        self.delivered = 0
        self.failures = 0
        self.given_up = 0

    def send(self, document: dict[str, Any]) -> None:
        """Deliver ``document`` in the background (returns at once)."""
        if len(self._tasks) >= MAX_PENDING:
            self.given_up += 1
            log.error(
                "hook %s: %d deliveries already pending; one dropped", self.event, MAX_PENDING
            )
            events.emit.error(None, "hook")
            return
        body = json.dumps(document, ensure_ascii=False, default=str).encode()
        task = asyncio.get_running_loop().create_task(
            self._deliver(body, str(uuid.uuid4())), name=f"hook-{self.event}"
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _deliver(self, body: bytes, delivery: str) -> None:
        settings = self.settings
        for attempt in range(settings.retries + 1):
            headers = signed_headers(self._secret, body, self.event, delivery)
            try:
                response = await self._client.post(settings.url, content=body, headers=headers)
                if 200 <= response.status_code < 300:
                    self.delivered += 1
                    return
                problem = f"HTTP {response.status_code}"
            except Exception as exc:
                problem = f"{type(exc).__name__}: {exc}".strip()
            self.failures += 1
            events.emit.error(None, "hook")
            if attempt < settings.retries:
                delay = settings.backoff_s * 2**attempt
                log.warning(
                    "hook %s to %s failed (%s); retry %d of %d in %.1f s",
                    self.event,
                    settings.url,
                    problem,
                    attempt + 1,
                    settings.retries,
                    delay,
                )
                await asyncio.sleep(delay)
            else:
                self.given_up += 1
                log.error(
                    "hook %s to %s failed (%s) after %d attempts; given up (delivery %s)",
                    self.event,
                    settings.url,
                    problem,
                    attempt + 1,
                    delivery,
                )

    async def close(self, grace_s: float = 5.0) -> None:
        """Give deliveries in flight ``grace_s`` to finish, give up the rest, close the client."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=grace_s)
        left = [task for task in self._tasks if not task.done()]
        for task in left:
            task.cancel()
        if left:
            await asyncio.gather(*left, return_exceptions=True)
            self.given_up += len(left)
            log.error("hook %s: %d deliveries given up at shutdown", self.event, len(left))
        await self._client.aclose()
