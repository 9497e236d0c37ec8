"""The shape of the code, as a reader meets it: short functions, and modules that do not import each other in a circle.

Read from the source with `ast` (nothing is imported), so that the rules hold for every file, tested or not.
- A function or method of `retinanet_lab/` (the lessons excepted: they are notebooks) is at most MAX_LINES lines,
  counted from its `def` line to the last line of its body, docstring and comments included (what a reader
  scrolls through; decorators not counted). A nested function counts on its own and inside its parent.
- No import cycle among the package's modules: every import counts, at the top of a module or inside a function
  (a lazy import breaks a cycle for Python, not for the reader), relative or absolute; `from retinanet_lab import X`
  is an import of the module the package takes X from.
"""

from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parent.parent / "retinanet_lab"
MAX_LINES = 60


def _modules() -> dict[str, Path]:
    """Dotted name -> file, for every module of the package (a package's name is its __init__.py)."""
    out = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


def long_functions(max_lines: int = MAX_LINES) -> list[str]:
    """'path:line name (N lines)' for each function of the package (lessons excepted) longer than max_lines."""
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        if "lessons" in path.relative_to(PACKAGE).parts:
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > max_lines:
                    found.append(f"{path.relative_to(PACKAGE.parent)}:{node.lineno} {node.name} ({lines} lines)")
    return found


def _reexports(modules: dict[str, Path]) -> dict[str, dict[str, str]]:
    """For each package: the names its __init__ imports from its modules (name -> module)."""
    out = {}
    for name, path in modules.items():
        if path.name == "__init__.py":
            out[name] = {}
            for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
                if isinstance(node, ast.ImportFrom):
                    source = _absolute(node, name, is_package=True)
                    for alias in node.names:
                        out[name][alias.asname or alias.name] = source
    return out


def _absolute(node: ast.ImportFrom, module: str, is_package: bool) -> str:
    """The absolute module name of `from <node.module> import ...` written in `module`."""
    if not node.level:
        return node.module or ""
    package = module.split(".") if is_package else module.split(".")[:-1]
    base = package[: len(package) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports (anywhere in its source)."""
    modules = _modules()
    reexports = _reexports(modules)
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                source = _absolute(node, name, path.name == "__init__.py")
                targets = []
                for alias in node.names:
                    if f"{source}.{alias.name}" in modules:  # from package import module
                        targets.append(f"{source}.{alias.name}")
                    elif source in reexports and alias.name in reexports[source] and source != name:
                        targets.append(reexports[source][alias.name])  # from package import X: X's own module
                    else:
                        targets.append(source)
            else:
                continue
            graph[name] |= {t for t in targets if t in modules and t != name}
    return graph


def import_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle [a, b, ..., a] through each strongly connected group of modules (Tarjan's algorithm)."""
    index, low, on_stack, stack, groups = {}, {}, set(), [], []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                groups.append(set(group))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [_cycle_in(graph, group) for group in groups]


def _cycle_in(graph: dict[str, set[str]], group: set[str]) -> list[str]:
    """A shortest cycle through the group's first module, inside the group (breadth first): [a, ..., a]."""
    start = min(group)
    parent, frontier = {start: None}, [start]
    while frontier:
        following = []
        for v in frontier:
            for w in sorted(graph[v] & group):
                if w == start:  # back to the start: the path to v, and the edge v -> start
                    path = [v]
                    while parent[path[-1]] is not None:
                        path.append(parent[path[-1]])
                    return path[::-1] + [start]
                if w not in parent:
                    parent[w] = v
                    following.append(w)
        frontier = following
    raise AssertionError(f"no cycle in {group}")  # pragma: no cover - a strongly connected group has one


def test_no_function_is_longer_than_a_screen():
    offenders = long_functions()
    assert not offenders, f"functions over {MAX_LINES} lines (split them into named parts):\n" + "\n".join(offenders)


def test_no_import_cycle_among_the_package_modules():
    cycles = import_cycles(import_graph())
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(c) for c in cycles)


def test_the_checks_can_fail():
    """The rules find what they are for: a long function, and a cycle through a lazy and a relative import."""
    graph = {"p.a": {"p.b"}, "p.b": {"p.c"}, "p.c": {"p.a"}, "p.d": {"p.a"}}
    assert import_cycles(graph) == [["p.a", "p.b", "p.c", "p.a"]]
    assert import_cycles({"p.a": {"p.b"}, "p.b": set()}) == []
    tree = ast.parse("from .. import seeds\nfrom .model import X\ndef f():\n    from .train import fit\n")
    assert [_absolute(n, "retinanet_lab.widgets.training", False) for n in ast.walk(tree)
            if isinstance(n, ast.ImportFrom)] == ["retinanet_lab", "retinanet_lab.widgets.model", "retinanet_lab.widgets.train"]
    graph = import_graph()
    assert "retinanet_lab.train" in graph["retinanet_lab.cli"]  # a lazy import inside a function counts
    assert "retinanet_lab.seeds" in graph["retinanet_lab.cli"]  # `from . import seeds` is the module seeds
    assert "retinanet_lab.matching" in graph["retinanet_lab.widgets.anchors"]  # `from ..matching import IGNORE`
    assert long_functions(max_lines=5)  # a low limit finds functions
