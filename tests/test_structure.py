"""The shape of src/ (docs/architecture.md): no import cycles, and the pure rings stay pure.

Imports are read with ``ast`` from every module, including those under ``if
TYPE_CHECKING:`` and inside functions: a cycle hidden there is still a cycle a reader has
to untangle."""

from __future__ import annotations

import ast
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
PACKAGE = "sipwake"

# sip/ and policy/ do no I/O and read no clock (COMMON standards, docs/architecture.md).
PURE = ("sipwake.sip", "sipwake.policy")
IMPURE_STDLIB = {"asyncio", "socket", "time", "random", "ssl", "selectors", "threading"}
# ...and they import nothing from the rings around them.
OUTER = ("sipwake.app", "sipwake.transport", "sipwake.push", "sipwake.storage", "sipwake.api")


def modules() -> dict[str, Path]:
    out: dict[str, Path] = {}
    for path in (SRC / PACKAGE).rglob("*.py"):
        name = ".".join(path.relative_to(SRC).with_suffix("").parts)
        out[name.removesuffix(".__init__")] = path
    return out


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """Every module ``name`` imports: ours resolved to the module, others top-level."""
    tree = ast.parse(path.read_text())
    is_pkg = path.name == "__init__.py"
    found: set[str] = set()
    for node in ast.walk(tree):
        targets: list[str] = []
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = name.split(".") if is_pkg else name.split(".")[:-1]
                parts = parts[: len(parts) - (node.level - 1)]
                base = ".".join([*parts, base] if base else parts)
            targets = [
                f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names
            ]
        for t in targets:
            if t.split(".")[0] != PACKAGE:
                found.add(t.split(".")[0])
                continue
            while t and t not in known:
                t = t.rpartition(".")[0]
            if t and t != name:
                found.add(t)
    return found


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp: list[str] = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def graph() -> dict[str, set[str]]:
    known = modules()
    return {m: imports(m, p, known) for m, p in known.items()}


def test_no_import_cycles_in_src() -> None:
    assert cycles(graph()) == []


def test_cycle_finder_finds_a_cycle() -> None:
    # The check above must be able to fail: a -> b -> c -> a is found, d is not in it.
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a", "d"}, "d": set()}) == [["a", "b", "c"]]


def test_pure_rings_do_no_io_and_import_no_outer_ring() -> None:
    bad: list[str] = []
    for module, deps in graph().items():
        if not module.startswith(PURE):
            continue
        for dep in deps:
            if dep in IMPURE_STDLIB or dep.startswith(OUTER):
                bad.append(f"{module} imports {dep}")
    assert bad == []
