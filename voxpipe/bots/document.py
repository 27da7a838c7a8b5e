"""A bot file's YAML as plain data, with the position of every key and value, ``${VAR}``
interpolated from the environment."""

from __future__ import annotations

import os
import re
from typing import Any

import yaml

from voxpipe.bots.problems import Path_, Problem, format_path


class Document:
    """The parsed file as plain data, with the position of every value and key."""

    def __init__(self, file: str) -> None:
        self.file = file
        self.values: dict[Path_, tuple[int, int]] = {}
        self.keys: dict[Path_, tuple[int, int]] = {}
        self.problems: list[Problem] = []
        self.unset: set[Path_] = set()  # values missing an environment variable

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
        self.values[path] = (node.start_mark.line + 1, node.start_mark.column + 1)
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
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        scalar = _construct_scalar(node)
        if isinstance(scalar, str):
            scalar = self._interpolate(scalar, path)
        return scalar

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
