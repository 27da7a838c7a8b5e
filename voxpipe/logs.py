"""Logging for a running bot: one line per event, text or JSON, with the call and a trace id.

``setup_logging`` installs one handler on the root logger. Every line names the call it belongs
to (``call_id``, ``bot``: from ``Call.log``, or from the call the current asyncio task serves) and
the call's trace id, a W3C-style 32-hex id kept in ``call.data["trace_id"]`` so tools can pass it
on (``traceparent``). Secrets never reach the output: every ``SecretStr`` of the loaded config,
secret-looking environment variables and well-known key shapes (``sk-ant-...``, ``Bearer ...``,
``user:password@`` in URLs) are replaced by ``***`` in the final line, tracebacks included.

A call's level can be changed while it runs (``set_call_level``; ``PUT /calls/{uuid}/log-level``):
the ``voxpipe`` logger is lowered only while such an override exists, so ordinary calls pay
nothing for debug lines they do not print.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import re
import secrets
import sys
import time
from collections.abc import Iterable
from typing import IO, TYPE_CHECKING, Any

from pydantic import BaseModel, SecretStr

from voxpipe import events

if TYPE_CHECKING:
    from voxpipe.pipelines.call import Call

MASK = "***"

# (call_id, bot, trace_id) of the call the current asyncio task works for.
_current: contextvars.ContextVar[tuple[str, str, str] | None] = contextvars.ContextVar(
    "voxpipe_call", default=None
)
_traces: dict[str, str] = {}
MAX_TRACES = 4096
_call_levels: dict[str, int] = {}
_base_level = logging.INFO

# (hints, pattern, replacement): a pattern runs only on lines holding one of its hints
# (lowercased), which keeps masking cheap for the lines that have nothing to mask.
_PATTERNS: list[tuple[tuple[str, ...], re.Pattern[str], str]] = [
    (("sk-",), re.compile(r"\bsk-(?:ant-)?[A-Za-z0-9_\-]{16,}"), "sk-" + MASK),
    (("aiza",), re.compile(r"\bAIza[0-9A-Za-z_\-]{30,}"), "AIza" + MASK),
    (("bearer",), re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._~+/=\-]{4,}"), r"\1" + MASK),
    (("@",), re.compile(r"([a-zA-Z][a-zA-Z0-9+.\-]*://[^/\s:@]*:)[^@\s/]+@"), r"\1" + MASK + "@"),
    (
        ("key", "pass", "secret", "token"),
        re.compile(
            r"(?i)\b((?:api[_\-]?key|password|passwd|secret|token)[\"']?\s*[:=]\s*[\"']?)"
            r"[^\s\"',;&]+"
        ),
        r"\1" + MASK,
    ),
]
_SECRET_ENV = re.compile(r"(?i)(KEY|TOKEN|SECRET|PASSWORD|PASSWD|CREDENTIALS?)$")


class Redactor:
    """Replaces known secret values and secret-looking patterns in a finished log line."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        known = sorted({v for v in values if len(v) >= 4}, key=len, reverse=True)
        self._values = re.compile("|".join(re.escape(v) for v in known)) if known else None

    def __call__(self, text: str) -> str:
        if self._values is not None:
            text = self._values.sub(MASK, text)
        lowered = text.lower()
        for hints, pattern, replacement in _PATTERNS:
            if any(hint in lowered for hint in hints):
                text = pattern.sub(replacement, text)
        return text


def secret_values(*models: BaseModel) -> set[str]:
    """Every ``SecretStr`` value inside the given settings, plus secret-looking env variables."""
    found: set[str] = set()

    def walk(value: Any) -> None:
        if isinstance(value, SecretStr):
            found.add(value.get_secret_value())
        elif isinstance(value, BaseModel):
            for name in type(value).model_fields:
                walk(getattr(value, name))
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple | set | frozenset):
            for item in value:
                walk(item)

    for model in models:
        walk(model)
    found.update(v for k, v in os.environ.items() if _SECRET_ENV.search(k))
    return {v for v in found if v}


# --- call context ------------------------------------------------------------------------------


class CallContext(events.Observer):
    """Gives each call a trace id and binds the call to the asyncio task that reports its start.

    Tasks created afterwards by that task (the call's processors) inherit the binding, so even
    lines from libraries (an HTTP client in a tool) name the call they were logged for.
    """

    def call_started(self, call: Call) -> None:
        trace_id = call.data.setdefault("trace_id", trace_of(call.call_id))
        _traces[call.call_id] = trace_id
        _current.set((call.call_id, call.bot, trace_id))

    def call_ended(self, call: Call, reason: str) -> None:
        set_call_level(call.call_id, None)


