"""The one shape of a transport: an object per connection that hands out the call's two ends.

As Pipecat's ``BaseTransport.input()/output()``: ``input()`` is the first processor of the
call's chain (what the caller sends becomes input audio and DTMF frames), ``output()`` the last
(bot audio goes back to the caller, paced, and the call's end goes out as the transport's
hang-up). A server builds one transport per connection and the chain between its two ends:
``bot.create_pipeline(call, head=[t.input()], tail=[t.output()])``.

The transports: ``audiosocket`` (``AudioSocketTransport``, TCP), ``websocket`` (the call API,
``WebSocketTransport``) and ``asterisk_websocket`` (chan_websocket,
``AsteriskWebSocketTransport``). Their outputs share one paced output,
``voxpipe.transports.audiosocket.transport.AudioSocketOutput`` (20 ms messages on the
process-wide ticker of ``audiosocket/pacing.py``, resampling with ``audiosocket/resample.py``,
the count of what the caller heard), each over its own ``Connection``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from voxpipe.pipelines.processor import FrameProcessor


class Transport(Protocol):
    """One connection's two ends; each method makes its processor once and then returns it."""

    def input(self) -> FrameProcessor:
        """The first processor of the call's chain."""

    def output(self) -> FrameProcessor:
        """The last processor of the call's chain."""
