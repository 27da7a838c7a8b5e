"""One chan_websocket call: the connection, and the transport that hands out its two ends.

``AsteriskWebSocketTransport(connection, settings)`` gives ``input()``, the first processor
(Asterisk's binary media becomes input audio at the pipeline rate; ``DTMF_END`` a DTMF frame;
``MEDIA_XOFF``/``MEDIA_XON`` pause and resume the output; ``MEDIA_MARK_PROCESSED`` counts what
the caller heard), and ``output()``, the last: the AudioSocket transport's paced output over a
``MediaConnection`` that sends each 20 ms message as a binary frame in the channel's format
(slin at its rate, or G.711), ``send_ahead_s`` ahead of real time (Asterisk plays from its own
queue), with ``ANSWER`` when the chain has started, ``START_MEDIA_BUFFERING`` /
``STOP_MEDIA_BUFFERING`` around each stretch of speech, ``MARK_MEDIA`` after the pieces of each
sentence, ``FLUSH_MEDIA`` on barge-in and ``HANGUP`` at the end. While Asterisk says
``MEDIA_XOFF`` nothing is sent and nothing is dropped: the audio waits in the output's queue.

Sending goes through the connection's outbox, written by one writer task per connection, so
that the output (called from the ticker, which must not wait) never awaits the socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from voxpipe import events
from voxpipe.frames import (
    DOWNSTREAM,
    Direction,
    DTMFFrame,
    Frame,
    InputAudioFrame,
    StartFrame,
    Utterance,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.sessions import outcomes
from voxpipe.transports import g711
from voxpipe.transports.asterisk_websocket.protocol import (
    MediaStart,
    ProtocolError,
    command,
    parse_digit,
    parse_event,
)
from voxpipe.transports.audiosocket.protocol import Kind
from voxpipe.transports.audiosocket.resample import Quality, Resampler
from voxpipe.transports.audiosocket.settings import AudioSocketSettings
from voxpipe.transports.audiosocket.transport import (
    LIVE_MESSAGES,
    STOP_AFTER_S,
    AudioSocketOutput,
)
from voxpipe.transports.outbox import NORMAL, MessageLine

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.transports.asterisk_websocket.settings import AsteriskWebSocketSettings

_HANGUP = int(Kind.HANGUP)
# Asterisk makes silence itself when its queue is empty: no keepalive.
_NO_KEEPALIVE_S = 1e9
# A MARK_MEDIA goes out after at most this many messages carrying the end of a sentence's
# pieces (and whenever the output's queue is empty): 100 ms of precision in what was heard.
MARK_EVERY = 5
# WebSocket close code (RFC 6455).
INVALID_DATA = 1007


class MediaSocket(Protocol):
    """A WebSocket to or from Asterisk, as ``websockets``' connections offer it."""

    async def recv(self) -> str | bytes:
        """The next whole message (raises ``ConnectionClosed`` once closed)."""

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""

    async def close(self, code: int = NORMAL, reason: str = "") -> None:
        """Close the connection."""


class MediaConnection(MessageLine):
    """One chan_websocket connection, shared by the call's input and output.

    To the AudioSocket output it is a ``Connection``: ``send`` takes an AudioSocket message
    (3-byte header, PCM16) and queues its audio, encoded in the channel's format, as a binary
    message; the hang-up message becomes ``HANGUP``. ``paused`` is ``MEDIA_XOFF``.
    """

    __slots__ = ("buffering", "paused", "start")

    def __init__(self, socket: MediaSocket, call: Call, start: MediaStart) -> None:
        super().__init__(socket, call)
        self.start = start
        self.caller_rate = start.rate
        self.paused = False
        self.buffering = False

    # --- what the AudioSocket output calls ----------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue one AudioSocket message's audio in the channel's format (or ``HANGUP``)."""
        if self.closed:
            return False
        if data[0] == _HANGUP:
            return self.command("HANGUP")
        if not self.buffering:
            # A stretch of speech begins: Asterisk keeps a short remainder for the next message
            # (STOP_MEDIA_BUFFERING plays it) instead of dropping it.
            self.buffering = True
            self.command("START_MEDIA_BUFFERING")
        law = self.start.law
        pcm = data[3:]
        self.messages_sent += 1
        return self._put(g711.encode(pcm, law) if law else pcm)

    # --- chan_websocket's own messages ---------------------------------------------------------

    def command(self, name: str, argument: str = "") -> bool:
        """Queue a control message, in the form Asterisk speaks on this channel."""
        if self.closed:
            return False
        return self._put(command(name, self.start.json, argument))

    def flush(self) -> None:
        """Barge-in: drop the audio not yet written and tell Asterisk to drop its queue."""
        if self.closed:
            return
        # ANSWER and HANGUP stay; marks and buffering commands of the dropped audio go.
        kept: list[str | bytes] = [
            m for m in self._outbox if isinstance(m, str) and "MEDIA" not in m
        ]
        self.buffering = False  # FLUSH_MEDIA ends buffering too
        self.replace_queued(command("FLUSH_MEDIA", self.start.json), kept)

    def fail(self, reason: str) -> None:
        """Asterisk sent what chan_websocket never sends: close with 1007 (the call ends)."""
        if self.closed:
            return
        self.close_code, self.close_reason = INVALID_DATA, reason[:120]
        self.close("bot")