def trace_of(call_id: str) -> str:
    """The trace id of a call, made on first use (its first log line may precede its start).

    The most recent ``MAX_TRACES`` calls are remembered, so lines logged just after a call has
    ended keep its trace id.
    """
    trace = _traces.get(call_id)
    if trace is None:
        trace = _traces[call_id] = secrets.token_hex(16)
        if len(_traces) > MAX_TRACES:
            del _traces[next(iter(_traces))]
    return trace


_call_context = CallContext()


def set_call_level(call_id: str, level: str | int | None) -> None:
    """Log one call at ``level`` (``None`` restores the configured level)."""
    if level is None:
        _call_levels.pop(call_id, None)
    else:
        _call_levels[call_id] = _level(level)
    logging.getLogger("voxpipe").setLevel(min([_base_level, *_call_levels.values()]))


def _level(level: str | int) -> int:
    return level if isinstance(level, int) else logging.getLevelNamesMapping()[level.upper()]


def call_level(call_id: str) -> int | None:
    """The override of one call's level, if any."""
    return _call_levels.get(call_id)


class _ContextFilter(logging.Filter):
    """Adds ``call_id``, ``bot`` and ``trace_id`` to each record and applies per-call levels."""

    def filter(self, record: logging.LogRecord) -> bool:
        call_id = getattr(record, "call_id", None)
        bound = _current.get()
        if call_id is None and bound is not None:
            call_id, record.bot, _ = bound
            record.call_id = call_id
        if call_id is None:
            record.call_id = record.bot = record.trace_id = None
            return record.levelno >= _base_level or not record.name.startswith("voxpipe")
        if getattr(record, "trace_id", None) is None:
            record.trace_id = trace_of(call_id)
        if not hasattr(record, "bot"):
            record.bot = None
        if record.name.startswith("voxpipe"):
            return record.levelno >= _call_levels.get(call_id, _base_level)
        return True


class LineFormatter(logging.Formatter):
    """One event per line, as JSON or as text, with secrets masked."""

    def __init__(self, fmt: str, redact: Redactor) -> None:
        super().__init__()
        self.json = fmt == "json"
        self.redact = redact

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        call_id: str | None = getattr(record, "call_id", None)
        prefix = f"[call {call_id}] "
        if call_id and message.startswith(prefix):
            message = message[len(prefix) :]
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
        stamp += f".{int(record.msecs):03d}Z"
        exc = self.formatException(record.exc_info) if record.exc_info else None
        if self.json:
            line: dict[str, Any] = {
                "ts": stamp,
                "level": record.levelname,
                "logger": record.name,
                "msg": message,
                "call_id": call_id,
                "bot": getattr(record, "bot", None),
                "trace_id": getattr(record, "trace_id", None),
            }
            if exc:
                line["exc"] = exc
            return self.redact(json.dumps(line, ensure_ascii=False, default=str))
        where = f" [call {call_id} trace {getattr(record, 'trace_id', None) or '-'}]"
        text = f"{stamp} {record.levelname:<7} {record.name}{where if call_id else ''}: {message}"
        if exc:
            text += "\n" + exc
        return self.redact(text)


_handler: logging.Handler | None = None


def setup_logging(
    level: str | int = "INFO",
    fmt: str = "text",
    secrets_: Iterable[str] = (),
    stream: IO[str] | None = None,
) -> logging.Handler:
    """Send every log line to ``stream`` (stderr) as ``fmt`` (text or json), masking ``secrets_``.

    Calling it again replaces the previous setup (the CLI calls it once the bot file is loaded,
    when the secrets are known). ``voxpipe`` loggers log at ``level``; other libraries at WARNING.
    """
    global _handler, _base_level
    root = logging.getLogger()
    for existing in list(root.handlers):
        # Ours from an earlier call, or a plain one from ``logging.basicConfig`` (``-v``).
        if existing is _handler or type(existing) is logging.StreamHandler:
            root.removeHandler(existing)
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(LineFormatter(fmt, Redactor(secrets_)))
    handler.addFilter(_ContextFilter())
    root.addHandler(handler)
    root.setLevel(logging.WARNING)
    _base_level = _level(level)
    logging.getLogger("voxpipe").setLevel(min([_base_level, *_call_levels.values()]))
    events.unsubscribe(_call_context)
    events.subscribe(_call_context)
    _handler = handler
    return handler
