"""What is wrong with a bot file: ``Problem`` (file, line, column, path, message),
``ConfigError`` holding them all, and pydantic's validation errors told in the file's terms."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, get_args

from pydantic import ValidationError

from voxpipe.pipelines.settings import did_you_mean

if TYPE_CHECKING:
    from voxpipe.bots.document import Document

Path_ = tuple[str | int, ...]


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


# --- validation ----------------------------------------------------------------------------------


def report(doc: Document, prefix: Path_, data: Any, error: ValidationError, model: Any) -> None:
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
