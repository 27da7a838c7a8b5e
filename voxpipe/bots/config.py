"""Loading a bot from YAML: parse with line numbers, interpolate ``${VAR}``, validate everything.

Every problem in a file is reported at once, each with file, line, column and the path inside
the document (``pipeline[3].tts.voice``), and a did-you-mean for unknown keys and types. Nothing
runs on an invalid file: ``load_bot`` raises ``ConfigError`` holding all the problems.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, model_validator

from voxpipe.bots.registry import Registry, default_registry
from voxpipe.models.settings import ModelsSettings
from voxpipe.pipelines.settings import ProcessorSettings, Settings, did_you_mean
from voxpipe.records.settings import CallerSettings, CallRecordsSettings, HooksSettings
from voxpipe.tools.settings import ToolSettings
from voxpipe.transports.audiosocket.settings import TransportSettings

Path_ = tuple[str | int, ...]

# --- the top-level document --------------------------------------------------------------------


class RedisStoreSettings(Settings):
    """Keep call state in Redis at ``call_session:<uuid>``."""

    url: SecretStr = Field(
        SecretStr("redis://127.0.0.1:6379/0"), description="Redis URL (may hold a password)."
    )
    ttl_s: int = Field(1800, gt=0, description="Key lifetime, refreshed on activity, in seconds.")


class MemoryStoreSettings(Settings):
    """Keep call state in this process only."""


class SessionStoreSettings(Settings):
    """Where call state lives. Give exactly one of ``redis`` or ``memory`` (the default)."""

    redis: RedisStoreSettings | None = Field(None, description="Store call state in Redis.")
    memory: MemoryStoreSettings | None = Field(None, description="Store call state in memory.")


class HttpSettings(Settings):
    """The health and metrics API."""

    listen: str = Field("127.0.0.1:8080", description="host:port of the HTTP API.")
    token: SecretStr | None = Field(None, description="Bearer token required on every request.")
    web: bool = Field(
        False,
        description="Serve a page at / to talk to the bot from a browser (over the call API, "
        "transport.websocket).",
    )


class AriSettings(Settings):
    """Asterisk REST Interface: answer calls in a Stasis app and bridge them to this bot."""

    url: str = Field(description="Base URL of Asterisk's HTTP server, e.g. http://127.0.0.1:8088.")
    username: str = Field(description="ARI user (ari.conf).")
    password: SecretStr = Field(description="ARI password (ari.conf).")
    app: str = Field("voxpipe", description="Stasis application name.")
    external_host: str | None = Field(
        None, description="host:port Asterisk should connect to for this bot's AudioSocket."
    )
    timeout_s: float = Field(5.0, gt=0, description="Timeout of every ARI REST request.")
    media_timeout_s: float = Field(
        3.0,
        gt=0,
        description="How long to wait for the bot's externalMedia channel to enter the Stasis "
        "app; after that the set-up is given up and the caller sent back to the dialplan.",
    )
    reconnect_step_s: float = Field(
        5.0, gt=0, description="Events WebSocket lost: wait this, then twice this, ... to retry."
    )
    reconnect_max_s: float = Field(30.0, gt=0, description="Longest wait between reconnections.")
    ping_interval_s: float = Field(
        20.0, gt=0, description="Keepalive ping on the events WebSocket, in seconds."
    )
    media_format: Literal["slin16", "slin", "slin24", "slin48", "ulaw", "alaw"] = Field(
        "slin16",
        description="externalMedia audio format: slin16 (AudioSocket 0x12, Asterisk 20.17, "
        "21.12, 22.7, 23.1 or later) or slin (8 kHz, 0x10, any Asterisk with AudioSocket); "
        "with media_transport websocket also slin24, slin48, ulaw or alaw.",
    )
    media_transport: Literal["audiosocket", "websocket"] = Field(
        "audiosocket",
        description="How the externalMedia channel reaches the bot: audiosocket (TCP, "
        "transport.audiosocket) or websocket (chan_websocket, needs "
        "transport.asterisk_websocket).",
    )
    websocket_connection: str | None = Field(
        None,
        description="media_transport websocket: the websocket_client.conf connection Asterisk "
        "dials to reach the bot (its uri is transport.asterisk_websocket.listen). Unset: the "
        "bot connects to Asterisk's /media/<connection id> itself (connection_type server).",
    )

    @model_validator(mode="after")
    def _check_media(self) -> AriSettings:
        if self.media_transport == "audiosocket" and self.media_format not in ("slin16", "slin"):
            raise ValueError(
                f"media_format {self.media_format!r} needs media_transport: websocket "
                "(AudioSocket carries slin and slin16 only)"
            )
        return self


class LoggingSettings(Settings):
    """Log format and level for this bot's calls."""

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field("INFO", description="Log level.")
    format: Literal["text", "json"] = Field("text", description="Human-readable or JSON lines.")


