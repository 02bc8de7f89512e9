"""The package's layers, checked on the installed `ftlaunch` package: no import cycle between its modules, and no
layer importing one above it (the launcher reaches a backend only through the registry in `ftlaunch.backends`).

Every `import` counts, at module level or inside a function, since either makes one module depend on the other.
After a move of modules into new folders, extend LAYER_OF and FORBIDDEN: nothing else."""

from __future__ import annotations

import ast
import importlib.util
import os

import pytest

# Module name prefixes -> their layer; the longest matching prefix wins (DESIGN.md, "Layers").
LAYER_OF = {
    "ftlaunch": "cli",  # the package root (`python -m ftlaunch` starts the CLI) and anything not listed below
    "ftlaunch.core": "core",  # errors, the spec, techniques and data formats, models, job records, pre-flight, console
    "ftlaunch.planning": "planning",  # shapes, estimator, catalog, plan
    "ftlaunch.bench": "bench",
    "ftlaunch.cli": "cli",
    "ftlaunch.backends": "registry",  # the registry of backend facts (backends/__init__.py)
    "ftlaunch.backends.base": "registry",  # the backend contract, its records and shared helpers
    "ftlaunch.backends.failure": "registry",  # a failed job's reason, for every backend
    "ftlaunch.backends.*": "backend",  # one particular backend's package: ftlaunch.backends.<name>[.<module>]
    "ftlaunch.containers": "containers",
    "ftlaunch.containers.trainer": "trainer",
    "ftlaunch.templates": "templates",  # package data: Jinja templates, starter specs
}
# layer -> the layers it must not import: each imports only the layers below it. The launcher reaches a
# particular backend only through the registry; the trainer (in the job image) only core.
FORBIDDEN = {
    "core": {"planning", "bench", "cli", "backend", "containers", "trainer"},
    "registry": {"planning", "bench", "cli", "backend"},
    "backend": {"planning", "bench", "cli"},
    "planning": {"bench", "cli", "backend", "trainer"},
    "bench": {"cli", "backend", "trainer"},
    "cli": {"backend", "trainer"},
    "containers": {"planning", "bench", "cli", "registry", "backend"},
    "trainer": {"planning", "bench", "cli", "backend", "registry"},
}
SHARED: set[str] = set()  # modules every layer may import whatever its layer (none: core is that)


def discover() -> dict[str, str]:
    """Every module of the installed ftlaunch package reachable from it: module name -> source file. Walks each
    package's folders and follows imports into packages installed elsewhere (`[tool.setuptools.package-dir]`
    maps ftlaunch.backends and ftlaunch.containers to their own top-level folders). Imports only packages."""
    found: dict[str, str] = {}
    todo = {"ftlaunch"}
    seen: set[str] = set()
    while todo:
        name = min(todo, key=lambda n: (n.count("."), n))
        todo.discard(name)
        if name in seen:
            continue
        seen.add(name)
        parent = name.rpartition(".")[0]
        if parent and not found.get(parent, "").endswith("__init__.py"):
            continue  # only a package has submodules (this also keeps `find_spec` from importing modules)
        try:
            spec = importlib.util.find_spec(name)
        except (ImportError, ValueError):
            continue
        if spec is None or not (spec.origin or "").endswith(".py"):
            continue
        found[name] = spec.origin
        for folder in spec.submodule_search_locations or []:
            for entry in os.listdir(folder):
                if entry.endswith(".py") and entry != "__init__.py":
                    todo.add(f"{name}.{entry[:-3]}")
                elif os.path.isfile(os.path.join(folder, entry, "__init__.py")):
                    todo.add(f"{name}.{entry}")
        for target in _imported(name, spec.origin):
            parts = target.split(".")
            todo.update(".".join(parts[:i]) for i in range(2, len(parts) + 1))
    return found


def _imported(name: str, path: str) -> set[str]:
    """Every ftlaunch name the file imports (module level and inside functions), absolute: `import X` as X,
    `from X import y` as both X and X.y (`graph` keeps whichever is a module)."""
    return {n for base, names in _imports(name, path) for n in (base, *(f"{base}.{a}" for a in names))
            if n == "ftlaunch" or n.startswith("ftlaunch.")}


def _imports(name: str, path: str) -> list[tuple[str, tuple[str, ...]]]:
    """(module, names taken from it) per import statement in the file; relative imports made absolute."""
    package = name if path.endswith("__init__.py") else name.rpartition(".")[0]
    out = []
    for node in ast.walk(ast.parse(open(path, encoding="utf-8").read(), path)):
        if isinstance(node, ast.Import):
            out += [(a.name, ()) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[:len(parts) - node.level + 1] + ([node.module] if node.module else []))
            out.append((base, tuple(a.name for a in node.names)))
    return out


