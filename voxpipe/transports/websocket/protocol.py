"""The call API's messages: JSON events in text messages, PCM16 audio in binary messages.

Client to bot: ``call_start`` first (``payload``: ``call_id``, ``trace_id``, ``initial_vars``,
``sample_rate``, each optional), then binary audio, ``dtmf`` and ``call_terminated``.
Bot to client: ``call_accepted`` or ``call_failed``, then binary audio paced at real time,
``stop_audio`` (drop what is queued), ``transcript``, ``turn_latency``, ``call_terminated``;
``error`` before it closes the connection on a message it cannot take. docs/call-api.md is the
contract in full; this module is its one implementation.
"""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass, field
from typing import Any

from voxpipe.transports.websocket.settings import CALL_RATES

# WebSocket close codes (RFC 6455, section 7.4.1).
NORMAL = 1000
GOING_AWAY = 1001
INVALID_DATA = 1007
POLICY = 1008
TOO_BIG = 1009
INTERNAL_ERROR = 1011
TRY_AGAIN_LATER = 1013

# A call id is kept with the call's records (36 characters: a UUID); a trace id too (32).
_CALL_ID = re.compile(r"[0-9A-Za-z._:-]{1,36}")
_TRACE_ID = re.compile(r"[0-9A-Za-z._-]{1,32}")
_DIGITS = frozenset("0123456789*#ABCD")
MAX_VARS = 50


class ProtocolError(Exception):
    """A message the call API cannot take: the call ends with an ``error`` event and ``code``."""

    def __init__(self, reason: str, message: str, code: int = POLICY) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.code = code


def event(name: str, **payload: Any) -> str:
    """One event as the text message that carries it."""
    if not payload:
        return json.dumps({"event": name})
    return json.dumps({"event": name, "payload": payload}, ensure_ascii=False)


STOP_AUDIO = event("stop_audio")


def error_event(error: ProtocolError) -> str:
    """The ``error`` event that tells the client why its connection is being closed."""
    return event("error", reason=error.reason, message=error.message)


def parse_event(text: str) -> tuple[str, dict[str, Any]]:
    """The event name and payload of a text message (``ProtocolError`` if it is not one)."""
    try:
        message = json.loads(text)
    except ValueError as exc:
        raise ProtocolError(
            "bad_json", f"a text message must be JSON: {exc}", INVALID_DATA
        ) from None
    if not isinstance(message, dict) or not isinstance(message.get("event"), str):
        raise ProtocolError(
            "bad_message", 'a text message must be a JSON object with an "event" name'
        )
    payload = message.get("payload", {})
    if payload is None:
        payload = {}
    if not isinstance(payload, dict):
        raise ProtocolError(
            "bad_message", f'the "payload" of {message["event"]!r} must be an object'
        )
    return message["event"], payload


@dataclass(frozen=True)
class CallStart:
    """What a client says about its call in ``call_start``."""

    call_id: str
    trace_id: str | None
    sample_rate: int
    initial_vars: dict[str, str] = field(default_factory=dict)


def parse_call_start(message: str | bytes, default_rate: int) -> CallStart:
    """The first message of a connection, which must be ``call_start``."""
    if isinstance(message, bytes):
        raise ProtocolError(
            "audio_before_call_start", "send call_start (a JSON text message) before any audio"
        )
    name, payload = parse_event(message)
    if name != "call_start":
        raise ProtocolError("bad_message", f"the first message must be call_start, not {name!r}")
    call_id = payload.get("call_id")
    if call_id is None or call_id == "":
        call_id = str(uuid.uuid4())
    elif not isinstance(call_id, str) or not _CALL_ID.fullmatch(call_id):
        raise ProtocolError(
            "bad_message",
            "call_id must be a string of at most 36 letters, digits, '.', '_', ':' or '-' "
            "(a UUID, for example)",
        )
    trace_id = trace_id_of(payload.get("trace_id"), "trace_id")
    rate = payload.get("sample_rate", default_rate)
    if rate not in CALL_RATES or isinstance(rate, bool):
        raise ProtocolError(
            "bad_message",
            f"sample_rate must be one of {', '.join(str(r) for r in CALL_RATES)} (PCM16 mono)",
        )
    variables = payload.get("initial_vars") or {}
    if not isinstance(variables, dict):
        raise ProtocolError("bad_message", "initial_vars must be an object of names and values")
    if len(variables) > MAX_VARS:
        raise ProtocolError("bad_message", f"initial_vars holds at most {MAX_VARS} names")
    kept: dict[str, str] = {}
    for key, value in variables.items():
        if isinstance(value, dict | list):
            raise ProtocolError(
                "bad_message", f"initial_vars.{key} must be a string, a number or a boolean"
            )
        kept[key] = "" if value is None else str(value)
    return CallStart(call_id, trace_id, int(rate), kept)


def trace_id_of(value: Any, where: str) -> str | None:
    """A trace id as given (a UUID loses its hyphens: 32 hex digits), or ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, str):
        try:
            return uuid.UUID(value).hex
        except ValueError:
            pass
        if _TRACE_ID.fullmatch(value):
            return value
    raise ProtocolError(
        "bad_message",
        f"{where} must be at most 32 letters, digits, '.', '_' or '-' (a W3C trace id: "
        "32 hex digits)",
    )


def parse_digit(payload: dict[str, Any]) -> str:
    """The key of a ``dtmf`` event."""
    digit = payload.get("digit")
    if not isinstance(digit, str) or digit.upper() not in _DIGITS or len(digit) != 1:
        raise ProtocolError("bad_message", "dtmf needs one digit: 0-9, *, # or A-D")
    return digit.upper()
