"""A bot file's YAML as plain data, with the position of every key and value, ``${VAR}``
interpolated from the environment."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from voxpipe.bots.problems import ConfigError, Path_, Problem, format_path

# A bot file is a few hundred values nested a few levels deep. These bounds stop a hostile or
# broken file (``[[[[...`` ten thousand deep, an alias bomb that expands to millions of values,
# an alias inside its own anchor) with a clear error instead of a RecursionError or minutes of
# work.
MAX_DEPTH = 64
MAX_VALUES = 50_000


class TooLarge(Exception):
    """The document expands to more than ``MAX_VALUES`` values (aliases, most likely)."""

    def __init__(self, node: yaml.Node) -> None:
        super().__init__()
        self.node = node


def check_depth(text: str, file: str) -> None:
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


class Document:
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
            raise TooLarge(node)
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
