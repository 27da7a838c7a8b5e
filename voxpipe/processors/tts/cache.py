"""The phrase cache: a bot's recently spoken sentences and its standby clips, synthesised."""

from __future__ import annotations

import asyncio
import collections
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable


class PhraseCache:
    """The bot's most recently spoken sentences, kept synthesised (least recently used goes).

    Greetings, prompts and fillers recur in every call: from the cache they play at once and
    cost no synthesis. Only sentences up to ``MAX_CHARS`` long are kept. Standby clips (the
    ``on_error`` lines, made at ``prepare``) are pinned: never evicted, kept even with a
    ``size`` of 0, and always played from here, so a failing provider is never asked for them
    (its error would only set off another filler).

    A burst of calls wants the same sentence at the same moment (twenty callers placed at once
    hear the same greeting): ``shared`` synthesises it once for all of them.
    """

    MAX_CHARS = 200

    def __init__(self, size: int) -> None:
        self.size = size
        self._entries: collections.OrderedDict[str, tuple[bytes, int]] = collections.OrderedDict()
        self._pinned: dict[str, tuple[bytes, int]] = {}
        self._pending: dict[str, asyncio.Future[tuple[bytes, int]]] = {}

    async def shared(
        self, text: str, synthesize: Callable[[str], Awaitable[tuple[bytes, int]]]
    ) -> tuple[bytes, int]:
        """``synthesize(text)``, or the result of the same synthesis already under way for
        another call (its failure is every waiting call's; one cancelled is done again)."""
        pending = self._pending.get(text)
        if pending is not None:
            try:
                return await asyncio.shield(pending)
            except asyncio.CancelledError:
                if not pending.cancelled():
                    raise  # this call was cancelled, not the synthesis
        future: asyncio.Future[tuple[bytes, int]] = asyncio.get_running_loop().create_future()
        self._pending[text] = future
        try:
            spoken = await synthesize(text)
        except BaseException as exc:
            if isinstance(exc, Exception):
                future.set_exception(exc)
                future.exception()  # retrieved: waiters have their own copy
            else:
                future.cancel()
            raise
        else:
            future.set_result(spoken)
            return spoken
        finally:
            if self._pending.get(text) is future:
                del self._pending[text]

    def get(self, text: str) -> tuple[bytes, int] | None:
        """The audio and rate of ``text``, if kept."""
        pinned = self._pinned.get(text)
        if pinned is not None:
            return pinned
        found = self._entries.get(text)
        if found is not None:
            self._entries.move_to_end(text)
        return found

    def put(self, text: str, audio: bytes, rate: int) -> None:
        """Keep the audio of ``text``."""
        if self.size <= 0 or len(text) > self.MAX_CHARS:
            return
        self._entries[text] = (audio, rate)
        self._entries.move_to_end(text)
        while len(self._entries) > self.size:
            self._entries.popitem(last=False)

    def pin(self, text: str, audio: bytes, rate: int) -> None:
        """Keep ``text`` as a standby clip for as long as the bot runs."""
        self._pinned[text] = (audio, rate)
        self._entries.pop(text, None)

    def pinned(self, text: str) -> bool:
        """Whether ``text`` is a standby clip."""
        return text in self._pinned
