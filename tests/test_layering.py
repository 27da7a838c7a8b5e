"""The package's layers: each module imports only from its own layer and the ones below.

    frames, events, logs, caller_context, worker_env            (layer 0: vocabulary)
    pipelines                                                   (layer 1: the engine)
    processors, transports, conversation, sessions, tools,
    models, records, interop, testing                           (layer 2: parts of a bot)
    bots, http, ari, scenarios                                  (layer 3: the application)

Every ``import`` counts: at module level, inside functions, and under ``if TYPE_CHECKING:``
(listed apart). The known exceptions are allow-listed below, each with the issue-12 change that
removes it; an entry that no longer occurs fails too, so the lists only shrink.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import pytest

import voxpipe

PACKAGE = Path(voxpipe.__file__).parent

# The first name below ``voxpipe`` -> its layer. A new top-level module or package must be
# given a layer here.
LAYERS: dict[str, int] = {
    "": 0,  # voxpipe/__init__.py
    "frames": 0,
    "events": 0,
    "logs": 0,
    "caller_context": 0,
    "worker_env": 0,
    "pipelines": 1,
    "processors": 2,
    "transports": 2,
    "conversation": 2,
    "sessions": 2,
    "tools": 2,
    "models": 2,
    "records": 2,
    "interop": 2,
    "testing": 2,  # voxpipe/testing.py: the harness and fakes, built on the processors
    "bots": 3,
    "http": 3,
    "ari": 3,
    "scenarios": 3,
}

# Run-time imports (module level or inside a function) from a higher layer.
RUNTIME_ALLOWED: dict[tuple[str, str], str] = {}

# Imports under ``if TYPE_CHECKING:`` from a higher layer (annotations only).
TYPE_ONLY_ALLOWED: dict[tuple[str, str], str] = {
    # Layer 0 names the engine's Call in its observer/log interfaces. No issue-12 item removes
    # these: Call is only an annotation there, and events must stay below the engine, which
    # emits them.
    ("voxpipe.events", "voxpipe.pipelines.call"): "observer methods take a Call (annotation)",
    ("voxpipe.logs", "voxpipe.pipelines.call"): "call_started/call_ended take a Call (annotation)",
}


@dataclass(frozen=True)
class Import:
    """One import of a voxpipe module by a voxpipe module."""

    importer: str
    imported: str
    line: int
    type_only: bool  # under ``if TYPE_CHECKING:``

    def __str__(self) -> str:
        where = "TYPE_CHECKING import" if self.type_only else "import"
        return f"{self.importer}:{self.line}: {where} of {self.imported}"


def module_name(path: Path, root: Path = PACKAGE) -> str:
    """``voxpipe/processors/tts/base.py`` -> ``voxpipe.processors.tts.base``."""
    parts = list(path.relative_to(root.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def layer(module: str) -> int:
    """The layer of a voxpipe module; a module under no known name fails loudly."""
    top = module.split(".")[1] if "." in module else ""
    if top not in LAYERS:
        raise AssertionError(f"{module}: voxpipe.{top} has no layer: add it to LAYERS")
    return LAYERS[top]


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports(source: str, module: str, is_package: bool = False) -> list[Import]:
    """Every import of a voxpipe module in ``source`` (module level, in functions, type-only)."""
    tree = ast.parse(source)
    type_only: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for statement in node.body:
                type_only.update(id(inner) for inner in ast.walk(statement))
    package = module if is_package else module.rsplit(".", 1)[0]
    found: list[Import] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: resolve against the importing module's package
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                name = ".".join([*base, node.module] if node.module else base)
            else:
                name = node.module or ""
            # ``from voxpipe import workers`` imports the module voxpipe.workers.
            targets = (
                [f"{name}.{alias.name}" for alias in node.names] if name == "voxpipe" else [name]
            )
        else:
            continue
        for target in targets:
            if target == "voxpipe" or target.startswith("voxpipe."):
                found.append(Import(module, target, node.lineno, id(node) in type_only))
    return found


def violations(modules: dict[str, str]) -> list[Import]:
    """The imports, in ``{module name: source}``, of a module from a higher layer."""
    return [
        found
        for module, source in sorted(modules.items())
        for found in imports(source, module, any(m.startswith(f"{module}.") for m in modules))
        if layer(found.imported) > layer(found.importer)
    ]


def check(modules: dict[str, str]) -> list[str]:
    """Problems: violations not allow-listed, and allow-list entries that no longer occur."""
    problems: list[str] = []
    seen: set[tuple[bool, tuple[str, str]]] = set()
    for found in violations(modules):
        key = (found.importer, found.imported)
        seen.add((found.type_only, key))
        allowed = TYPE_ONLY_ALLOWED if found.type_only else RUNTIME_ALLOWED
        if key not in allowed:
            problems.append(
                f"{found}: layer {layer(found.importer)} imports from layer "
                f"{layer(found.imported)}; move the helper down or invert the dependency"
            )
    for type_only, allowed in ((False, RUNTIME_ALLOWED), (True, TYPE_ONLY_ALLOWED)):
        for key in allowed:
            if (type_only, key) not in seen:
                which = "TYPE_ONLY_ALLOWED" if type_only else "RUNTIME_ALLOWED"
                problems.append(f"{key[0]} no longer imports {key[1]}: remove it from {which}")
    return problems


def package_sources() -> dict[str, str]:
    return {module_name(path): path.read_text() for path in sorted(PACKAGE.rglob("*.py"))}


def test_every_import_respects_the_layers() -> None:
    sources = package_sources()
    assert "voxpipe.pipelines.processor" in sources and "voxpipe.bots.bot" in sources
    assert check(sources) == []


def test_the_engine_is_only_the_engine() -> None:
    """pipelines keeps processor, task, call, settings and the processors' contract (context);
    the application lives in bots."""
    engine = {path.stem for path in (PACKAGE / "pipelines").glob("*.py")}
    assert engine == {"__init__", "processor", "task", "call", "settings", "context"}


def test_every_allow_list_entry_says_why() -> None:
    for key, reason in {**RUNTIME_ALLOWED, **TYPE_ONLY_ALLOWED}.items():
        assert len(reason) > 20, key
        assert layer(key[1]) > layer(key[0]), f"{key} is no violation: remove it"


def test_a_processor_importing_the_application_fails() -> None:
    """A processor that imports the bot's config at run time, in a function, is caught."""
    sources = package_sources()
    sources["voxpipe.processors.echo"] += (
        "\n\ndef _sneaky() -> None:\n    from voxpipe.bots.config import load_bot\n"
    )
    problems = check(sources)
    assert len(problems) == 1
    assert "voxpipe.processors.echo" in problems[0] and "voxpipe.bots.config" in problems[0]
    assert "layer 2 imports from layer 3" in problems[0]


