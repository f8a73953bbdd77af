"""No import cycle among trustlab's own modules (issue 17 item 6).

The graph is built with ``ast`` over ``src/trustlab``: an edge A -> B for every ``import``/``from ... import`` in A
that names trustlab module B (relative imports resolved; ``from pkg import name`` counts as importing
``pkg.name`` when that is a module, else ``pkg``). Edges into a package's own ``__init__`` from inside the package
are ignored (a child importing its parent package is how Python loads it anyway). Lazy ``"module:attr"`` registry
strings are not imports. Two graphs, both of which must be acyclic: module level (top-level statements, ``if``/``try`` blocks
included) and module plus function level (every import anywhere in the file)."""

from __future__ import annotations

import ast
from pathlib import Path


SRC = Path(__file__).resolve().parents[1] / "src"
ROOT = SRC / "trustlab"


def _modules() -> dict[str, Path]:
    out = {}
    for path in ROOT.rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _resolve(mod: str, is_pkg: bool, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = mod.split(".") if is_pkg else mod.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _owner(target: str) -> str | None:
    """The longest trustlab module name that ``target`` starts with."""
    while target:
        if target in MODULES:
            return target
        target = target.rpartition(".")[0]
    return None


def import_graph(module_level_only: bool) -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        is_pkg = path.name == "__init__.py"
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if module_level_only else list(ast.walk(tree))
        if module_level_only:  # module level includes `if`/`try` blocks at top level, not function bodies
            nodes = [n for top in tree.body if not isinstance(top, (ast.FunctionDef, ast.AsyncFunctionDef,
                                                                     ast.ClassDef)) for n in ast.walk(top)]
        for node in nodes:
            targets: list[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = _resolve(mod, is_pkg, node.level, node.module)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in MODULES else base for a in node.names]
            for target in targets:
                dep = _owner(target)
                if dep is None or dep == mod or mod.startswith(dep + "."):
                    continue
                graph[mod].add(dep)
    return graph


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
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


def test_every_module_imports():
    """Every module of trustlab imports on its own, in a fresh interpreter (optional extras aside: a missing vllm
    or grpc is skipped, a missing or partially initialised trustlab module is a failure)."""
    import subprocess
    import sys

    mods = sorted(m for m in MODULES if not m.endswith("__main__"))
    code = ("import importlib, sys\n"
            "bad = []\n"
            f"for m in {mods!r}:\n"
            "    try:\n"
            "        importlib.import_module(m)\n"
            "    except ImportError as exc:\n"
            "        if (exc.name or '').startswith('trustlab') or 'partially initialized' in str(exc):\n"
            "            bad.append(f'{m}: {exc}')\n"
            "print(bad)\n"
            "sys.exit(1 if bad else 0)\n")
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stdout + res.stderr[-3000:]


def test_no_module_level_import_cycle():
    assert cycles(import_graph(module_level_only=True)) == []


def test_no_function_level_import_cycle():
    """Lazy imports inside functions count too: a cycle hidden in a function body is still a cycle."""
    assert cycles(import_graph(module_level_only=False)) == []