def graph(modules: dict[str, str]) -> dict[str, set[str]]:
    """module -> the ftlaunch modules it imports. `from P import y` depends on P.y where that is a module (a
    submodule taken from its package), else on P (a name defined in P)."""
    out = {}
    for name, path in modules.items():
        targets = set()
        for base, names in _imports(name, path):
            if not names and base in modules:
                targets.add(base)
            for n in names:
                if f"{base}.{n}" in modules:
                    targets.add(f"{base}.{n}")
                elif base in modules:
                    targets.add(base)
        targets.discard(name)
        out[name] = targets
    return out


def layer(module: str) -> str:
    parts = module.split(".")
    if len(parts) >= 3 and parts[:2] == ["ftlaunch", "backends"] and parts[2] not in ("base", "failure"):
        # a backend package's __init__ declares its FACTS for the registry (light, no SDK): registry layer;
        # its modules (render, backend, settings, entry, ...) are that backend
        return "registry" if len(parts) == 3 else LAYER_OF["ftlaunch.backends.*"]
    best = max((p for p in LAYER_OF if module == p or module.startswith(p + ".")), key=len, default="ftlaunch")
    return LAYER_OF[best]


def layer_violations(edges: dict[str, set[str]]) -> list[str]:
    """One line per import that FORBIDDEN rules out (imports of the SHARED modules are always allowed)."""
    return [f"{m} ({layer(m)}) imports {t} ({layer(t)})" for m in sorted(edges) for t in sorted(edges[m])
            if t not in SHARED and layer(t) in FORBIDDEN.get(layer(m), ())]


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """Each group of modules that import each other in a ring (Tarjan's strongly connected components), as
    one cycle through it, e.g. [a, b, a]."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            group = []
            while True:
                w = stack.pop()
                on.discard(w)
                group.append(w)
                if w == v:
                    break
            if len(group) > 1:
                out.append(_ring(sorted(group), edges))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return out


def _ring(group: list[str], edges: dict[str, set[str]]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        nxt = []
        for v in frontier:
            for w in sorted(edges[v] & members):
                if w == start:
                    return paths[v] + [start]
                if w not in paths:
                    paths[w] = paths[v] + [w]
                    nxt.append(w)
        frontier = nxt
    return group


@pytest.fixture(scope="module")
def edges() -> dict[str, set[str]]:
    return graph(discover())


def test_the_walk_sees_every_layer(edges):
    seen = {layer(m) for m in edges}
    assert {"core", "planning", "bench", "cli", "registry", "backend", "containers", "trainer"} <= seen, seen
    assert {"ftlaunch.planning.plan", "ftlaunch.backends.vertex.render", "ftlaunch.containers.trainer.run"} <= set(edges)


def test_no_import_cycles(edges):
    found = cycles(edges)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_no_layer_imports_a_layer_above_it(edges):
    bad = layer_violations(edges)
    assert not bad, "layer rule broken:\n" + "\n".join(bad)


def test_the_checks_catch_what_they_are_for():
    ring = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(ring) == [["a", "b", "c", "a"]]
    assert layer("ftlaunch.backends.local.docker") == "backend" and layer("ftlaunch.backends") == "registry"
    assert layer("ftlaunch.backends.vertex") == "registry"  # its FACTS
    assert layer("ftlaunch.planning.plan") == "planning" and layer("ftlaunch.containers.trainer.data") == "trainer"
    assert layer("ftlaunch.core.spec") == "core" and layer("ftlaunch.cli.plan_cli") == "cli" and layer("ftlaunch") == "cli"
    # what this change removed: the planner reaching into the local backend, and the base <-> jobs ring
    assert layer_violations({"ftlaunch.planning.plan": {"ftlaunch.backends.local.docker", "ftlaunch.backends"}}) == [
        "ftlaunch.planning.plan (planning) imports ftlaunch.backends.local.docker (backend)"]
    assert layer_violations({"ftlaunch.core.spec": {"ftlaunch.planning.plan"}}) == [
        "ftlaunch.core.spec (core) imports ftlaunch.planning.plan (planning)"]
    assert cycles({"ftlaunch.backends.base": {"ftlaunch.core.jobs"}, "ftlaunch.core.jobs": {"ftlaunch.backends.base"}}) == [
        ["ftlaunch.backends.base", "ftlaunch.core.jobs", "ftlaunch.backends.base"]]


def test_function_level_imports_count(tmp_path):
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from ftlaunch.backends.local import docker\n    from . import plan\n")
    assert _imported("ftlaunch.m", str(source)) >= {"ftlaunch.backends.local.docker", "ftlaunch.plan"}