@pytest.mark.parametrize(
    ("line", "imported"),
    [
        ("import voxpipe.bots.serve", "voxpipe.bots.serve"),
        ("from voxpipe import http", "voxpipe.http"),
        ("from ..bots import cli", "voxpipe.bots"),
    ],
)
def test_the_engine_importing_upwards_fails(line: str, imported: str) -> None:
    sources = package_sources()
    sources["voxpipe.pipelines.task"] += f"\n{line}\n"
    problems = check(sources)
    assert len(problems) == 1 and imported in problems[0], problems


def test_a_type_only_import_is_listed_apart() -> None:
    sources = package_sources()
    sources["voxpipe.frames"] += (
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from voxpipe.pipelines.task import PipelineTask\n"
    )
    (found,) = [v for v in violations(sources) if v.importer == "voxpipe.frames"]
    assert found.type_only and found.imported == "voxpipe.pipelines.task"
    assert "TYPE_CHECKING import" in str(found)
    assert len(check(sources)) == 1


def test_an_allow_list_entry_that_no_longer_occurs_fails() -> None:
    sources = package_sources()
    sources["voxpipe.events"] = sources["voxpipe.events"].replace(
        "from voxpipe.pipelines.call import Call", "from voxpipe.frames import Frame as Call"
    )
    assert check(sources) == [
        "voxpipe.events no longer imports voxpipe.pipelines.call: remove it from TYPE_ONLY_ALLOWED"
    ]


