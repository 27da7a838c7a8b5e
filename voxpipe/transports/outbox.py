"""A call's line over a WebSocket: the outbox and writer both WebSocket transports share.

chan_websocket and the call API each carry a call over one WebSocket. To the AudioSocket output
(pacing, resampling) the line is a ``Connection``; behind it, every message (audio as binary,
control as text) goes into one ordered outbox that a writer task sends. The outbox is bounded:
a peer that stops reading ends the call rather than letting its audio pile up. On barge-in the
audio not yet written is dropped and the peer is told to drop its own (``replace_queued``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from typing import Any

from voxpipe.pipelines.call import Call
from voxpipe.transports.audiosocket.transport import MAX_SEND_BACKLOG, Connection

# WebSocket close code (RFC 6455).
NORMAL = 1000


class MessageLine(Connection):
    """A ``Connection`` whose messages go to a WebSocket through an ordered, bounded outbox.

    Subclasses say how the socket is closed (``close_socket``) and which errors mean the peer
    is gone (``PEER_GONE``).
    """

    __slots__ = (
        "_backlog",
        "_closing",
        "_outbox",
        "_wake",
        "call",
        "close_code",
        "close_reason",
        "socket",
    )

    PEER_GONE: tuple[type[BaseException], ...] = (Exception,)

    def __init__(self, socket: Any, call: Call) -> None:
        # Not Connection.__init__: there is no stream reader or writer here.
        self.socket = socket
        self.call = call
        self.caller_rate: int | None = None
        self.live = 0
        self.closed = False
        self.closed_by = ""
        self.messages_sent = 0
        self.close_code = NORMAL
        self.close_reason = ""
        self._outbox: collections.deque[str | bytes] = collections.deque()
        self._backlog = 0
        self._wake = asyncio.Event()
        self._closing = False

    def close(self, by: str) -> None:
        """Send what is queued, then close the WebSocket."""
        self.expect_close(by)
        self.closed = True
        self._closing = True
        self._wake.set()

    def replace_queued(self, first: str, keep: list[str | bytes]) -> None:
        """Barge-in: the outbox becomes ``first`` then ``keep`` (the audio not yet written goes)."""
        self._outbox.clear()
        self._outbox.append(first)
        self._outbox.extend(keep)
        self._backlog = sum(len(m) for m in self._outbox)
        self._wake.set()

    def _put(self, message: str | bytes) -> bool:
        self._outbox.append(message)
        self._backlog += len(message)
        if self._backlog > MAX_SEND_BACKLOG:
            # The peer stopped reading: the call cannot go on, and its audio must not pile up.
            self.expect_close("peer stopped reading")
            self.closed = True
            self._closing = True
            self._outbox.clear()
            self._wake.set()
            return False
        self._wake.set()
        return True

    async def close_socket(self) -> None:
        """Close the WebSocket once everything queued is written."""
        await self.socket.close(self.close_code, self.close_reason)

    async def run_writer(self) -> None:
        """Write the outbox in order until the connection is closed; then close the socket."""
        outbox, socket = self._outbox, self.socket
        try:
            while True:
                while outbox:
                    message = outbox.popleft()
                    self._backlog -= len(message)
                    await socket.send(message)
                if self._closing:
                    break
                self._wake.clear()
                await self._wake.wait()
            await self.close_socket()
        except self.PEER_GONE:
            self.closed = True
            outbox.clear()

    async def drained(self, timeout_s: float, writer: asyncio.Task[None]) -> None:
        """Wait for ``writer`` to finish what is queued (at most ``timeout_s``)."""
        if not self._closing:
            self.close("bot")
        done, _ = await asyncio.wait({writer}, timeout=timeout_s)
        if not done:
            writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await writer
