"""One call over the call API: the connection, and the transport that hands out its two ends.

``WebSocketTransport(connection, settings, rate)`` gives ``input()``, the first processor of
the call's chain (the client's messages become input audio and DTMF frames), and ``output()``,
the last (bot audio goes back paced at real time). The output is the AudioSocket transport's
output (pacing on the process-wide ticker, the flush on interruption, the count of what the
caller heard, outcomes) over a ``CallConnection``, which sends each 20 ms message's PCM as a
binary message and adds the call API's events: ``call_accepted`` once every processor has
started, ``stop_audio`` on barge-in, ``transcript`` lines and ``call_terminated``.

Sending goes through the connection's outbox, written by one writer task per connection, so
that the output (called from the ticker, which must not wait) never awaits the socket.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from voxpipe import events
from voxpipe.frames import (
    DOWNSTREAM,
    CancelFrame,
    Direction,
    DTMFFrame,
    Frame,
    InputAudioFrame,
    StartFrame,
    TranscriptionFrame,
    Utterance,
)
from voxpipe.pipelines.processor import FrameProcessor
from voxpipe.sessions import outcomes
from voxpipe.transports.audiosocket.protocol import Kind
from voxpipe.transports.audiosocket.resample import Quality, Resampler
from voxpipe.transports.audiosocket.settings import AudioSocketSettings
from voxpipe.transports.audiosocket.transport import (
    LIVE_MESSAGES,
    AudioSocketOutput,
)
from voxpipe.transports.outbox import MessageLine
from voxpipe.transports.websocket.protocol import (
    GOING_AWAY,
    INTERNAL_ERROR,
    NORMAL,
    STOP_AUDIO,
    TOO_BIG,
    ProtocolError,
    error_event,
    event,
    parse_digit,
    parse_event,
)

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call
    from voxpipe.transports.websocket.settings import WebSocketSettings


class MessageSocket(Protocol):
    """An accepted WebSocket, as the call API uses it (the HTTP server adapts its own)."""

    async def receive(self) -> str | bytes:
        """The next whole message; ``EOFError`` once the client has closed the connection."""

    async def send(self, message: str | bytes) -> None:
        """Send one text (``str``) or binary (``bytes``) message."""

    async def close(self, code: int, reason: str = "") -> None:
        """Close the connection with ``code``."""


_HANGUP = int(Kind.HANGUP)
# Outbound AudioSocket settings the output needs, per client rate: no keepalive (the WebSocket
# layer pings), the client's rate both ways.
_NO_KEEPALIVE_S = 1e9


class CallConnection(MessageLine):
    """One call API connection, shared by the call's input and output.

    To the AudioSocket output it is a ``Connection``: ``send`` takes an AudioSocket message
    (3-byte header, PCM) and queues the PCM as a binary message; the hang-up message becomes
    ``call_terminated`` with the call's outcome. ``close`` lets the writer send what is queued,
    then closes the WebSocket with ``close_code``.
    """

    __slots__ = ("accept_message", "accepted")

    PEER_GONE = (OSError, EOFError, RuntimeError)  # the client is gone

    def __init__(self, socket: MessageSocket, call: Call, accept_message: str) -> None:
        super().__init__(socket, call)
        self.accept_message = accept_message
        self.accepted = False

    # --- what the AudioSocket output calls ----------------------------------------------------

    def send(self, data: bytes) -> bool:
        """Queue one AudioSocket message's audio (or, for the hang-up, ``call_terminated``)."""
        if self.closed:
            return False
        if data[0] == _HANGUP:
            return self._put(terminated_event(self.call))
        self.messages_sent += 1
        return self._put(data[3:])

    # --- the call API's own messages -----------------------------------------------------------

    def accept(self) -> None:
        """Every processor has started: tell the client (``call_accepted``)."""
        if not self.accepted and not self.closed:
            self.accepted = True
            self._put(self.accept_message)

    def event(self, text: str) -> None:
        """Queue an event for the client (once the call is accepted, until it is closed)."""
        if self.accepted and not self.closed:
            self._put(text)

    def stop_audio(self) -> None:
        """Barge-in: drop the audio not yet written and tell the client to drop its own."""
        if not self.accepted or self.closed:
            return
        self.replace_queued(STOP_AUDIO, [m for m in self._outbox if isinstance(m, str)])

    def fail(self, error: ProtocolError) -> None:
        """The client sent what the call API cannot take: say why, then close."""
        if self.closed:
            return
        self.close_code, self.close_reason = error.code, error.reason
        self._put(error_event(error))
        self.close("bot")

    def terminate(self, reason: str, message: str, code: int) -> None:
        """The bot ends the call at once (shutdown, failure): say why, then close."""
        if self.closed:
            return
        self.close_code, self.close_reason = code, reason
        if self.accepted:
            self._put(event("call_terminated", reason=reason, message=message))
        self.close("bot")

    # --- the writer ----------------------------------------------------------------------------

    async def close_socket(self) -> None:
        """Close the socket once the call was accepted (before, the call API answers
        ``call_failed``), and not when the client stopped reading."""
        if self.accepted and self.closed_by != "peer stopped reading":
            await super().close_socket()


