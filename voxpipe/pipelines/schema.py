"""The JSON Schema of the bot format, generated from the settings models.

Editors use it to autocomplete and lint bot files (``# yaml-language-server: $schema=...``).
The top level is ``BotConfig``; each ``pipeline`` item is one of the registered processor types,
as a one-key object, with providers told apart by their ``provider`` field.
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import TypeAdapter, ValidationError

from voxpipe.pipelines.config import BotConfig
from voxpipe.pipelines.registry import ProcessorType, Registry

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"


def bot_schema(registry: Registry) -> dict[str, Any]:
    """The JSON Schema of a bot file whose pipeline may use every type in ``registry``."""
    types = list(registry)
    inputs: list[tuple[str, Any, TypeAdapter[Any]]] = [
        ("", "validation", TypeAdapter(BotConfig)),
        *((ptype.name, "validation", ptype.adapter) for ptype in types),
    ]
    refs, top = TypeAdapter.json_schemas(inputs)
    defs: dict[str, Any] = top.get("$defs", {})
    root = defs.pop(BotConfig.__name__)
    root["properties"]["pipeline"]["items"] = {
        "oneOf": [_step_schema(ptype, refs[(ptype.name, "validation")]) for ptype in types]
    }
    return {"$schema": SCHEMA_DIALECT, **root, "title": "voxpipe bot", "$defs": defs}


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
