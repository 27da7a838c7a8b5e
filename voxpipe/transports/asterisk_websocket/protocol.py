"""Asterisk's WebSocket channel driver (chan_websocket) as the bot speaks it.

Built to Asterisk's own text (the WebSocket channel driver page of docs.asterisk.org,
``channels/chan_websocket.c``, ``chan_websocket_doc.xml`` and
``configs/samples/websocket_client.conf.sample``; Asterisk 20.16, 21.11, 22.6, 23.0 and later;
the JSON control form from 20.18, 22.8, 23.2):

Connections, one WebSocket per call, in either direction:

- Asterisk connects to the bot (outgoing, from Asterisk's side): a ``websocket_client.conf``
  connection (``type = websocket_client``, ``connection_type = per_call_config``,
  ``uri = ws://bot:8765``, ``protocols = media``) dialled with
  ``Dial(WebSocket/<connection>/c(slin16))``, or ARI ``POST /channels/externalMedia`` with
  ``transport=websocket``, ``encapsulation=none``, ``external_host=<connection>``. Dial option
  ``v(name=value,...)`` adds query parameters to the URI (the bot reads ``call`` as the call's
  id, the others as caller variables).
- The bot connects to Asterisk (incoming): ``Dial(WebSocket/INCOMING)`` or externalMedia with
  ``connection_type=server`` creates the channel and a connection id (the channel variable
  ``MEDIA_WEBSOCKET_CONNECTION_ID``, also in the externalMedia reply's ``channelvars``); the bot
  opens ``ws://asterisk:8088/media/<connection id>`` with the subprotocol ``media``. A second
  connection to the same id is refused; an unknown id gets 404.

Messages: BINARY frames carry media in the channel's format (``c(...)``, else the caller's
first codec): ``slin`` (8 kHz), ``slin12`` ... ``slin192`` (signed 16-bit linear, host order:
little-endian), ``ulaw``, ``alaw`` (one byte per sample). TEXT frames carry control, at most
128 bytes from the app, in the channel's control format: ``plain-text`` (the default: the
command word, a space, its argument) or ``json`` (``chan_websocket.conf``
``control_message_format``, or Dial option ``f(json)``). Asterisk parses the app's commands in
that same format, so the bot answers in the form ``MEDIA_START`` came in.

From Asterisk:

- ``MEDIA_START`` first, once the WebSocket is up. Plain text:
  ``MEDIA_START connection_id:<id> channel:<name> channel_id:<uniqueid> format:<fmt>
  optimal_frame_size:<bytes> ptime:<ms>``. JSON: ``{"event": "MEDIA_START", "connection_id",
  "channel", "channel_id", "format", "optimal_frame_size", "ptime", "channel_variables": {}}``.
  ``optimal_frame_size`` is one ``ptime`` (20 ms) of media: 320 bytes for slin, 640 for slin16,
  160 for ulaw/alaw.
- ``DTMF_END digit:<d> channel_id:<id>`` / ``{"event": "DTMF_END", "channel_id", "digit"}``.
- ``MEDIA_XOFF`` when 900 frames wait in its queue (the app must stop sending: at 1000 frames
  Asterisk drops what comes) and ``MEDIA_XON`` when the queue is back under 800.
- ``MEDIA_BUFFERING_COMPLETED [<correlation id>]`` and ``MEDIA_MARK_PROCESSED [<correlation
  id>]`` when playout reaches the point of the app's ``STOP_MEDIA_BUFFERING`` / ``MARK_MEDIA``.
- ``QUEUE_DRAINED``, ``STATUS ...`` (answers ``GET_STATUS``), ``ERROR ... error_text:<text>``.
- Hangup: Asterisk closes the WebSocket.

From the app:

- ``ANSWER`` (the channel auto-answers at connection unless Dial has ``n``), ``HANGUP``.
- ``FLUSH_MEDIA``: drop every frame queued and not yet played (also ends buffering). Marks
  queued behind it are dropped too: they are never reported.
- ``START_MEDIA_BUFFERING`` / ``STOP_MEDIA_BUFFERING [<id>]``: outside buffering Asterisk cuts
  each binary message into ``optimal_frame_size`` frames and drops a short remainder; inside,
  the remainder waits for the next message, and the stop queues the last short frame.
- ``MARK_MEDIA [<id>]``: a mark in the queue, reported as ``MEDIA_MARK_PROCESSED <id>`` once
  the audio queued before it has played. JSON: ``{"command": "MARK_MEDIA", "correlation_id"}``.
- ``SET_MEDIA_DIRECTION`` (JSON only, ``{"command": ..., "direction": "both"|"in"|"out"}``),
  ``PAUSE_MEDIA``, ``CONTINUE_MEDIA``, ``REPORT_QUEUE_DRAINED``, ``GET_STATUS``.

Timing: Asterisk owns the playout clock. It plays one queued frame per ``ptime`` and makes
silence when its queue is empty, so the app may send ahead of real time (the bot sends a short
lead, ``send_ahead_s``) and needs no keepalive; ``FLUSH_MEDIA`` takes back what was sent ahead,
so barge-in does not depend on how much audio is queued. The bot sends
``START_MEDIA_BUFFERING`` before a stretch of speech and ``STOP_MEDIA_BUFFERING`` after it (so
the last short frame plays), and ``MARK_MEDIA`` after the audio of each sentence's pieces, so
that ``Utterance.spoken_text()`` counts what the caller really heard.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The subprotocol of both directions (``protocols = media`` in websocket_client.conf).
SUBPROTOCOL = "media"
# Asterisk reads at most this much of a control message from the app.
MAX_COMMAND_BYTES = 128
DTMF_DIGITS = frozenset("0123456789*#ABCD")

# format name -> (rate, bytes per sample, G.711 law or "")
FORMATS: dict[str, tuple[int, int, str]] = {
    "slin": (8000, 2, ""),
    "slin12": (12000, 2, ""),
    "slin16": (16000, 2, ""),
    "slin24": (24000, 2, ""),
    "slin32": (32000, 2, ""),
    "slin44": (44100, 2, ""),
    "slin48": (48000, 2, ""),
    "slin96": (96000, 2, ""),
    "slin192": (192000, 2, ""),
    "ulaw": (8000, 1, "ulaw"),
    "alaw": (8000, 1, "alaw"),
}


class ProtocolError(Exception):
    """Asterisk (or something posing as it) sent what chan_websocket never sends: the call it
    belongs to ends."""


@dataclass(slots=True)
class MediaStart:
    """What ``MEDIA_START`` says about the call."""

    connection_id: str
    channel: str
    channel_id: str
    format: str
    optimal_frame_size: int
    ptime: int
    json: bool
    variables: dict[str, str] = field(default_factory=dict)

    @property
    def rate(self) -> int:
        """The media's sample rate."""
        return FORMATS[self.format][0]

    @property
    def law(self) -> str:
        """``"ulaw"``/``"alaw"`` for G.711, ``""`` for signed linear."""
        return FORMATS[self.format][2]


