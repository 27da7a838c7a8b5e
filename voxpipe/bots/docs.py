"""The YAML reference, generated from the settings models (their fields, types and descriptions).

Also the Mermaid picture of one bot's chain (``run-pipeline graph``).

One source of truth: the YAML reference page (``docs/reference.md``) and ``run-pipeline list``
are both rendered from the models here, and a test checks that the page holds the current text.
Regenerate it with ``.venv/bin/run-pipeline docs --builtin-only`` (``--file FILE``: another page).
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from voxpipe.bots.config import BotConfig
from voxpipe.bots.registry import ProcessorType, Registry

if TYPE_CHECKING:
    from voxpipe.bots.bot import Bot

START = "<!-- yaml-reference:start -->"
END = "<!-- yaml-reference:end -->"
REFERENCE_PAGE = "docs/reference.md"  # where ``run-pipeline docs`` refreshes it by default
SECRET = "(secret)"
_LABELS: dict[tuple[type[BaseModel], str], str] = {
    (BotConfig, "pipeline"): "list of steps (see Pipeline steps)"
}


# --- one field -------------------------------------------------------------------------------


def type_label(annotation: Any) -> str:
    """A reader's name for a field's type: ``int``, ``list of str``, ``"webrtc" | "silero"``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if annotation is type(None):
        return "null"
    if annotation is SecretStr:
        return "secret str"
    if annotation is Any:
        return "any"
    if origin is typing.Annotated:
        return type_label(args[0])
    if origin is Literal:
        return " | ".join(json.dumps(value) for value in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_label(arg) for arg in args)
    if origin is list:
        return f"list of {type_label(args[0])}" if args else "list"
    if origin is dict:
        return f"map of {type_label(args[1])}" if args else "map"
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return "mapping"
    return getattr(annotation, "__name__", str(annotation))


def default_label(field: FieldInfo) -> str:
    """The default as YAML would spell it, ``required``, or ``(secret)`` for secrets."""
    if field.is_required():
        return "required"
    value = field.get_default(call_default_factory=True, validated_data={})
    if isinstance(value, SecretStr) or (_is_secret(field.annotation) and value is not None):
        return SECRET
    if isinstance(value, BaseModel):
        return "(see below)"
    return json.dumps(value, ensure_ascii=False)


def _is_secret(annotation: Any) -> bool:
    return annotation is SecretStr or any(_is_secret(arg) for arg in typing.get_args(annotation))


def one_line(text: str | None) -> str:
    """The first paragraph of a docstring or description, on one line."""
    paragraph = (text or "").strip().split("\n\n")[0]
    return " ".join(paragraph.split())


def provider_name(model: type[BaseModel]) -> str:
    """The ``provider`` value of a provider's settings model, or ``""``."""
    field = model.model_fields.get("provider")
    if field is None:
        return ""
    args = typing.get_args(field.annotation)
    return str(args[0]) if args else str(field.default)


def fields_of(model: type[BaseModel]) -> Iterator[tuple[str, FieldInfo]]:
    """The settings a user writes (a provider's ``provider`` key is shown in its heading)."""
    for name, field in model.model_fields.items():
        if name != "provider":
            yield field.alias or name, field


# --- markdown --------------------------------------------------------------------------------


