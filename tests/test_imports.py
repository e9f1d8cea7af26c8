"""The package's layering, read from its source with `ast` (every import, including the ones
inside functions): no circle between top-level modules, and the campaign on top.

A top-level module is a direct child of `csp/` (`csp.config`, `csp.mtp`, `csp.campaign`, ...).
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import csp

PACKAGE = Path(csp.__file__).resolve().parent
# the only top-level modules allowed to import the campaign: the command line on top of it
CAMPAIGN_USERS = {"campaign", "commands", "cli"}


def _top(module: str) -> str | None:
    """`config` for 'csp.config.X', None for modules outside csp (or csp itself)."""
    parts = module.split(".")
    return parts[1] if parts[0] == "csp" and len(parts) > 1 else None


def _imported(node: ast.AST, package: str) -> list[str]:
    """Absolute names of the modules an import statement in `package` may load."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if not isinstance(node, ast.ImportFrom):
        return []
    base = node.module or ""
    if node.level:   # relative: from the importing module's package upwards
        parent = package.split(".")[: len(package.split(".")) - node.level + 1]
        base = ".".join(parent + ([node.module] if node.module else []))
    # `from csp import campaign` loads csp.campaign: count the imported names as modules too
    return [base] + [f"{base}.{alias.name}" for alias in node.names]


def import_graph() -> dict[str, dict[str, list[str]]]:
    """{importing top-level module: {imported top-level module: [files that import it]}}."""
    graph: dict[str, dict[str, list[str]]] = defaultdict(lambda: defaultdict(list))
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent)
        parts = rel.with_suffix("").parts
        package = ".".join(parts[:-1])   # the package a relative import starts from
        source = _top(".".join(parts))
        if source is None or source == "__init__":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), str(path))):
            for name in _imported(node, package):
                target = _top(name)
                if target is not None and target != source:
                    graph[source][target].append(str(rel))
    return graph


def find_cycle(graph: dict[str, dict[str, list[str]]]) -> list[str] | None:
    """One circle of the graph as [a, b, ..., a], or None."""
    state: dict[str, str] = {}   # "open" while on the current path, "done" after
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = "done"
        return None

    for start in sorted(graph):
        if start not in state:
            found = visit(start)
            if found:
                return found
    return None


def test_the_graph_sees_known_edges():
    graph = import_graph()
    assert "config" in graph["campaign"] and "errors" in graph["config"]
    assert "campaign" in graph["commands"]


def test_no_circle_between_top_level_modules():
    graph = import_graph()
    cycle = find_cycle(graph)
    where = "" if cycle is None else "; ".join(
        f"{a} -> {b} in {', '.join(sorted(set(graph[a][b])))}" for a, b in zip(cycle, cycle[1:]))
    assert cycle is None, f"import circle {' -> '.join(cycle)}: {where}"


def test_only_the_command_line_imports_the_campaign():
    graph = import_graph()
    users = {src: files["campaign"] for src, files in graph.items() if "campaign" in files}
    assert set(users) <= CAMPAIGN_USERS, {k: v for k, v in users.items() if k not in CAMPAIGN_USERS}


def test_find_cycle_finds_a_circle():
    assert find_cycle({"a": {"b": []}, "b": {"c": []}, "c": {"a": []}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b": []}, "b": {}}) is None
