"""The shape of the house: layers import downward only, no import circles, rooms small
enough to hold in mind. Read from the source (every import, also inside functions), so a
lazy import cannot hide a circle."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Lower number = lower layer. A module may import its own package or any lower layer.
LAYERS: dict[str, int] = {
    "core": 0,  # the package's own __init__ (a version string, nothing imported)
    "core.resources": 0,  # package data
    "core.config": 1,
    "core.io": 2,
    "core.metrics": 2,
    "core.data": 3,
    "core.text": 4,
    "core.vision": 4,
    "core.search": 5,
    "core.curate": 6,
    "core.cli": 7,
    "dashboard": 7,
    "core.__main__": 8,
}
MAX_FILE_LINES = 800
MAX_FUNCTION_LINES = 100


def _modules() -> dict[str, Path]:
    mods: dict[str, Path] = {}
    for top in ("core", "dashboard"):
        for p in (ROOT / top).rglob("*.py"):
            parts = p.relative_to(ROOT).with_suffix("").parts
            name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
            mods[name] = p
    return mods


def _imports(name: str, path: Path, mods: dict[str, Path]) -> set[str]:
    pkg = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = pkg.split(".")[: len(pkg.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            targets = [mod] + [f"{mod}.{a.name}" for a in node.names]
        else:
            continue
        out.update(t for t in targets if t in mods and t != name)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    return {name: _imports(name, path, mods) for name, path in mods.items()}


def _layer(module: str) -> tuple[str, int]:
    for prefix in sorted(LAYERS, key=len, reverse=True):
        if module == prefix or module.startswith(prefix + "."):
            return prefix, LAYERS[prefix]
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS")


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for start in graph:
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on.add(start)
        while work:
            v, it = work[-1]
            for w in it:
                if w not in index:
                    index[w] = low[w] = counter
                    counter += 1
                    stack.append(w)
                    on.add(w)
                    work.append((w, iter(sorted(graph.get(w, ())))))
                    break
                if w in on:
                    low[v] = min(low[v], index[w])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[v])
                if low[v] == index[v]:
                    comp = []
                    while True:
                        w = stack.pop()
                        on.discard(w)
                        comp.append(w)
                        if w == v:
                            break
                    if len(comp) > 1:
                        found.append(sorted(comp))
    return found


def test_no_import_circles():
    assert _cycles(_graph()) == []


def test_layers_import_downward_only():
    upward = []
    for a, targets in _graph().items():
        la, ra = _layer(a)
        for b in targets:
            lb, rb = _layer(b)
            if lb != la and rb >= ra:
                upward.append(f"{a} -> {b}")
    assert upward == []


def test_core_has_no_streamlit():
    offenders = [
        str(p.relative_to(ROOT))
        for p in (ROOT / "core").rglob("*.py")
        if any(
            (
                isinstance(n, ast.Import)
                and any(a.name.split(".")[0] == "streamlit" for a in n.names)
            )
            or (isinstance(n, ast.ImportFrom) and (n.module or "").split(".")[0] == "streamlit")
            for n in ast.walk(ast.parse(p.read_text()))
        )
    ]
    assert offenders == []


def test_rooms_small_enough_to_hold_in_mind():
    too_big = []
    for top in ("core", "dashboard"):
        for p in (ROOT / top).rglob("*.py"):
            text = p.read_text()
            rel = p.relative_to(ROOT)
            if len(text.splitlines()) > MAX_FILE_LINES:
                too_big.append(f"{rel}: {len(text.splitlines())} lines")
            for node in ast.walk(ast.parse(text)):
                if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                    n = node.end_lineno - node.lineno + 1
                    if n > MAX_FUNCTION_LINES:
                        too_big.append(f"{rel}:{node.lineno} {node.name}: {n} lines")
    assert too_big == []


def test_the_architecture_check_sees_a_circle(tmp_path):
    """The cycle finder itself: a -> b -> c -> a is one circle, d alone is none."""
    graph = defaultdict(set, {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}})
    assert _cycles(graph) == [["a", "b", "c"]]