class BotConfig(Settings):
    """A voice bot: how calls arrive, the chain of processors each call gets, and its tools."""

    name: str = Field(description="The bot's name, shown in logs and metrics.")
    description: str = Field("", description="What the bot is for.")
    greeting: str | None = Field(None, description="What the bot says when a call starts.")
    transport: TransportSettings = Field(
        default_factory=TransportSettings,  # type: ignore[arg-type]
        description="How calls reach the bot.",
    )
    pipeline: list[Any] = Field(
        min_length=1,
        description="The processors each call flows through, in order: a list of one-key "
        "mappings, `- type: {settings}`.",
    )
    tools: dict[str, ToolSettings] = Field(
        default_factory=dict, description="Tools the LLM may call, by name."
    )
    session_store: SessionStoreSettings = Field(
        default_factory=SessionStoreSettings,  # type: ignore[arg-type]
        description="Where call state is kept.",
    )
    models: ModelsSettings = Field(
        default_factory=ModelsSettings,  # type: ignore[arg-type]
        description="Worker processes for the local speech models.",
    )
    http: HttpSettings | None = Field(None, description="Health and metrics HTTP API.")
    ari: AriSettings | None = Field(None, description="ARI call control.")
    logging: LoggingSettings = Field(
        default_factory=LoggingSettings,  # type: ignore[arg-type]
        description="Logging.",
    )
    call_records: CallRecordsSettings | None = Field(
        None, description="Keep every call and its transcript in a database."
    )
    hooks: HooksSettings = Field(
        default_factory=HooksSettings,  # type: ignore[arg-type]
        description="HTTP callbacks on call events.",
    )
    caller: CallerSettings = Field(
        default_factory=CallerSettings,  # type: ignore[arg-type]
        description="What the bot learns about the caller when a call starts.",
    )


@dataclass(frozen=True)
class ProcessorEntry:
    """One validated step of the pipeline."""

    type_name: str
    settings: ProcessorSettings
    index: int


# --- errors ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a bot file."""

    file: str
    line: int
    column: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.column}"
        return f"{where}: {self.path}: {self.message}" if self.path else f"{where}: {self.message}"


class ConfigError(Exception):
    """A bot file is invalid; ``problems`` lists everything wrong with it."""

    def __init__(self, problems: list[Problem]) -> None:
        self.problems = problems
        super().__init__("\n".join(str(p) for p in problems))


