"""The package's layers import downward only: computed from the source, no import runs.

errors and the validators at the bottom, then the binding, the runtime, the
services, the devices and the targets. A module that provides one of the
runtime's services registers it by name (runtime.SERVICES) instead of being
imported by the runtime.
"""

from __future__ import annotations

import ast
from pathlib import Path

from conftest import PROJECT_DIR

PACKAGE = PROJECT_DIR / "src" / "pyspdk_sys"

# Imports made only for type checking, from a lower layer to a higher one. Each
# would be a place where the lower module still knows the higher one's type;
# the request holders see their device through a Protocol (IoDevice) instead.
TYPING_ONLY_BACK_EDGES: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def import_graph() -> tuple[dict[str, set[str]], set[tuple[str, str]]]:
    """(module -> modules it imports when it runs, typing-only edges), of the package."""
    modules = {_module_name(p): p for p in PACKAGE.rglob("*.py") if p.name != "_cffi_build.py"}
    graph: dict[str, set[str]] = {name: set() for name in modules}
    typing_only: set[tuple[str, str]] = set()

    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]

        def targets(node: ast.AST, package: str = package) -> set[str]:
            found: set[str] = set()
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package.split(".")[: len(package.split(".")) - node.level + 1]
                    module = ".".join(base + ([node.module] if node.module else []))
                else:
                    module = node.module or ""
                if node.module and module in modules:
                    found.add(module)
                found |= {f"{module}.{a.name}" for a in node.names} & modules.keys()
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names} & modules.keys()
            return found

        tree = ast.parse(path.read_text())
        typing_nodes: set[int] = set()
        for node in ast.walk(tree):
            if isinstance(node, ast.If) and _is_type_checking(node):
                for inner in ast.walk(node):
                    typing_nodes.add(id(inner))
                    typing_only |= {(name, t) for t in targets(inner)}
        for node in ast.walk(tree):
            if id(node) not in typing_nodes:
                graph[name] |= targets(node) - {name}
    return graph, typing_only


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for nxt in graph[node]:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                top = stack.pop()
                on_stack.discard(top)
                component.append(top)
                if top == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for nxt in graph[todo.pop()] - seen:
            seen.add(nxt)
            todo.append(nxt)
    return seen


def test_the_package_has_no_import_cycle() -> None:
    graph, _ = import_graph()
    assert graph.get("pyspdk_sys.runtime")
    assert _cycles(graph) == []


def test_the_runtime_imports_none_of_its_services() -> None:
    graph, _ = import_graph()
    above = {"pyspdk_sys.rpc", "pyspdk_sys.bdev", "pyspdk_sys.bdev.device", "pyspdk_sys.dma"}
    assert not (_reachable(graph, "pyspdk_sys.runtime") & above)


def test_typing_only_back_edges_are_the_known_ones() -> None:
    _, typing_only = import_graph()
    graph, _ = import_graph()
    back = {(a, b) for a, b in typing_only if a in _reachable(graph, b)}
    assert back == TYPING_ONLY_BACK_EDGES


def test_the_graph_sees_a_cycle_when_there_is_one() -> None:
    """The checker itself: a made-up cycle is found."""
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_importing_the_package_loads_no_service(spdk: object) -> None:
    """`import pyspdk_sys` stays lean: the services load on first use, by name."""
    import subprocess
    import sys

    code = (
        "import sys, pyspdk_sys\n"
        "print(sorted(m for m in ('asyncio', 'pyspdk_sys.rpc', 'pyspdk_sys.bdev',"
        " 'pyspdk_sys.runtime') if m in sys.modules))\n"
        "from pyspdk_sys.runtime import provided\n"
        "provided('rpc'); provided('open_bdev')\n"
        "print('pyspdk_sys.rpc' in sys.modules, 'pyspdk_sys.bdev' in sys.modules)\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.splitlines() == ["[]", "True True"]