@dataclass(slots=True)
class Event:
    """A control message from Asterisk: its name and fields."""

    name: str
    fields: dict[str, Any]


def _plain_fields(words: list[str]) -> dict[str, str]:
    found: dict[str, str] = {}
    for word in words:
        key, sep, value = word.partition(":")
        if sep and key:
            found[key] = value
    return found


def parse_event(text: str) -> Event:
    """One control message from Asterisk, in either form (raises ``ProtocolError``)."""
    text = text.strip()
    if not text:
        raise ProtocolError("an empty control message")
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except ValueError as exc:
            raise ProtocolError(f"a control message that is not valid JSON ({exc})") from None
        if not isinstance(data, dict) or not isinstance(data.get("event"), str):
            raise ProtocolError("a JSON control message without an 'event' name")
        name = data.pop("event")
        return Event(name, data)
    name, _, rest = text.partition(" ")
    if not name.replace("_", "").isalnum() or not name.isupper():
        raise ProtocolError(f"not a control message: {text[:60]!r}")
    if name in ("MEDIA_MARK_PROCESSED", "MEDIA_BUFFERING_COMPLETED"):
        return Event(name, {"correlation_id": rest.strip()})
    if name == "ERROR":
        head, sep, error_text = rest.partition("error_text:")
        fields: dict[str, Any] = _plain_fields(head.split())
        if sep:
            fields["error_text"] = error_text
        return Event(name, fields)
    return Event(name, _plain_fields(rest.split()))


def parse_media_start(text: str) -> MediaStart:
    """The first message of a connection, which must be ``MEDIA_START``."""
    found = parse_event(text)
    if found.name != "MEDIA_START":
        raise ProtocolError(f"the first message is {found.name}, not MEDIA_START")
    fields = found.fields
    missing = [k for k in ("channel_id", "format", "optimal_frame_size") if k not in fields]
    if missing:
        raise ProtocolError(f"MEDIA_START without {', '.join(missing)}")
    fmt = str(fields["format"])
    if fmt not in FORMATS:
        raise ProtocolError(
            f"MEDIA_START names format {fmt!r}; the bot speaks {', '.join(FORMATS)} "
            "(pick one with Dial's c() option or externalMedia's format)"
        )
    try:
        size = int(fields["optimal_frame_size"])
        ptime = int(fields.get("ptime", 20))
    except (TypeError, ValueError):
        raise ProtocolError("MEDIA_START with a frame size or ptime that is not a number") from None
    if size <= 0 or ptime <= 0:
        raise ProtocolError(f"MEDIA_START with optimal_frame_size {size} and ptime {ptime}")
    variables = fields.get("channel_variables") or {}
    if not isinstance(variables, dict):
        raise ProtocolError("MEDIA_START's channel_variables is not an object")
    return MediaStart(
        connection_id=str(fields.get("connection_id", "")),
        channel=str(fields.get("channel", "")),
        channel_id=str(fields["channel_id"]),
        format=fmt,
        optimal_frame_size=size,
        ptime=ptime,
        json=text.lstrip().startswith("{"),
        variables={str(k): str(v) for k, v in variables.items()},
    )


def command(name: str, as_json: bool, argument: str = "", **fields: str) -> str:
    """A control message to Asterisk in the call's form (``argument``: the correlation id)."""
    if as_json:
        message: dict[str, str] = {"command": name}
        if argument:
            message["correlation_id"] = argument
        message.update(fields)
        text = json.dumps(message, separators=(",", ":"))
    else:
        text = f"{name} {argument}" if argument else name
    if len(text.encode()) > MAX_COMMAND_BYTES:
        raise ValueError(f"a control message is at most {MAX_COMMAND_BYTES} bytes: {text!r}")
    return text


def parse_digit(fields: dict[str, Any]) -> str:
    """The digit of a ``DTMF_END``."""
    digit = fields.get("digit")
    if not isinstance(digit, str) or len(digit) != 1 or digit not in DTMF_DIGITS:
        raise ProtocolError(f"DTMF_END with digit {digit!r}")
    return digit
