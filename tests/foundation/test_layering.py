"""The layering rules of ../shared/DESIGN.md, read from the source (AST, nothing is imported):

- the agent side (``device_agents``) imports none of config / search / compress / spaces / deploy / the CLI;
- lower layers never import ``search``, ``deploy`` or the CLI;
- ``objectives`` imports no ``models``;
- a package reaches another package only through its public names (``edgetune.spaces``, not
  ``edgetune.spaces._discover``); the CLI may register each package's ``_cli`` module;
- ``compress`` imports nothing of ``models.builtin`` (recovery talks to the model's task adapter);
- the import graph between modules, counting imports inside functions too, has no cycle that crosses
  packages, and none at all in ``search``.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2] / "edgetune"
CLI = {"cli", "_cli_core"}
UPPER = {"search", "deploy", *CLI}
RULES = {  # package -> packages (first-level names under edgetune) it must not import
    "device_agents": {"config", "search", "compress", "spaces", "deploy", "assembly", "evaluation", *CLI},
    "objectives": {"models", "config", "search", "compress", "spaces", "deploy", "device_agents", "assembly", *CLI},
    "data": UPPER | {"config", "compress", "spaces", "assembly"},
    "models": UPPER | {"config", "compress", "spaces", "assembly"},
    "spaces": UPPER | {"compress", "config", "assembly"},
    "compress": UPPER | {"config", "assembly"},
    "config": UPPER - {"search"},  # config assembles every package's section, search's (``search._spec``) too
    "assembly": UPPER,
}


def _modules() -> dict[str, Path]:
    out = {}
    for p in ROOT.rglob("*.py"):
        parts = ("edgetune", *p.relative_to(ROOT).with_suffix("").parts)
        out[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = p
    return out


MODULES = _modules()


def _imports(path: Path, *, top_level_only: bool = False):
    """(line, imported module, is the import at module level) of every edgetune import in ``path``."""
    tree = ast.parse(path.read_text())
    top = {id(n) for n in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("edgetune"):
            targets = [node.module]
            targets += [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in MODULES]
        elif isinstance(node, ast.Import):
            targets = [a.name for a in node.names if a.name.startswith("edgetune")]
        else:
            continue
        if top_level_only and id(node) not in top:
            continue
        for t in targets:
            yield node.lineno, t, id(node) in top


def _package(module: str) -> str:
    return module.split(".")[1] if "." in module else ""


FORBIDDEN_MODULES = {"compress": ("edgetune.models.builtin",)}  # package -> module prefixes it must not import


def test_packages_import_only_what_their_layer_allows():
    bad = []
    for mod, path in MODULES.items():
        forbidden = RULES.get(_package(mod), set())
        if mod.rsplit(".", 1)[-1] == "_cli":  # a package's CLI module belongs to the CLI layer
            continue
        for line, target, _ in _imports(path):
            if _package(target) in forbidden or target.startswith(FORBIDDEN_MODULES.get(_package(mod), ("-",))):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not bad, "imports against the layering rules:\n" + "\n".join(bad)


def test_other_packages_are_reached_through_their_public_names():
    bad = []
    for mod, path in MODULES.items():
        for line, target, _ in _imports(path):
            parts = target.split(".")
            if len(parts) < 3 or _package(target) == _package(mod):
                continue
            private = [p for p in parts[2:] if p.startswith("_")]
            if private and not (private == ["_cli"] and _package(mod) in CLI):
                bad.append(f"{path.relative_to(ROOT.parent)}:{line} imports {target}")
    assert not bad, "private modules imported from another package (use its public names):\n" + "\n".join(bad)


@pytest.mark.parametrize("package", sorted({_package(m) for m in MODULES if MODULES[m].name == "__init__.py"
                                            and m.count(".") == 1}))
def test_every_package_declares_its_public_names(package):
    tree = ast.parse(MODULES[f"edgetune.{package}"].read_text())
    names = [t.id for n in tree.body if isinstance(n, (ast.Assign, ast.AugAssign))
             for t in (n.targets if isinstance(n, ast.Assign) else [n.target]) if isinstance(t, ast.Name)]
    assert "__all__" in names, f"edgetune/{package}/__init__.py has no __all__"


def test_no_import_cycle_crosses_packages():
    graph: dict[str, set[str]] = {m: set() for m in MODULES}
    for mod, path in MODULES.items():
        for _, target, _ in _imports(path):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            if target != mod:
                graph[mod].add(target)
    index, low, stack, on, cycles = {}, {}, [], set(), []

    def strongconnect(v):  # Tarjan's strongly connected components
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph[v]:
            if w not in index:
                strongconnect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = set()
            while True:
                w = stack.pop()
                on.discard(w)
                comp.add(w)
                if w == v:
                    break
            if len({_package(m) for m in comp}) > 1 or (len(comp) > 1 and _package(v) == "search"):
                cycles.append(sorted(comp))

    for v in graph:
        if v not in index:
            strongconnect(v)
    assert not cycles, f"import cycles across packages (or in search): {cycles}"
