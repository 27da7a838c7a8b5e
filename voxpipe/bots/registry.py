"""The processor registry: built-in types plus plugins from the ``voxpipe.processors`` entry points.

A plugin distribution registers a processor type with one line in its ``pyproject.toml``::

    [project.entry-points."voxpipe.processors"]
    shout = "my_package.shout:ShoutSettings"

The entry point's name is the YAML key (``- shout: {...}``); its object is a ``ProcessorSettings``
subclass (or an annotated union of them, discriminated by ``provider``).
"""

from __future__ import annotations

import importlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cached_property
from typing import Any, get_args

from pydantic import BaseModel, TypeAdapter

log = logging.getLogger("voxpipe.registry")

ENTRY_POINT_GROUP = "voxpipe.processors"

# YAML key -> "module:attribute" of its settings model. Imported only when first needed.
BUILTIN: dict[str, str] = {
    "echo": "voxpipe.processors.echo:EchoSettings",
    "vad": "voxpipe.processors.vad:VADSettings",
    "barge_in": "voxpipe.processors.barge_in:BargeInSettings",
    "silence_timeout": "voxpipe.processors.silence_timeout:SilenceTimeoutSettings",
    "dtmf": "voxpipe.processors.dtmf:DTMFSettings",
    "stt": "voxpipe.processors.stt:STTSettings",
    "tts": "voxpipe.processors.tts:TTSSettings",
    "llm": "voxpipe.processors.llm:LLMSettings",
    "pipecat": "voxpipe.processors.pipecat:PipecatSettings",
}


@dataclass(frozen=True)
class ProcessorType:
    """One processor type as the YAML sees it: a key, a settings model and where it came from."""

    name: str
    settings: Any
    origin: str = "built-in"

    @cached_property
    def adapter(self) -> TypeAdapter[Any]:
        """Validates a settings block into the settings model."""
        return TypeAdapter(self.settings)

    @property
    def models(self) -> list[type[BaseModel]]:
        """The concrete settings models (one, or one per provider)."""
        return _models_of(self.settings)

    @property
    def doc(self) -> str:
        """The first paragraph of the type's documentation, on one line.

        A single model's docstring; for providers, the text in the union's ``Annotated``
        metadata (``Annotated[A | B, Field(discriminator="provider"), "Speech-to-text."]``).
        """
        models = self.models
        text = (models[0].__doc__ or "") if len(models) == 1 else _union_doc(self.settings)
        return " ".join(text.strip().split("\n\n")[0].split())


def _models_of(annotation: Any) -> list[type[BaseModel]]:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    found: list[type[BaseModel]] = []
    for arg in get_args(annotation):
        found.extend(_models_of(arg))
    return found


def _union_doc(annotation: Any) -> str:
    for meta in getattr(annotation, "__metadata__", ()):
        if isinstance(meta, str):
            return meta
    return ""


def _load(ref: str) -> Any:
    module, _, attr = ref.partition(":")
    return getattr(importlib.import_module(module), attr)


class Registry:
    """Every processor type available to bots in this process."""

    def __init__(self) -> None:
        self._types: dict[str, ProcessorType] = {}
        self.problems: list[str] = []

    @classmethod
    def default(cls, *, plugins: bool = True) -> Registry:
        """Built-in types plus (unless ``plugins`` is false) every installed plugin."""
        from importlib.metadata import entry_points  # 15 ms to import: only when needed

        registry = cls()
        for name, ref in BUILTIN.items():
            registry.add(ProcessorType(name, _load(ref)))
        for ep in entry_points(group=ENTRY_POINT_GROUP) if plugins else ():
            try:
                settings = ep.load()
            except Exception as exc:
                problem = f"plugin {ep.name!r} ({ep.value}) failed to load: {exc}"
                registry.problems.append(problem)
                log.warning(problem)
                continue
            origin = ep.dist.name if ep.dist is not None else ep.value
            registry.add(ProcessorType(ep.name, settings, origin=f"plugin {origin}"))
        return registry

    def add(self, ptype: ProcessorType) -> None:
        """Register a type; the first origin to claim a name keeps it (built-ins come first)."""
        if not _models_of(ptype.settings):
            raise TypeError(f"processor type {ptype.name!r}: settings must be a pydantic model")
        existing = self._types.get(ptype.name)
        if existing is not None and existing.origin != ptype.origin:
            problem = (
                f"{ptype.origin} tries to register processor type {ptype.name!r}, "
                f"already registered by {existing.origin}; ignored"
            )
            self.problems.append(problem)
            log.warning(problem)
            return
        self._types[ptype.name] = ptype

    def get(self, name: str) -> ProcessorType | None:
        """The type registered under ``name``."""
        return self._types.get(name)

    def names(self) -> list[str]:
        """Every registered type name, sorted."""
        return sorted(self._types)

    def __iter__(self) -> Iterator[ProcessorType]:
        return iter([self._types[name] for name in self.names()])


_default: Registry | None = None


def default_registry() -> Registry:
    """The process-wide registry (built once)."""
    global _default
    if _default is None:
        _default = Registry.default()
    return _default