def _table(model: type[BaseModel]) -> list[str]:
    rows = ["| key | type | default | description |", "|---|---|---|---|"]
    for name, field in fields_of(model):
        cells = (
            f"`{name}`",
            _LABELS.get((model, name)) or type_label(field.annotation),
            f"`{default_label(field)}`",
            one_line(field.description),
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return rows if len(rows) > 2 else ["No settings."]


def _nested(model: type[BaseModel], path: str) -> Iterator[tuple[str, type[BaseModel]]]:
    """Every settings block reachable from ``model``, with its YAML path, depth first."""
    for name, field in model.model_fields.items():
        for inner in _models_in(field.annotation):
            origin = typing.get_origin(field.annotation)
            key = f"{path}.{name}" if path else name
            child = f"{key}.<name>" if origin is dict else key
            yield child, inner
            yield from _nested(inner, child)


def _models_in(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in typing.get_args(annotation):
        found.extend(_models_in(arg))
    return found


def _block(heading: str, model: type[BaseModel], level: str = "###") -> list[str]:
    return [f"{level} `{heading}`", "", one_line(model.__doc__), "", *_table(model), ""]


def _processor_type(ptype: ProcessorType) -> list[str]:
    models = ptype.models
    if len(models) == 1:
        lines = _block(ptype.name, models[0])
        for path, inner in _nested(models[0], ptype.name):
            lines += _block(path, inner, "####")
        return lines
    names = ", ".join(f"`{provider_name(m)}`" for m in models)
    lines = [f"### `{ptype.name}`", "", ptype.doc, "", f"Providers (`provider:`): {names}.", ""]
    for model in models:
        lines += _block(f"{ptype.name}: provider {provider_name(model)}", model, "####")
    return lines


def reference(registry: Registry) -> str:
    """The whole YAML reference as Markdown: top-level keys, their blocks, processor types."""
    lines = ["### Top level", "", one_line(BotConfig.__doc__), "", *_table(BotConfig), ""]
    seen: set[type[BaseModel]] = set()
    for path, model in _nested(BotConfig, ""):
        if model not in seen:
            seen.add(model)
            lines += _block(path, model)
    lines += ["### Pipeline steps", "", "Each step is `- <type>: {settings}`.", ""]
    for ptype in registry:
        lines += _processor_type(ptype)
    return "\n".join(lines).rstrip() + "\n"


def with_reference(readme: str, registry: Registry) -> str:
    """``readme`` with the text between the reference markers replaced by the current one."""
    block = f"{START}\n{reference(registry)}{END}"
    if START in readme and END in readme:
        head, _, rest = readme.partition(START)
        _, _, tail = rest.partition(END)
        return head + block + tail
    return readme.rstrip() + "\n\n## YAML reference\n\n" + block + "\n"


def update_readme(path: Path, registry: Registry) -> bool:
    """Rewrite the reference in the page at ``path``; return whether it changed."""
    old = path.read_text(encoding="utf-8")
    new = with_reference(old, registry)
    if new != old:
        path.write_text(new, encoding="utf-8")
    return new != old


# --- the chain as a flowchart ------------------------------------------------------------------


def mermaid(bot: Bot) -> str:
    """The bot's chain as a Mermaid flowchart: transport in, each step, what the bot adds after
    the steps (the conversation tracker, a recorder), transport out."""
    audiosocket = bot.config.transport.audiosocket
    transport = f"{audiosocket.listen}, {audiosocket.sample_rate} Hz"
    nodes = [("in", f"audiosocket in<br/>{transport}")]
    for step in bot.steps:
        label = step.type_name
        details = _key_settings(step.settings)
        nodes.append((f"s{step.index}", f"{label}<br/>{details}" if details else label))
    for index, (name, what) in enumerate(bot.added_processors()):
        nodes.append((f"a{index}", f"{name}<br/>added: {what}"))
    nodes.append(("out", "audiosocket out"))
    lines = ["flowchart LR"]
    lines += [f'    {node}["{_escape(text)}"]' for node, text in nodes]
    lines.append("    " + " --> ".join(node for node, _ in nodes))
    return "\n".join(lines) + "\n"


def _key_settings(settings: BaseModel, limit: int = 3) -> str:
    """``provider`` and the first few settings the bot file sets, secrets left out."""
    shown: list[str] = []
    fields = type(settings).model_fields
    names = [n for n in fields if n in settings.model_fields_set and n != "provider"]
    if "provider" in fields:
        names.insert(0, "provider")
    for name in names:
        value = getattr(settings, name)
        if isinstance(value, SecretStr | BaseModel | dict | list):
            continue
        text = str(value).lower() if isinstance(value, bool) else str(value)
        key = fields[name].alias or name
        shown.append(f"{key}={text if len(text) <= 24 else text[:23] + '…'}")
        if len(shown) == limit:
            break
    return ", ".join(shown)


def _escape(text: str) -> str:
    return text.replace('"', "#quot;")