def format_path(path: Path_) -> str:
    """``("pipeline", 2, "llm", "model")`` -> ``pipeline[2].llm.model``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += f".{part}" if out else str(part)
    return out


# --- YAML with positions ------------------------------------------------------------------------


# A bot file is a few hundred values nested a few levels deep. These bounds stop a hostile or
# broken file (``[[[[...`` ten thousand deep, an alias bomb that expands to millions of values,
# an alias inside its own anchor) with a clear error instead of a RecursionError or minutes of
# work.
MAX_DEPTH = 64
MAX_VALUES = 50_000


class _TooLarge(Exception):
    """The document expands to more than ``MAX_VALUES`` values (aliases, most likely)."""

    def __init__(self, node: yaml.Node) -> None:
        super().__init__()
        self.node = node


def _check_depth(text: str, file: str) -> None:
    """Refuse a document nested deeper than ``MAX_DEPTH`` before PyYAML composes it (which
    recurses once per level); raises ``yaml.YAMLError`` as composing would for bad syntax."""
    depth = 0
    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                line, col = (mark.line + 1, mark.column + 1) if mark else (1, 1)
                message = f"nested more than {MAX_DEPTH} levels deep; a bot file needs a few"
                raise ConfigError([Problem(file, line, col, "", message)])
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


class _Document:
    """The parsed file as plain data, with the position of every value and key."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.unset: set[Path_] = set()  # values missing an environment variable
        self._count = 0
        self._open: set[int] = set()  # the collections being built (an alias to one recurses)

    def problem(self, path: Path_, message: str, *, at_key: bool = False) -> None:
        pos = (self.keys.get(path) if at_key else None) or self._position(path)
        self.problems.append(Problem(self.file, pos[0], pos[1], format_path(path), message))

    def _position(self, path: Path_) -> tuple[int, int]:
        while path:
            if path in self.values:
                return self.values[path]
            path = path[:-1]
        return self.values.get((), (1, 1))

    def build(self, node: yaml.Node, path: Path_ = ()) -> Any:
        self._count += 1
        if self._count > MAX_VALUES:
            raise _TooLarge(node)
        self.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
        if isinstance(node, (yaml.MappingNode, yaml.SequenceNode)):
            if id(node) in self._open:
                self.problem(path, "an alias refers to the collection it is part of")
                return None
            self._open.add(id(node))
            try:
                return self._build_collection(node, path)
            finally:
                self._open.discard(id(node))
        try:
            scalar = _construct_scalar(node)
        except (ValueError, ArithmeticError, TypeError) as exc:  # ``!!int abc``, ``!!float x``
            kind = node.tag.rsplit(":", 1)[-1]
            self.problem(path, f"{node.value!r} is not a valid {kind}: {exc}")
            return None
        if isinstance(scalar, str):
            scalar = self._interpolate(scalar, path)
        return scalar

    def _build_collection(self, node: yaml.Node, path: Path_) -> Any:
        if isinstance(node, yaml.MappingNode):
            out: dict[str, Any] = {}
            for key_node, value_node in node.value:
                key = key_node.value if isinstance(key_node, yaml.ScalarNode) else None
                if not isinstance(key, str):
                    line, col = key_node.start_mark.line + 1, key_node.start_mark.column + 1
                    self.problems.append(
                        Problem(self.file, line, col, format_path(path), "keys must be strings")
                    )
                    continue
                child = (*path, key)
                self.keys[child] = (key_node.start_mark.line + 1, key_node.start_mark.column + 1)
                if key in out:
                    self.problem(child, f"duplicate key {key!r}", at_key=True)
                out[key] = self.build(value_node, child)
            return out
        return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]

    def _interpolate(self, text: str, path: Path_) -> Any:
        if "${" not in text:
            return text

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(3)
            value = os.environ.get(name)
            if value is None or (value == "" and match.group(2) == ":-"):
                if default is not None:
                    return default
                self.problem(path, f"environment variable {name} is not set")
                self.unset.add(path)
                return ""
            return value

        result = _ENV.sub(replace, text)
        # An integer from the environment is read as a number (``sample_rate: ${RATE}``);
        # text settings get the very same digits back (``Settings`` coerces numbers to str).
        return int(result) if _INTEGER.fullmatch(result) else result


_ENV = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?-)([^}]*))?\}")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]{0,17})")


def _construct_scalar(node: yaml.Node) -> Any:
    loader = yaml.SafeLoader("")
    try:
        return loader.construct_object(node, deep=True)
    finally:
        loader.dispose()


# --- validation ----------------------------------------------------------------------------------


