"""The import graph of proxy/ and backends/, read with ``ast``: no cycles between modules, imports
flow one way between the packages, and backends/ needs nothing of proxy/ but the section reader.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("proxy", "backends")

# Each package and the ones below it that it may import (its own modules always). Reading down
# the list, a package is above everything it may import: cli -> app -> http -> documents ->
# catalog, backends, auth; config and runtime underneath them, common under everything.
MAY_IMPORT: dict[str, set[str]] = {
    "proxy": set(),  # the package itself: empty
    "proxy.__main__": {"proxy.cli"},
    "proxy.cli": {
        "proxy.metrics",
        "proxy.app",
        "proxy.state",
        "proxy.server",
        "proxy.client",
        "proxy.catalog",
        "proxy.config",
        "proxy.runtime",
        "proxy.common",
    },
    "proxy.app": {
        "proxy.metrics",
        "proxy.limits",
        "proxy.health",
        "proxy.http",
        "proxy.state",
        "proxy.documents",
        "proxy.auth",
        "proxy.catalog",
        "backends",
        "proxy.config",
        "proxy.runtime",
        "proxy.common",
    },
    "proxy.health": {
        "proxy.metrics",
        "proxy.http",
        "proxy.documents",
        "proxy.catalog",
        "backends",
        "proxy.config",
        "proxy.runtime",
        "proxy.common",
    },
    "proxy.server": {"proxy.http", "proxy.config", "proxy.runtime", "proxy.common"},
    "proxy.http": {
        "proxy.metrics",
        "proxy.limits",
        "proxy.documents",
        "proxy.state",
        "proxy.auth",
        "backends",
        "proxy.config",
        "proxy.runtime",
        "proxy.common",
    },
    "proxy.documents": {
        "proxy.metrics",
        "proxy.catalog",
        "backends",
        "proxy.auth",
        "proxy.config",
        "proxy.common",
    },
    # The shared state: revocations, counted link uses, rate counters (its SQLite file sits
    # beside the catalog's).
    "proxy.state": {"proxy.catalog", "proxy.config", "proxy.common"},
    "proxy.catalog": {"proxy.config", "proxy.common"},
    "proxy.auth": {"proxy.config", "proxy.common"},
    "proxy.client": {"proxy.common"},  # the download client: nothing of the server
    "proxy.runtime": {"proxy.common"},
    "proxy.metrics": {"proxy.common"},  # instruments anyone may count with; prometheus-client
    "proxy.limits": {"proxy.config", "proxy.common"},
    "proxy.config": {"proxy.common"},
    "proxy.common": set(),
    "backends": set(),
}
# Single modules allowed past their package's line, and why: the settings assembly hands each
# section to its owner's parser (the server's limits to the edge's); a backend reads its options
# with the section reader.
ALSO_ALLOWED: dict[str, set[str]] = {
    "proxy.config.settings": {
        "proxy.catalog.settings",
        "proxy.server.config",
        "backends.registry",
    },
    "backends": {"proxy.config.section"},
}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {
        module_name(path): path
        for root in ROOTS
        for path in sorted((REPO / root).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def imported(tree: ast.AST, known: dict[str, Path]) -> Iterator[str]:
    """Every module of ``known`` the tree imports, lazily or not; typing-only imports (under
    ``if TYPE_CHECKING:``) are left out, since they never run."""
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and getattr(node.test, "id", None) == "TYPE_CHECKING":
            node.body = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            # "from package import module" imports the module; "from module import name" the module.
            names = [
                f"{node.module}.{alias.name}"
                if f"{node.module}.{alias.name}" in known
                else node.module
                for alias in node.names
            ]
        else:
            continue
        for name in names:
            # The longest known module the name starts with ("import a.b.c" may name a.b.c).
            while name and name not in known:
                name = name.rpartition(".")[0]
            if name:
                yield name


def graph() -> dict[str, set[str]]:
    known = modules()
    edges: dict[str, set[str]] = {}
    for name, path in known.items():
        tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
        edges[name] = {target for target in imported(tree, known) if target != name}
    return edges


def package(module: str) -> str:
    for key in sorted(MAY_IMPORT, key=len, reverse=True):
        if module == key or module.startswith(f"{key}."):
            return key
    raise AssertionError(f"{module} belongs to no package of MAY_IMPORT")


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Tarjan's strongly connected components of more than one module (or a self-import)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in sorted(edges[node]):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1 or node in edges[node]:
                found.append(sorted(component))

    for node in sorted(edges):
        if node not in index:
            visit(node)
    return found


def test_the_graph_is_read():
    edges = graph()
    assert "proxy.http.routes" in edges and "backends.s3" in edges
    assert "proxy.documents.service" in edges["proxy.http.routes"]
    assert "proxy.config.section" in edges["backends.base"]


def test_no_module_imports_itself_through_others():
    assert cycles(graph()) == []


def test_imports_flow_one_way_between_packages():
    wrong = []
    for module, targets in graph().items():
        home = package(module)
        for target in sorted(targets):
            there = package(target)
            allowed = there == home or there in MAY_IMPORT[home]
            allowed = allowed or target in ALSO_ALLOWED.get(module, set())
            allowed = allowed or target in ALSO_ALLOWED.get(home, set())
            if not allowed:
                wrong.append(f"{module} -> {target}")
    assert wrong == []


def test_backends_need_nothing_of_proxy_but_the_section_reader():
    of_proxy = {
        target
        for module, targets in graph().items()
        if package(module) == "backends"
        for target in targets
        if target.startswith("proxy.")
    }
    assert of_proxy == {"proxy.config.section"}