def terminated_event(call: Call) -> str:
    """``call_terminated`` for the bot's hang-up: how it ended (a transfer names its target)."""
    outcome = outcomes.outcome_of(call) or outcomes.HANGUP
    if outcome.startswith("transfer,"):
        _, context, extension, priority = outcome.split(",", 3)
        return event(
            "call_terminated",
            reason="transfer",
            context=context,
            extension=extension,
            priority=int(priority),
        )
    return event("call_terminated", reason=outcome)


class WebSocketInput(FrameProcessor):
    """First processor: the client's messages, read once the call has started, go down the
    chain as input audio (resampled to the pipeline rate) and DTMF frames."""

    __slots__ = ("_conn", "_max_bytes", "_quality", "_rate")

    def __init__(self, connection: CallConnection, settings: WebSocketSettings, rate: int) -> None:
        super().__init__(name="websocket.in")
        self._conn = connection
        self._max_bytes = settings.max_message_bytes
        self._rate = rate
        self._quality: Quality = settings.resample_quality
        connection.caller_rate = rate

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        await self.push_frame(frame, direction)
        if type(frame) is StartFrame and direction is DOWNSTREAM:
            # Only now: audio must not overtake the start frame down the chain.
            self.create_task(self._read(), name="websocket.read")

    async def _read(self) -> None:
        conn, task, call = self._conn, self.task, self.call
        try:
            await self._read_messages()
        except EOFError:
            if conn.closed_by != "bot":
                if not conn.closed_by:
                    outcomes.settle(call, outcomes.CALLER)
                reason = conn.closed_by or "caller hung up"
                conn.close("caller")  # nothing more can reach the client
                task.cancel(reason)
        except ProtocolError as exc:
            if conn.closed:
                return
            call.log.warning("call API: %s, ending the call", exc.message)
            events.emit.error(call, "protocol")
            conn.fail(exc)
            task.cancel(f"protocol error: {exc.message}")

    async def _read_messages(self) -> None:
        conn, push, receive = self._conn, self.push_frame, self._conn.socket.receive
        rate, limit = self.call.sample_rate, self._max_bytes
        resampler = Resampler(self._rate, rate, self._quality)
        while True:
            message = await receive()
            if len(message) > limit:
                raise ProtocolError(
                    "too_large",
                    f"a message is at most {limit} bytes; this one has {len(message)}",
                    TOO_BIG,
                )
            if type(message) is bytes:
                if len(message) & 1:
                    raise ProtocolError(
                        "bad_audio", "audio messages hold whole 16-bit samples (an even length)"
                    )
                pcm = resampler.process(message)
                if pcm:
                    conn.live = LIVE_MESSAGES
                    await push(InputAudioFrame(pcm, rate))
                    conn.live = 0
            elif not await self._handle(str(message)):
                return

    async def _handle(self, text: str) -> bool:
        """A text message during the call; ``False`` once the call is over."""
        name, payload = parse_event(text)
        if name == "dtmf":
            await self.push_frame(DTMFFrame(parse_digit(payload)))
        elif name == "call_terminated":
            outcomes.settle(self.call, outcomes.CALLER)
            self._conn.close("caller")
            self.task.cancel("caller hung up")
            return False
        elif name == "call_start":
            raise ProtocolError("bad_message", "call_start was already sent on this connection")
        else:
            raise ProtocolError(
                "bad_message", f"unknown event {name!r} (expected dtmf or call_terminated)"
            )
        return True


