"""Where a call's caller context comes from, and how it is settled before the call starts.

- ARI: the controller gives the call the caller's number and name and the channel's
  ``channelvars`` from the ``StasisStart`` event (``context_from_channel``).
- ``AudioSocket()`` / ``Dial(AudioSocket/...)``: the dialplan posts them first,
  ``POST /calls/{uuid}/context`` with a form body (``number=...&name=...&ACCOUNT=...``, what
  ``CURL(url,data)`` sends); ``PendingContexts`` keeps each one a minute, by the call's UUID,
  until the AudioSocket connection with that UUID arrives. With a Redis session store it is
  kept in Redis too (``call_context:<uuid>``), so that the worker that takes the call finds
  it whichever worker's API the dialplan posted to (``serve --workers``).

``settle_caller`` runs when a call connects, before its pipeline is built: it takes the posted
context, keeps only the variables the bot lists (``caller.variables``), and with call records
looks the customer up by the caller's number (giving up after ``lookup_timeout_s``).
"""

from __future__ import annotations

import asyncio
import collections
import json
import logging
import time
from typing import TYPE_CHECKING, Any

from voxpipe.caller_context import CallerContext

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.pipelines.context import BotContext
    from voxpipe.records.settings import CallerSettings

log = logging.getLogger("voxpipe.records")

SHARED_KEY = "caller_contexts"
REDIS_PREFIX = "call_context:"
REDIS_TIMEOUT_S = 0.3
KEEP_S = 60.0
MAX_PENDING = 10000
# Longest caller number, name or variable value kept (longer ones are cut).
MAX_VALUE = 200
NUMBER_KEYS = ("number", "caller", "num")


def _clean(value: Any) -> str:
    text = "" if value is None else str(value)
    return "".join(ch for ch in text if ch.isprintable())[:MAX_VALUE]


def context_from_form(fields: dict[str, str], way_in: str = "audiosocket") -> CallerContext:
    """A posted context: ``number`` (or ``caller``), ``name``; every other field a variable."""
    number = next((fields[k] for k in NUMBER_KEYS if fields.get(k)), "")
    variables = {
        _clean(k): _clean(v)
        for k, v in fields.items()
        if k not in (*NUMBER_KEYS, "name") and k.isidentifier()
    }
    return CallerContext(_clean(number), _clean(fields.get("name")), variables, way_in)


def context_from_channel(channel: dict[str, Any]) -> CallerContext:
    """The caller context in an ARI channel (``caller`` and ``channelvars`` of the JSON)."""
    caller = channel.get("caller")
    caller = caller if isinstance(caller, dict) else {}
    given = channel.get("channelvars")
    variables = (
        {_clean(k): _clean(v) for k, v in given.items() if isinstance(k, str)}
        if isinstance(given, dict)
        else {}
    )
    return CallerContext(_clean(caller.get("number")), _clean(caller.get("name")), variables, "ari")


class PendingContexts:
    """Contexts posted for calls that have not connected yet, by UUID, each for ``keep_s``;
    in this process, and in Redis when given its URL."""

    def __init__(
        self,
        keep_s: float = KEEP_S,
        max_entries: int = MAX_PENDING,
        redis_url: str | None = None,
    ) -> None:
        self.keep_s = keep_s
        self.max_entries = max_entries
        self._entries: collections.OrderedDict[str, tuple[float, CallerContext]] = (
            collections.OrderedDict()
        )
        self._redis: Any = None
        if redis_url is not None:
            from redis.asyncio import Redis

            self._redis = Redis.from_url(
                redis_url, socket_timeout=REDIS_TIMEOUT_S, socket_connect_timeout=REDIS_TIMEOUT_S
            )

    async def put(self, call_id: str, context: CallerContext) -> None:
        """Keep ``context`` for the call ``call_id`` (the newest post wins)."""
        self._entries.pop(call_id, None)
        self._entries[call_id] = (time.monotonic() + self.keep_s, context)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)
        if self._redis is not None:
            document = {
                "number": context.number,
                "name": context.name,
                "variables": context.variables,
                "way_in": context.way_in,
            }
            try:
                async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                    await self._redis.set(
                        REDIS_PREFIX + call_id, json.dumps(document), ex=int(self.keep_s)
                    )
            except Exception as exc:
                log.warning("caller context of %s kept on this worker only: %s", call_id, exc)

    async def take(self, call_id: str) -> CallerContext | None:
        """The context posted for ``call_id``, removed; ``None`` if none (or it expired)."""
        now = time.monotonic()
        while self._entries and next(iter(self._entries.values()))[0] <= now:
            self._entries.popitem(last=False)
        entry = self._entries.pop(call_id, None)
        if self._redis is None:
            return entry[1] if entry is not None else None
        try:
            async with asyncio.timeout(REDIS_TIMEOUT_S * 2):
                stored = await self._redis.getdel(REDIS_PREFIX + call_id)
        except Exception as exc:
            log.debug("caller context of %s not read from Redis: %s", call_id, exc)
            stored = None
        if entry is not None:
            return entry[1]
        if stored is None:
            return None
        document = json.loads(stored)
        return CallerContext(
            str(document.get("number", "")),
            str(document.get("name", "")),
            {str(k): str(v) for k, v in dict(document.get("variables") or {}).items()},
            str(document.get("way_in", "audiosocket")),
        )

    def __len__(self) -> int:
        return len(self._entries)

    async def aclose(self) -> None:
        """Close the Redis connection, if any."""
        if self._redis is not None:
            await self._redis.aclose()


def pending_contexts(ctx: BotContext, redis_url: str | None = None) -> PendingContexts:
    """The bot's posted contexts (made on first use: in Redis at ``redis_url``, else here)."""
    store = ctx.shared.get(SHARED_KEY)
    if not isinstance(store, PendingContexts):
        store = ctx.shared[SHARED_KEY] = PendingContexts(redis_url=redis_url)
    return store


async def settle_caller(ctx: BotContext, call: Call, settings: CallerSettings) -> None:
    """Give ``call`` its caller context: posted by the dialplan (or set by ARI), the variables
    ``settings`` lists only, and the customer with that number when call records know one."""
    store = ctx.shared.get(SHARED_KEY)
    posted = await store.take(call.call_id) if isinstance(store, PendingContexts) else None
    caller = call.caller or posted
    if caller is None:
        return
    wanted = settings.variables
    caller.variables = {k: v for k, v in caller.variables.items() if k in wanted}
    call.caller = caller
    if caller.number and settings.customers:
        from voxpipe.records.service import records_of

        records = records_of(ctx)
        if records is not None:
            caller.customer = await records.find_customer(caller.number, call)
