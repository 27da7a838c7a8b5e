"""Loading a bot from YAML: parse with line numbers, interpolate ``${VAR}``, validate everything.

Every problem in a file is reported at once, each with file, line, column and the path inside
the document (``pipeline[3].tts.voice``), and a did-you-mean for unknown keys and types. Nothing
runs on an invalid file: ``load_bot`` raises ``ConfigError`` holding all the problems.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from voxpipe.bots.document import MAX_VALUES, Document, TooLarge, check_depth
from voxpipe.bots.problems import ConfigError, Path_, Problem, format_path, report
from voxpipe.bots.registry import Registry, default_registry
from voxpipe.bots.settings import (
    AriSettings,
    BotConfig,
    HttpSettings,
    LoggingSettings,
    MemoryStoreSettings,
    ProcessorEntry,
    RedisStoreSettings,
    SessionStoreSettings,
)
from voxpipe.pipelines.settings import did_you_mean

# The names a bot file's users import from here; the models, document and problems live in
# their own modules.
__all__ = [
    "AriSettings",
    "BotConfig",
    "ConfigError",
    "HttpSettings",
    "LoadedConfig",
    "LoggingSettings",
    "MemoryStoreSettings",
    "Problem",
    "ProcessorEntry",
    "RedisStoreSettings",
    "SessionStoreSettings",
    "caller_template_problems",
    "dump_settings",
    "format_path",
    "load_bot",
    "parse_bot",
]


@dataclass(frozen=True)
class LoadedConfig:
    """A valid bot file: the top-level settings and each validated pipeline step."""

    path: str
    config: BotConfig
    steps: list[ProcessorEntry]


def parse_bot(text: str, file: str = "<string>", registry: Registry | None = None) -> LoadedConfig:
    """Parse and validate a bot document; raise ``ConfigError`` with every problem found."""
    registry = registry or default_registry()
    doc = Document(file)
    try:
        check_depth(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = doc.build(node) if node is not None else None
    except TooLarge as exc:
        mark = exc.node.start_mark
        message = f"the document expands to more than {MAX_VALUES} values (an alias bomb?)"
        raise ConfigError([Problem(file, mark.line + 1, mark.column + 1, "", message)]) from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
        message = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        if "'\\t'" in message:  # PyYAML's words for a tab where indentation goes
            message += "; YAML indents with spaces, not tabs"
        start, end = exc.context_mark, exc.problem_mark
        if start is not None and end is not None and start.line != end.line:
            message += f" (it began at line {start.line + 1}, column {start.column + 1})"
        raise ConfigError([Problem(file, line, col, "", f"invalid YAML: {message}")]) from None
    except yaml.YAMLError as exc:
        raise ConfigError([Problem(file, 1, 1, "", f"invalid YAML: {exc}")]) from None
    if node is None:
        raise ConfigError(
            [Problem(file, 1, 1, "", "the file is empty; a bot needs `name` and `pipeline`")]
        )
    if not isinstance(data, dict):
        doc.problem((), "a bot file must be a mapping with `name`, `transport` and `pipeline`")
        raise ConfigError(doc.problems)

    config: BotConfig | None = None
    try:
        config = BotConfig.model_validate(data)
    except ValidationError as exc:
        report(doc, (), data, exc, BotConfig)

    steps: list[ProcessorEntry] = []
    pipeline = data.get("pipeline")
    if isinstance(pipeline, list):
        for index, entry in enumerate(pipeline):
            step = _validate_step(doc, registry, index, entry)
            if step is not None:
                steps.append(step)
    _check_references(doc, data.get("tools"), config, steps)
    if doc.problems or config is None:
        doc.problems.sort(key=lambda p: (p.line, p.column))
        raise ConfigError(doc.problems)
    return LoadedConfig(file, config, steps)


def _validate_step(
    doc: Document, registry: Registry, index: int, entry: Any
) -> ProcessorEntry | None:
    path: Path_ = ("pipeline", index)
    if not isinstance(entry, dict) or len(entry) != 1:
        doc.problem(
            path,
            "each pipeline step is a mapping with exactly one key, the processor "
            "type: `- vad: {aggressiveness: 2}`",
        )
        return None
    ((type_name, raw),) = entry.items()
    ptype = registry.get(type_name)
    if ptype is None:
        doc.problem(
            (*path, type_name),
            f"unknown processor type {type_name!r}{did_you_mean(type_name, registry.names())}; "
            f"`run-pipeline list` shows them all",
            at_key=True,
        )
        return None
    try:
        settings = ptype.adapter.validate_python({} if raw is None else raw)
    except ValidationError as exc:
        report(doc, (*path, type_name), {} if raw is None else raw, exc, ptype.settings)
        return None
    return ProcessorEntry(type_name, settings, index)


def _check_references(
    doc: Document, declared: Any, config: BotConfig | None, steps: list[ProcessorEntry]
) -> None:
    """Cross-checks between blocks (tools named by an LLM exist, and so on).

    Tool names are checked against the ``tools:`` block as written, so that a misspelt
    reference is reported even when that block has problems of its own.
    """
    builtin_tools = {"hangup", "transfer"}
    known = sorted(builtin_tools | (set(declared) if isinstance(declared, dict) else set()))
    for step in steps:
        names = getattr(step.settings, "tools", None)
        if not isinstance(names, list):
            continue
        for i, name in enumerate(names):
            if isinstance(name, str) and name not in known:
                doc.problem(
                    ("pipeline", step.index, step.type_name, "tools", i),
                    f"unknown tool {name!r}{did_you_mean(name, known)}; declare it under `tools:`",
                )
    for name, tool in config.tools.items() if config is not None else ():
        if name not in builtin_tools and tool.http is None and tool.python is None:
            doc.problem(
                ("tools", name), "a tool needs `http` or `python` (or is `hangup`/`transfer`)"
            )
    if config is not None:
        if config.transport.websocket is not None and config.http is None:
            doc.problem(
                ("transport", "websocket"),
                "the call API is served by the bot's HTTP server: add an http: block "
                "(http: {listen: '127.0.0.1:8080'})",
            )
        if (
            config.ari is not None
            and config.ari.media_transport == "websocket"
            and config.transport.asterisk_websocket is None
        ):
            doc.problem(
                ("ari", "media_transport"),
                "media_transport websocket needs the chan_websocket transport: add "
                "transport.asterisk_websocket (transport: {asterisk_websocket: {}})",
            )
        if (
            config.ari is not None
            and config.ari.media_transport == "audiosocket"
            and "audiosocket" not in config.transport.served()
        ):
            doc.problem(
                ("ari", "media_transport"),
                "the ARI controller's media channel connects over AudioSocket, and this bot "
                "names no transport.audiosocket: add it, or set media_transport: websocket",
            )
        if config.http is not None and config.http.web and config.transport.websocket is None:
            doc.problem(
                ("http", "web"),
                "the page talks to the bot over the call API: add transport.websocket "
                "(transport: {websocket: {path: /api/v1/call}})",
            )
        templates: list[tuple[Path_, str | None]] = [(("greeting",), config.greeting)]
        for step in steps:
            system = getattr(step.settings, "system", None)
            templates.append((("pipeline", step.index, step.type_name, "system"), system))
        for path, template in templates:
            for problem in caller_template_problems(template, config):
                doc.problem(path, problem)


def caller_template_problems(template: str | None, config: BotConfig) -> list[str]:
    """What is wrong with the caller context a greeting or system prompt asks for: a caller
    variable the bot does not keep, or a customer without call records to look one up."""
    from voxpipe.caller_context import FIELD

    problems: list[str] = []
    kept = set(config.caller.variables)
    for match in FIELD.finditer(template or ""):
        scope, key = match.group(1), match.group(2)
        names = [key, *(f.strip() for f in match.group(3).split("|")[1:])]
        for name in names:
            scope_, _, field = name.partition(".") if name != key else (scope, "", key)
            if scope_ == "caller" and field not in ("number", "name") and field not in kept:
                problems.append(
                    f"{{caller.{field}}} is not kept: list {field} under caller.variables "
                    f"(kept: {', '.join(sorted(kept)) or 'none'})"
                )
            elif scope_ == "customer" and (
                config.call_records is None or not config.caller.customers
            ):
                problems.append(
                    f"{{customer.{field}}} needs the customers of call_records "
                    "(a call_records: block, and caller.customers: true)"
                )
    return problems


def load_bot(path: str | os.PathLike[str], registry: Registry | None = None) -> LoadedConfig:
    """Read, parse and validate a bot file."""
    file = str(path)
    try:
        text = Path(file).read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(
            [Problem(file, 0, 0, "", f"cannot read the file: {exc.strerror}")]
        ) from None
    except UnicodeDecodeError:
        raise ConfigError([Problem(file, 0, 0, "", "the file is not UTF-8 text")]) from None
    return parse_bot(text, file, registry)


def dump_settings(model: BaseModel) -> dict[str, Any]:
    """Settings as plain data, secrets masked (safe for logs and `run-pipeline` output)."""
    return model.model_dump(mode="json")