class AsteriskWebSocketInput(FrameProcessor):
    """First processor: Asterisk's messages, read once the chain has started, go down the
    chain as input audio (resampled to the pipeline rate) and DTMF frames."""

    __slots__ = ("_conn", "_max_bytes", "_quality", "output")

    def __init__(self, connection: MediaConnection, settings: AsteriskWebSocketSettings) -> None:
        super().__init__(name="asterisk_websocket.in")
        self._conn = connection
        self._max_bytes = settings.max_message_bytes
        self._quality: Quality = settings.resample_quality
        self.output: AsteriskWebSocketOutput | None = None

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is StartFrame and direction is DOWNSTREAM:
            # Only now: audio must not overtake the start frame down the chain.
            self.create_task(self._read(), name="asterisk_websocket.read")

    async def _read(self) -> None:
        conn, task, call = self._conn, self.task, self.call
        try:
            await self._read_messages()
        except EOFError:
            if conn.closed_by != "bot":
                if not conn.closed_by:
                    outcomes.settle(call, outcomes.CALLER)
                reason = conn.closed_by or "caller hung up"
                conn.close("caller")
                task.cancel(reason)
        except ProtocolError as exc:
            if conn.closed:
                return
            call.log.warning("chan_websocket protocol error, ending the call: %s", exc)
            events.emit.error(call, "protocol")
            conn.fail(str(exc))
            task.cancel(f"protocol error: {exc}")

    async def _read_messages(self) -> None:
        from websockets.exceptions import ConnectionClosed

        conn, push, recv = self._conn, self.push_frame, self._conn.socket.recv
        rate, limit = self.call.sample_rate, self._max_bytes
        start = conn.start
        law, width = start.law, 1 if start.law else 2
        resampler = Resampler(start.rate, rate, self._quality)
        while True:
            try:
                message = await recv()
            except ConnectionClosed:
                raise EOFError("Asterisk closed the WebSocket") from None
            if len(message) > limit:
                raise ProtocolError(f"a message of {len(message)} bytes (at most {limit})")
            if type(message) is bytes:
                if len(message) % width:
                    raise ProtocolError(
                        f"{start.format} media of {len(message)} bytes (not whole samples)"
                    )
                pcm = resampler.process(g711.decode(message, law) if law else message)
                if pcm:
                    conn.live = LIVE_MESSAGES
                    await push(InputAudioFrame(pcm, rate))
                    conn.live = 0
            elif not await self._handle(str(message)):
                return

    async def _handle(self, text: str) -> bool:
        """A control message during the call; ``False`` once the call is over."""
        found = parse_event(text)
        name, fields, call, conn = found.name, found.fields, self.call, self._conn
        if name == "DTMF_END":
            await self.push_frame(DTMFFrame(parse_digit(fields)))
        elif name == "MEDIA_MARK_PROCESSED":
            if self.output is not None:
                self.output.mark_processed(str(fields.get("correlation_id", "")))
        elif name == "MEDIA_XOFF":
            call.log.info("Asterisk's queue is full (MEDIA_XOFF): holding the bot's audio")
            conn.paused = True
        elif name == "MEDIA_XON":
            call.log.info("Asterisk's queue has room again (MEDIA_XON)")
            conn.paused = False
        elif name == "ERROR":
            call.log.warning("Asterisk reports an error: %s", fields.get("error_text", fields))
        elif name == "MEDIA_START":
            raise ProtocolError("a second MEDIA_START on the same connection")
        else:  # MEDIA_BUFFERING_COMPLETED, QUEUE_DRAINED, STATUS, and what comes later
            call.log.debug("chan_websocket %s %s", name, fields)
        return True


