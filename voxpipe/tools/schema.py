"""A small JSON Schema validator for tool arguments: the subset tool declarations use.

Supported keywords: ``type`` (string, integer, number, boolean, object, array, null, or a list
of them), ``enum``, ``pattern``, ``minLength``/``maxLength``, ``minimum``/``maximum``,
``items``, ``properties`` and ``required``. Arguments are checked before a tool runs, so a model
that invents or mistypes an argument gets a precise message back instead of a failed request.
"""

from __future__ import annotations

import re
from typing import Any

_TYPES: dict[str, tuple[type, ...]] = {
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "object": (dict,),
    "array": (list,),
    "null": (type(None),),
}


def object_schema(
    properties: dict[str, dict[str, Any]], required: list[str] | None
) -> dict[str, Any]:
    """The JSON Schema of a tool's arguments object (every argument required by default)."""
    return {
        "type": "object",
        "properties": properties,
        "required": list(properties) if required is None else required,
    }


def validate(value: Any, schema: dict[str, Any], path: str = "") -> list[str]:
    """Every way ``value`` breaks ``schema``, as ``"path: problem"`` messages (empty if valid)."""
    where = path or "arguments"
    kinds = schema.get("type")
    if kinds is not None:
        names = [kinds] if isinstance(kinds, str) else list(kinds)
        if not any(_is(value, name) for name in names):
            return [f"{where}: expected {' or '.join(names)}, got {type(value).__name__}"]
    problems: list[str] = []
    if "enum" in schema and value not in schema["enum"]:
        problems.append(f"{where}: must be one of {schema['enum']}")
    if isinstance(value, str):
        problems += _check_string(value, schema, where)
    if isinstance(value, int | float) and not isinstance(value, bool):
        if "minimum" in schema and value < schema["minimum"]:
            problems.append(f"{where}: must be at least {schema['minimum']}")
        if "maximum" in schema and value > schema["maximum"]:
            problems.append(f"{where}: must be at most {schema['maximum']}")
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        for i, item in enumerate(value):
            problems += validate(item, schema["items"], f"{where}[{i}]")
    if isinstance(value, dict):
        problems += _check_object(value, schema, path)
    return problems


def _is(value: Any, name: str) -> bool:
    if name in ("integer", "number") and isinstance(value, bool):
        return False
    if name == "integer" and isinstance(value, float):
        return value.is_integer()
    return isinstance(value, _TYPES.get(name, (object,)))


def _check_string(value: str, schema: dict[str, Any], where: str) -> list[str]:
    problems: list[str] = []
    if "minLength" in schema and len(value) < schema["minLength"]:
        problems.append(f"{where}: must have at least {schema['minLength']} characters")
    if "maxLength" in schema and len(value) > schema["maxLength"]:
        problems.append(f"{where}: must have at most {schema['maxLength']} characters")
    if "pattern" in schema and re.search(schema["pattern"], value) is None:
        problems.append(f"{where}: does not match the pattern {schema['pattern']!r}")
    return problems


def _check_object(value: dict[str, Any], schema: dict[str, Any], path: str) -> list[str]:
    problems: list[str] = []
    properties: dict[str, Any] = schema.get("properties", {})
    prefix = f"{path}." if path else ""
    for name in schema.get("required", []):
        if name not in value:
            problems.append(f"{prefix}{name}: required argument is missing")
    for name, item in value.items():
        if name not in properties:
            if properties:
                problems.append(f"{prefix}{name}: unknown argument")
            continue
        problems += validate(item, properties[name], f"{prefix}{name}")
    return problems
