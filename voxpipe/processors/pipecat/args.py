"""Checking a Pipecat class's constructor arguments against its signature, when a bot loads.

The parameters a class takes are those of its ``__init__`` and, while each ``__init__`` passes
``**kwargs`` on, of its bases' (``OpenAISTTService`` -> ``BaseWhisperSTTService`` -> ...).
Every argument is checked: unknown names (with a did-you-mean), missing required ones, and
values that cannot be of the annotated type. Values are converted where YAML cannot say them
directly: a string for an ``Enum`` parameter (``language: en``), a mapping for a
``settings`` parameter (the class's own ``Settings`` dataclass). Problems come back with the
argument's name, so that the bot file's error points at its line.
"""

from __future__ import annotations

import dataclasses
import enum
import importlib
import inspect
import logging
import types
import typing
from collections.abc import Iterator
from typing import Any

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

# Arguments whose value is a secret: masked in logs, dumps, `list` and `graph`.
SECRET_WORDS = ("key", "token", "secret", "password", "credential")


class ArgumentProblem(Exception):
    """One argument (``name``; empty for the whole call) is wrong."""

    def __init__(self, name: str, message: str) -> None:
        super().__init__(message)
        self.name = name
        self.message = message


def import_class(path: str) -> type[Any]:
    """The class at ``module.Class``; ``ValueError`` with a clear message otherwise."""
    route_logging()
    module_name, _, attr = path.rpartition(".")
    if not module_name:
        raise ValueError(f"{path!r} is not a dotted path such as pipecat.services.x.y.Class")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name == "pipecat":
            raise ValueError(
                "pipecat-ai is not installed; pip install 'voxpipe[pipecat]'"
            ) from None
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    except Exception as exc:  # a service whose own dependency is missing raises anything
        raise ValueError(f"cannot import {module_name}: {exc}") from None
    found = getattr(module, attr, None)
    if not isinstance(found, type):
        raise ValueError(f"{module_name} has no class {attr!r}")
    return found


@dataclasses.dataclass
class Parameter:
    """One constructor parameter: where it was declared and what it takes."""

    name: str
    owner: type[Any]
    annotation: Any
    required: bool


def parameters(cls: type[Any]) -> dict[str, Parameter]:
    """Every keyword a class's constructor accepts, following ``**kwargs`` up the bases."""
    found: dict[str, Parameter] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        if klass is object:
            break
        try:
            signature = inspect.signature(init)
        except (TypeError, ValueError):
            break
        hints = _hints(init)
        more = False
        for i, p in enumerate(signature.parameters.values()):
            if i == 0 and p.name == "self":
                continue
            if p.kind is p.VAR_KEYWORD:
                more = True
            elif p.kind is not p.VAR_POSITIONAL and p.name not in found:
                found[p.name] = Parameter(
                    p.name,
                    klass,
                    hints.get(p.name, Any),
                    p.default is p.empty,
                )
        if not more:
            break
    return found


def _hints(function: Any) -> dict[str, Any]:
    try:
        return typing.get_type_hints(function)
    except Exception:  # unresolvable forward references: check those values not at all
        return {}


def check_arguments(cls: type[Any], args: dict[str, Any]) -> dict[str, Any]:
    """The arguments converted for ``cls(**args)``; raises the ``ArgumentProblem``s found."""
    accepted = parameters(cls)
    problems: list[ArgumentProblem] = []
    converted: dict[str, Any] = {}
    for name, value in args.items():
        parameter = accepted.get(name)
        if parameter is None:
            from voxpipe.pipelines.settings import did_you_mean

            problems.append(
                ArgumentProblem(
                    name,
                    f"{cls.__name__} takes no argument {name!r}"
                    f"{did_you_mean(name, sorted(accepted))}",
                )
            )
            continue
        try:
            converted[name] = convert(parameter, value)
        except ValueError as exc:
            problems.append(ArgumentProblem(name, str(exc)))
    for parameter in accepted.values():
        if parameter.required and parameter.name not in args:
            problems.append(
                ArgumentProblem("", f"{cls.__name__} needs the argument {parameter.name!r}")
            )
    if problems:
        raise ExceptionGroup("arguments", problems)
    return converted


def convert(parameter: Parameter, value: Any) -> Any:
    """``value`` as the parameter's annotation wants it (``ValueError`` when it cannot be)."""
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    annotation = parameter.annotation
    for option in _options(annotation):
        if isinstance(option, type) and issubclass(option, enum.Enum) and isinstance(value, str):
            try:
                return option(value)
            except ValueError:
                choices = ", ".join(str(m.value) for m in option)
                raise ValueError(f"expected one of: {choices} (got {value!r})") from None
        if (
            isinstance(option, type)
            and dataclasses.is_dataclass(option)
            and isinstance(value, dict)
        ):
            return _dataclass(option, value)
        if isinstance(option, type) and issubclass(option, BaseModel) and isinstance(value, dict):
            try:
                return option.model_validate(value)
            except ValidationError as exc:
                first = exc.errors(include_url=False)[0]
                where = ".".join(str(part) for part in first["loc"])
                raise ValueError(f"{where}: {first['msg']}") from None
    if annotation is Any or value is None:
        return value
    try:
        adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    except Exception:  # a type pydantic cannot describe: the class checks it itself
        return value
    try:
        adapter.validate_python(value, strict=False)
    except ValidationError as exc:
        first = exc.errors(include_url=False)[0]
        raise ValueError(f"{first['msg']} (got {value!r})") from None
    return value


def _options(annotation: Any) -> Iterator[Any]:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        for arg in typing.get_args(annotation):
            yield from _options(arg)
    else:
        yield annotation


def _dataclass(cls: type[Any], value: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(value) - names)
    if unknown:
        from voxpipe.pipelines.settings import did_you_mean

        raise ValueError(
            f"{cls.__qualname__} has no field {unknown[0]!r}"
            f"{did_you_mean(unknown[0], sorted(names))}"
        )
    try:
        return cls(**value)
    except Exception as exc:
        raise ValueError(f"{cls.__qualname__}: {exc}") from None


def is_secret(name: str) -> bool:
    """Whether an argument's name says it holds a secret (``api_key``, ``auth_token``...)."""
    lowered = name.lower()
    return any(word in lowered for word in SECRET_WORDS)


_logging_routed = False


def route_logging() -> None:
    """Send Pipecat's log records (loguru, DEBUG and up to stderr by default) to Python logging
    at WARNING and up, so that they take the bot's log format, call ids and secret masking."""
    global _logging_routed
    if _logging_routed:
        return
    try:
        from loguru import logger
    except ImportError:  # no Pipecat either: importing the class says so
        return
    _logging_routed = True
    log = logging.getLogger("voxpipe.pipecat")

    def sink(message: Any) -> None:
        record = message.record
        log.log(max(record["level"].no, logging.WARNING), "%s", record["message"])

    logger.remove()
    logger.add(sink, level="WARNING", format="{message}")