class AsteriskWebSocketOutput(AudioSocketOutput):
    """Last processor: bot audio ``send_ahead_s`` ahead of real time in the channel's format,
    ``ANSWER`` when the chain has started, ``FLUSH_MEDIA`` on barge-in, and ``MARK_MEDIA`` so
    that what the caller heard is counted when Asterisk plays it, not when it is sent."""

    __slots__ = (
        "SEND_AHEAD_S",
        "STOP_AFTER_S",
        "_awaiting",
        "_mark_seq",
        "_marked_at",
        "_unmarked",
    )

    _conn: MediaConnection

    def __init__(self, connection: MediaConnection, settings: AsteriskWebSocketSettings) -> None:
        super().__init__(connection, _paced_settings(connection.start.rate, settings))
        self.name = "asterisk_websocket.out"
        self.SEND_AHEAD_S = settings.send_ahead_s
        self.STOP_AFTER_S = STOP_AFTER_S + settings.send_ahead_s
        self._awaiting: dict[str, list[Utterance]] = {}
        self._unmarked: list[Utterance] = []
        self._mark_seq = 0
        self._marked_at = 0

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if type(frame) is StartFrame and direction is DOWNSTREAM:
            self._conn.command("ANSWER")
        await super().process_frame(frame, direction)

    def interrupt(self) -> None:
        super().interrupt()
        self._unmarked.clear()
        self._conn.flush()

    def tick(self, now: float) -> None:
        super().tick(now)
        if self._unmarked and not self._queue:
            self._send_mark()
        conn = self._conn
        if conn.buffering and not self._speaking and not self._queue:
            conn.buffering = False
            conn.command("STOP_MEDIA_BUFFERING")

    # --- what the caller heard ----------------------------------------------------------------

    def _count_played(self, marks: list[Utterance]) -> None:
        """Sent, not yet heard: the count waits for Asterisk to play up to a ``MARK_MEDIA``."""
        self._unmarked.extend(marks)
        if self._conn.messages_sent - self._marked_at >= MARK_EVERY:
            self._send_mark()

    def _send_mark(self) -> None:
        self._mark_seq += 1
        mark = f"vp{self._mark_seq}"
        self._awaiting[mark] = self._unmarked
        self._unmarked = []
        self._marked_at = self._conn.messages_sent
        self._conn.command("MARK_MEDIA", mark)

    def mark_processed(self, mark: str) -> None:
        """Asterisk played the audio sent before ``mark``."""
        marks = self._awaiting.pop(mark, None)
        if marks:
            AudioSocketOutput._count_played(self, marks)


class AsteriskWebSocketTransport:
    """The two ends of one chan_websocket call over ``connection`` (see ``transports.base``)."""

    def __init__(self, connection: MediaConnection, settings: AsteriskWebSocketSettings) -> None:
        self.connection = connection
        self.settings = settings
        self._input: AsteriskWebSocketInput | None = None
        self._output: AsteriskWebSocketOutput | None = None

    def input(self) -> AsteriskWebSocketInput:
        """The first processor of the call's chain (made once)."""
        if self._input is None:
            self._input = AsteriskWebSocketInput(self.connection, self.settings)
            self._input.output = self.output()
        return self._input

    def output(self) -> AsteriskWebSocketOutput:
        """The last processor of the call's chain (made once)."""
        if self._output is None:
            self._output = AsteriskWebSocketOutput(self.connection, self.settings)
        return self._output


_paced: dict[tuple[int, Quality], AudioSocketSettings] = {}


def _paced_settings(rate: int, settings: AsteriskWebSocketSettings) -> AudioSocketSettings:
    """What the AudioSocket output needs to know, for audio at ``rate`` to Asterisk."""
    quality: Quality = settings.resample_quality
    found = _paced.get((rate, quality))
    if found is None:
        fields: dict[str, Any] = {
            "output_rate": rate,
            "keepalive_s": _NO_KEEPALIVE_S,
            "resample_quality": quality,
        }
        found = _paced[(rate, quality)] = AudioSocketSettings(**fields)
    return found
