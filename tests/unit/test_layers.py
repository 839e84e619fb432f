"""The project's import graph against its intended layering (docs/layout.md), read from the source
with ``ast`` (every import, module-level or inside a function: a lazy import is still a
dependency). Fails with the offending imports named:

- a package imports only packages of a lower layer (never a higher one, never a sibling of its
  own layer), so the folders keep one concern each;
- the Airflow side (``dags/``, ``plugins/``) never reaches the TensorFlow-side packages
  (``exporters/``, ``validation/``): those run as step commands in the worker env;
- only ``dags/`` and ``plugins/`` import Airflow;
- no import circles between modules, inside a package or across packages.
"""
from __future__ import annotations

import ast
import functools
import os

from tests.conftest import ROOT

# low -> high; a package may import from a strictly lower rank only
RANK = {
    "registry": 0,      # object storage, the registry layout, the configuration schema
    "standin": 0,       # the TF-Serving-compatible stand-in server (stands alone)
    "tfs_api": 1,       # TF Serving's API: protos, signatures, inputs, batching, clients, auth
    "exporters": 2,     # checkpoint -> SavedModel candidate (TensorFlow, Model Garden)
    "serving": 2,       # the temporary TF Serving: launchers, image checks, the reaper
    "validation": 3,    # the verdict on a candidate, the regression gate, the report
    "production": 4,    # production state: lifecycle, rollout confirmation, what production serves
    "cli": 5, "deploy": 5, "services": 5,
    "tfs_release_airflow": 5,   # plugins/: Airflow glue
    "dags": 6,
    "demo": 7,          # the demo: trains, runs the pipeline, prints what it did
    "bench": 8,         # benchmarks (reuse the demo's models)
}
TENSORFLOW_SIDE = {"exporters", "validation"}
AIRFLOW_SIDE = {"dags", "tfs_release_airflow"}
SKIP = {"tests", "node_modules", ".git", ".run", "docker", "docs", "config"}


@functools.cache
def modules() -> dict[str, str]:
    """{dotted module name: path} for the project's Python files (plugins/ as tfs_release_airflow)."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(ROOT):
        rel = os.path.relpath(dirpath, ROOT)
        parts = [] if rel == "." else rel.split(os.sep)
        if parts and (parts[0] in SKIP or parts[0].startswith(".")):
            dirnames[:] = []
            continue
        for f in filenames:
            if not f.endswith(".py"):
                continue
            mod = parts + [f[:-3]]
            if mod[0] == "plugins":
                mod = mod[1:]
            if mod[-1] == "__init__":
                mod = mod[:-1]
            if mod:
                out[".".join(mod)] = os.path.join(dirpath, f)
    return out


def imports(path: str) -> list[str]:
    """Every absolute import target of a file (``from a import b`` gives ``a`` and ``a.b``)."""
    out = []
    for node in ast.walk(ast.parse(open(path).read(), path)):
        if isinstance(node, ast.Import):
            out += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            out += [node.module] + [f"{node.module}.{a.name}" for a in node.names]
    return out


@functools.cache
def project_graph() -> dict[str, set[str]]:
    return graph(modules())


def graph(mods: dict[str, str]) -> dict[str, set[str]]:
    """{module: project modules it imports}."""
    def resolve(name: str) -> str | None:
        while name and name not in mods:
            name = name.rpartition(".")[0]
        return name or None
    g = {}
    for m, path in mods.items():
        g[m] = {r for r in map(resolve, imports(path)) if r and r != m and not m.startswith(r + ".")}
    return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan, iterative)."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]
    for root in sorted(g):
        if root in index:
            continue
        work = [(root, iter(sorted(g[root])))]
        index[root] = low[root] = counter[0]; counter[0] += 1; stack.append(root); on.add(root)
        while work:
            v, it = work[-1]
            w = next(it, None)
            if w is not None:
                if w not in index:
                    index[w] = low[w] = counter[0]; counter[0] += 1; stack.append(w); on.add(w)
                    work.append((w, iter(sorted(g.get(w, ())))))
                elif w in on:
                    low[v] = min(low[v], index[w])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[v])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop(); on.discard(w); comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    out.append(sorted(comp))
    return out


def top(m: str) -> str:
    return m.split(".")[0]


def test_every_package_has_a_layer():
    assert {top(m) for m in modules()} <= set(RANK), "a new top-level package: give it a rank in RANK"


def test_no_package_imports_a_higher_layer_or_a_sibling():
    g = project_graph()
    wrong = sorted(f"{m} imports {d} ({top(m)} rank {RANK[top(m)]} -> {top(d)} rank {RANK[top(d)]})"
                   for m, deps in g.items() for d in deps
                   if top(d) != top(m) and RANK[top(d)] >= RANK[top(m)])
    assert not wrong, "upward or sideways imports:\n" + "\n".join(wrong)


def test_the_airflow_side_never_reaches_the_tensorflow_side():
    g = project_graph()
    wrong = sorted(f"{m} imports {d}" for m, deps in g.items() if top(m) in AIRFLOW_SIDE
                   for d in deps if top(d) in TENSORFLOW_SIDE)
    assert not wrong, "the Airflow side runs no TensorFlow code (those are step commands):\n" + "\n".join(wrong)


def test_only_dags_and_plugins_import_airflow():
    wrong = sorted(f"{m} ({path})" for m, path in modules().items() if top(m) not in AIRFLOW_SIDE
                   and any(i.split(".")[0] == "airflow" for i in imports(path)))
    assert not wrong, "Airflow imported outside dags/ and plugins/:\n" + "\n".join(wrong)


def test_no_import_circles():
    found = cycles(project_graph())
    assert not found, "import circles:\n" + "\n".join(" <-> ".join(c) for c in found)


def test_the_checker_sees_a_circle_and_an_upward_import():
    """The checks above are only as good as the graph: a known circle and a known upward edge."""
    g = {"a.x": {"a.y"}, "a.y": {"a.z"}, "a.z": {"a.x"}, "b": set()}
    assert cycles(g) == [["a.x", "a.y", "a.z"]]
    real = project_graph()
    assert "tfs_api.protos" in real["tfs_api.clients"]                 # a module-level import
    assert "validation.expectations" in real["production.rollout"]      # a function-level one
    assert "tfs_release_airflow.step_command" in real["tfs_release_airflow.operators"]  # plugins/ named as imported