class WebSocketOutput(AudioSocketOutput):
    """Last processor: bot audio paced at real time, one binary message per 20 ms, and the
    call API's events (``call_accepted``, ``stop_audio``, ``transcript``)."""

    __slots__ = ()

    _conn: CallConnection

    async def process_frame(self, frame: Frame, direction: Direction) -> None:
        if direction is DOWNSTREAM:
            kind = type(frame)
            if kind is StartFrame:
                self._conn.accept()
            elif kind is TranscriptionFrame:
                assert isinstance(frame, TranscriptionFrame)
                if frame.text.strip():
                    self._conn.event(event("transcript", speaker="caller", text=frame.text))
            elif kind is CancelFrame:
                assert isinstance(frame, CancelFrame)
                self._conn.terminate(*_why(frame.reason))
        await super().process_frame(frame, direction)

    def interrupt(self) -> None:
        super().interrupt()
        self._conn.stop_audio()

    def _count_played(self, marks: list[Utterance]) -> None:
        conn = self._conn
        for utterance in marks:
            if utterance.frames_played == 0 and utterance.text:
                conn.event(event("transcript", speaker="bot", text=utterance.text))
        super()._count_played(marks)


def _why(reason: str) -> tuple[str, str, int]:
    """``call_terminated``'s reason, message and close code for a call cut short."""
    if reason == "server shutting down":
        return "shutdown", "the bot is shutting down", GOING_AWAY
    if reason == "max_call_s":
        return "max_call_s", "the call reached its longest duration", NORMAL
    return "error", reason, INTERNAL_ERROR


class WebSocketTransport:
    """The two ends of one call API call over ``connection``, at the client's ``rate``."""

    def __init__(self, connection: CallConnection, settings: WebSocketSettings, rate: int) -> None:
        self.connection = connection
        self.settings = settings
        self.rate = rate
        self._input: WebSocketInput | None = None
        self._output: WebSocketOutput | None = None

    def input(self) -> WebSocketInput:
        """The first processor of the call's chain (made once)."""
        if self._input is None:
            self._input = WebSocketInput(self.connection, self.settings, self.rate)
        return self._input

    def output(self) -> WebSocketOutput:
        """The last processor of the call's chain (made once)."""
        if self._output is None:
            paced = _paced_settings(self.rate, self.settings.resample_quality)
            self._output = WebSocketOutput(self.connection, paced)
            self._output.name = "websocket.out"
        return self._output


_paced: dict[tuple[int, Quality], AudioSocketSettings] = {}


def _paced_settings(rate: int, quality: Quality) -> AudioSocketSettings:
    """What the AudioSocket output needs to know, for audio at ``rate`` to a call API client."""
    found = _paced.get((rate, quality))
    if found is None:
        fields: dict[str, Any] = {
            "output_rate": rate,
            "keepalive_s": _NO_KEEPALIVE_S,
            "resample_quality": quality,
        }
        found = _paced[(rate, quality)] = AudioSocketSettings(**fields)
    return found
