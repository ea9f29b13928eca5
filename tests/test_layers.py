"""The package's import graph: no cycle, and no lower layer importing a higher one.

Read from the source (no module is imported), counting every import, also the ones inside
functions: a lazy import is still a dependency. The layers, lowest first, say what may know
what: the state machine below the threads that run it, the recipes below the manager that
offers them, nothing of the library above the CLI.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent / "locksmith"

#: Lowest first. A module may import modules of its own layer or of lower ones only.
LAYERS: list[set[str]] = [
    {"_exceptions", "_states", "_compat", "_backoff", "_deadline", "_clock", "_log", "_cancel"},
    {"_durations"},
    {"_validate", "_config"},
    {"_models", "_lease", "_core", "_stats", "_queue"},
    {"_transport"},
    {"_error_map", "_adapter"},
    {"_endpoints"},
    {"_client", "_follow"},
    {"_protocol"},
    {"_machine"},  # the sans-IO state machine
    {"_settings"},
    {"_engine"},  # the threads that run it
    {"_fencing"},
    {"_lock", "_lockset"},
    {"_ports"},
    {"_election", "_semaphore", "_singleton", "_registration", "_child", "_fair"},  # recipes
    {"_manager"},
    {"aio"},  # the asyncio front-end: the same machine, the async client, async recipes
    {"__init__", "__main__", "_cli", "testing", "demo", "prometheus"},
]

#: The state machine and everything it imports must not touch threads, sockets, time or the OS.
SANS_IO = "_machine"
FORBIDDEN_IN_SANS_IO = {"threading", "socket", "time", "os", "asyncio", "select", "ssl"}


def _component(path: Path) -> str:
    rel = path.relative_to(ROOT)
    return rel.parts[0].removesuffix(".py")


def _imports(path: Path) -> Iterator[str]:
    """Every module name ``path`` imports (absolute names; relative ones resolved)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = ".".join(("locksmith", *path.relative_to(ROOT).parent.parts))
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[: len(base) - (node.level - 1)]
                module = ".".join([*base, node.module] if node.module else base)
            else:
                module = node.module or ""
            yield module
            for alias in node.names:  # ``from locksmith import _x`` imports a module too
                yield f"{module}.{alias.name}"


def _graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for path in ROOT.rglob("*.py"):
        comp = _component(path)
        deps = graph.setdefault(comp, set())
        for name in _imports(path):
            parts = name.split(".")
            if parts[0] == "locksmith" and len(parts) > 1:
                target = parts[1]
                exists = (ROOT / f"{target}.py").exists() or (ROOT / target).is_dir()
                if exists and target != comp:
                    deps.add(target)
    return graph


def _stdlib_imports(component: str) -> set[str]:
    paths = [ROOT / f"{component}.py"] if (ROOT / f"{component}.py").exists() else []
    paths += list((ROOT / component).rglob("*.py")) if (ROOT / component).is_dir() else []
    return {name.split(".")[0] for path in paths for name in _imports(path)}


def _layer_of(component: str) -> int:
    for i, layer in enumerate(LAYERS):
        if component in layer:
            return i
    raise AssertionError(f"locksmith/{component} is in no layer: add it to LAYERS")


def test_every_module_has_a_layer() -> None:
    for comp in _graph():
        _layer_of(comp)


def test_no_lower_layer_imports_a_higher_one() -> None:
    wrong = [
        f"{comp} (layer {_layer_of(comp)}) imports {dep} (layer {_layer_of(dep)})"
        for comp, deps in _graph().items()
        for dep in deps
        if _layer_of(dep) > _layer_of(comp)
    ]
    assert wrong == []


def test_the_import_graph_has_no_cycle() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1: on the stack, 2: done
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = [*stack[stack.index(dep) :], dep]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_the_state_machine_does_no_io() -> None:
    graph = _graph()
    closure: set[str] = set()
    todo = [SANS_IO]
    while todo:
        comp = todo.pop()
        if comp in closure:
            continue
        closure.add(comp)
        todo.extend(graph.get(comp, ()))
    offenders = {
        comp: sorted(_stdlib_imports(comp) & FORBIDDEN_IN_SANS_IO) for comp in sorted(closure)
    }
    assert {c: mods for c, mods in offenders.items() if mods} == {}
    assert "_engine" not in closure and "_client" not in closure


def test_the_engine_and_recipes_never_import_python_consul2() -> None:
    users = {
        comp
        for path in ROOT.rglob("*.py")
        for name in _imports(path)
        if name.split(".")[0] == "consul"
        for comp in [_component(path)]
    }
    assert users == {"_adapter"}