def _report(doc: _Document, prefix: Path_, data: Any, error: ValidationError, model: Any) -> None:
    for err in error.errors(include_url=False):
        path, value = _walk(prefix, data, err["loc"])
        if path in doc.unset:
            continue  # already reported: the variable it needs is not set
        kind = err["type"]
        if kind == "extra_forbidden":
            key = str(path[-1])
            fields = _field_names(model, path[len(prefix) : -1])
            doc.problem(path, f"unknown key {key!r}{did_you_mean(key, fields)}", at_key=True)
        elif kind == "union_tag_invalid":
            ctx = err.get("ctx", {})
            tag = str(ctx.get("tag", ""))
            expected = [t.strip(" '") for t in str(ctx.get("expected_tags", "")).split(",")]
            doc.problem(
                (*path, ctx.get("discriminator", "provider").strip("'")),
                f"unknown provider {tag!r}{did_you_mean(tag, expected)}; "
                f"expected one of: {', '.join(expected)}",
            )
        elif kind == "union_tag_not_found":
            key = str(err.get("ctx", {}).get("discriminator", "provider")).strip("'")
            tags = ", ".join(_tags(model, key))
            doc.problem(path, f"missing key {key!r}; expected one of: {tags}")
        elif kind == "missing":
            doc.problem(path, "required key is missing")
        elif kind in ("model_type", "model_attributes_type", "dict_type"):
            doc.problem(path, f"expected a mapping of settings, got {_yaml_kind(value)}")
        elif kind == "value_error":
            doc.problem(path, str(err.get("ctx", {}).get("error", err["msg"])))
        else:
            doc.problem(path, err["msg"] + _got(kind, err.get("input")))


def _got(kind: str, value: Any) -> str:
    """`` (got 'ten')`` after a wrong scalar, which may have come from an environment variable."""
    wrong_scalar = kind.endswith("_parsing") or kind in ("literal_error", "enum")
    if wrong_scalar and isinstance(value, str | int | float) and len(repr(value)) <= 40:
        return f" (got {value!r})"
    return ""


def _tags(model: Any, key: str) -> list[str]:
    """The values of the discriminator ``key`` across a union of settings models."""
    from voxpipe.bots.registry import _models_of

    tags: list[str] = []
    for m in _models_of(model):
        field = m.model_fields.get(key)
        if field is not None:
            tags.extend(str(arg) for arg in get_args(field.annotation))
    return tags


def _yaml_kind(value: Any) -> str:
    """What a value is, in YAML's words."""
    if value is None:
        return "nothing"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    return f"{value!r}"


def _walk(prefix: Path_, data: Any, loc: tuple[Any, ...]) -> tuple[Path_, Any]:
    """Map a pydantic error location onto the document, skipping union tags and the like."""
    path: list[str | int] = list(prefix)
    current = data
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if (isinstance(current, Mapping) and isinstance(part, str) and part in current) or (
            isinstance(current, list) and isinstance(part, int) and 0 <= part < len(current)
        ):
            path.append(part)
            current = current[part]  # type: ignore[index]
        elif last and isinstance(current, Mapping) and isinstance(part, str):
            path.append(part)
            current = None
    return tuple(path), current


def _field_names(model: Any, inner: Path_) -> list[str]:
    """The keys a block at ``inner`` (relative to ``model``) allows, for did-you-mean."""
    from voxpipe.bots.registry import _models_of

    models = _models_of(model)
    for part in inner:
        nxt: list[Any] = []
        for m in models:
            field = m.model_fields.get(str(part))
            if field is not None:
                nxt.extend(_models_of(field.annotation))
                for arg in getattr(field.annotation, "__args__", ()):
                    nxt.extend(_models_of(arg))
        if nxt:  # otherwise ``part`` is a list index or a key of a mapping (a tool's name)
            models = nxt
    names: list[str] = []
    for m in models:
        names.extend(field.alias or name for name, field in m.model_fields.items())
    return names


@dataclass(frozen=True)
class LoadedConfig:
    """A valid bot file: the top-level settings and each validated pipeline step."""

    path: str
    config: BotConfig
    steps: list[ProcessorEntry]


def parse_bot(text: str, file: str = "<string>", registry: Registry | None = None) -> LoadedConfig:
    """Parse and validate a bot document; raise ``ConfigError`` with every problem found."""
    registry = registry or default_registry()
    doc = _Document(file)
    try:
        _check_depth(text, file)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = doc.build(node) if node is not None else None
    except _TooLarge as exc:
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
        _report(doc, (), data, exc, BotConfig)

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
    doc: _Document, registry: Registry, index: int, entry: Any
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
        _report(doc, (*path, type_name), {} if raw is None else raw, exc, ptype.settings)
        return None
    return ProcessorEntry(type_name, settings, index)


def _check_references(
    doc: _Document, declared: Any, config: BotConfig | None, steps: list[ProcessorEntry]
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
