"""The JSON Schema of the bot format, generated from the settings models.

Editors use it to autocomplete and lint bot files (``# yaml-language-server: $schema=...``).
The top level is ``BotConfig``; each ``pipeline`` item is one of the registered processor types,
as a one-key object, with providers told apart by their ``provider`` field.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from voxpipe.bots.config import BotConfig
from voxpipe.bots.registry import ProcessorType, Registry

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
ENV_REFERENCE = "EnvReference"


def bot_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a bot file whose pipeline may use every type in ``registry``."""
    types = list(registry)
    inputs: list[tuple[str, Any, TypeAdapter[Any]]] = [
        ("", "validation", TypeAdapter(BotConfig)),
        *((ptype.name, "validation", ptype.adapter) for ptype in types),
    ]
    refs, top = TypeAdapter.json_schemas(inputs)
    defs: dict[str, Any] = top.get("$defs", {})
    _allow_env_references(defs)
    defs[ENV_REFERENCE] = {
        "type": "string",
        "pattern": r"\$\{[A-Za-z_][A-Za-z0-9_]*(:?-[^}]*)?\}",
        "description": "${VAR} or ${VAR:-default}: a value from the environment, "
        "checked when the bot is loaded.",
    }
    root = defs.pop(BotConfig.__name__)
    root["properties"]["pipeline"]["items"] = {
        "oneOf": [_step_schema(ptype, refs[(ptype.name, "validation")]) for ptype in types]
    }
    return {"$schema": SCHEMA_DIALECT, **root, "title": "voxpipe bot", "$defs": defs}


def _allow_env_references(node: Any) -> None:
    """Let every number, boolean and numeric choice also be written as ``${VAR}``.

    Text settings take ``${VAR}`` as they are; without this, an editor would flag
    ``sample_rate: ${RATE:-8000}``, which loads fine.
    """
    if isinstance(node, list):
        for item in node:
            _allow_env_references(item)
        return
    if not isinstance(node, dict):
        return
    for value in node.values():
        _allow_env_references(value)
    properties = node.get("properties")
    if isinstance(properties, dict):
        for name, prop in properties.items():
            if _non_text_scalar(prop):
                properties[name] = _or_env_reference(prop)


def _non_text_scalar(schema: Any) -> bool:
    if not isinstance(schema, dict):
        return False
    if schema.get("type") in ("integer", "number", "boolean"):
        return True
    if any(not isinstance(v, str) for v in schema.get("enum", ())):
        return True
    return any(_non_text_scalar(option) for option in schema.get("anyOf", ()))


def _or_env_reference(schema: dict[str, Any]) -> dict[str, Any]:
    notes = {k: v for k, v in schema.items() if k in _ANNOTATIONS}
    rule = {k: v for k, v in schema.items() if k not in _ANNOTATIONS}
    options = rule["anyOf"] if list(rule) == ["anyOf"] else [rule]
    return {**notes, "anyOf": [*options, {"$ref": f"#/$defs/{ENV_REFERENCE}"}]}


_ANNOTATIONS = ("title", "description", "default", "examples", "deprecated")


def _step_schema(ptype: ProcessorType, settings: dict[str, Any]) -> dict[str, Any]:
    """``{"<type>": {settings}}``; an empty value is allowed when every setting has a default."""
    value = {"anyOf": [settings, {"type": "null"}]} if _all_defaults(ptype) else settings
    return {
        "type": "object",
        "title": ptype.name,
        "description": ptype.doc,
        "properties": {ptype.name: value},
        "required": [ptype.name],
        "additionalProperties": False,
    }


def _all_defaults(ptype: ProcessorType) -> bool:
    try:
        ptype.adapter.validate_python({})
    except ValidationError:
        return False
    return True


def schema_text(registry: Registry) -> str:
    """The schema as the text of ``configs/voxpipe.schema.json``."""
    return json.dumps(bot_schema(registry), indent=2, ensure_ascii=False) + "\n"