def test_processors_are_given_the_context_not_the_bot() -> None:
    """No processor module names the application's Bot, even for annotations (item 2)."""
    sources = package_sources()
    sources["voxpipe.processors.echo"] += (
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from voxpipe.bots.bot import Bot\n"
    )
    (problem,) = check(sources)
    assert (
        "voxpipe.processors.echo" in problem
        and "TYPE_CHECKING import of voxpipe.bots.bot" in problem
    )


def test_a_module_without_a_layer_fails() -> None:
    with pytest.raises(AssertionError, match=r"voxpipe\.newthing has no layer"):
        layer("voxpipe.newthing.x")


# --- import cycles ---------------------------------------------------------------------------


def runtime_graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """Module -> the voxpipe modules it imports at run time (module level or in a function;
    ``if TYPE_CHECKING:`` imports left out); ``from voxpipe.x import name`` counts as
    ``voxpipe.x`` when ``name`` is no module."""
    graph: dict[str, set[str]] = {}
    for module, source in modules.items():
        is_package = any(m.startswith(f"{module}.") for m in modules)
        targets: set[str] = set()
        for found in imports(source, module, is_package):
            if found.type_only:
                continue
            target = found.imported
            while target not in modules and "." in target:
                target = target.rsplit(".", 1)[0]
            if target in modules and target != module:
                targets.add(target)
        graph[module] = targets
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one node (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in sorted(graph.get(node, ())):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group: list[str] = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                found.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def processor_packages(graph: dict[str, set[str]]) -> dict[str, set[str]]:
    """The same imports between the processor packages (``voxpipe.processors.stt`` ...)."""

    def package(module: str) -> str | None:
        parts = module.split(".")
        return ".".join(parts[:3]) if parts[:2] == ["voxpipe", "processors"] else None

    packages: dict[str, set[str]] = {}
    for module, targets in graph.items():
        source = package(module)
        if source is None:
            continue
        packages.setdefault(source, set()).update(
            target
            for target in map(package, targets)
            if target is not None and target != source and target != "voxpipe.processors"
        )
    return packages


def test_no_module_imports_itself_round_a_cycle() -> None:
    """Function-level imports count: a cycle hidden in a function is still a cycle."""
    assert cycles(runtime_graph(package_sources())) == []


def test_no_processor_package_imports_itself_round_a_cycle() -> None:
    """stt and tts (and the rest) share helpers through neutral modules, not each other."""
    assert cycles(processor_packages(runtime_graph(package_sources()))) == []


def test_a_cycle_hidden_in_a_function_is_caught() -> None:
    sources = package_sources()
    sources["voxpipe.processors.audio"] += (
        "\n\ndef _sneaky() -> None:\n    from voxpipe.processors.tts.base import TTSProcessor\n"
    )
    found = cycles(runtime_graph(sources))
    assert found and all("voxpipe.processors.audio" in group for group in found)
    assert any("voxpipe.processors.tts.base" in group for group in found)


def test_a_package_cycle_is_caught_and_a_type_only_import_is_no_cycle() -> None:
    sources = package_sources()
    sources["voxpipe.processors.stt.base"] += (
        "\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
        "    from voxpipe.processors.tts.base import TTSProcessor\n"
    )
    assert cycles(processor_packages(runtime_graph(sources))) == []
    sources["voxpipe.processors.stt.base"] += (
        "\n\ndef _helper() -> None:\n    from voxpipe.processors.tts.base import TTSProcessor\n"
    )
    sources["voxpipe.processors.tts.base"] += (
        "\n\ndef _other() -> None:\n    from voxpipe.processors.stt.base import STTProcessor\n"
    )
    assert cycles(processor_packages(runtime_graph(sources))) == [
        ["voxpipe.processors.stt", "voxpipe.processors.tts"]
    ]
