"""The packages point one way (docs/models.md, "Layers"): a module imports only from its own layer
or the layers below it, lazy imports (inside functions) included, and no two modules import each
other through any chain.

Read with ``ast`` from the source, so nothing is imported to check it.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[1] / "src"

#: Each package's (or top-level module's) rank; a module may import from packages of its own rank
#: or lower. ``models`` and ``data`` share a rank but must not import each other (checked
#: separately); so do ``figures`` and ``tables``, which take plain data and know nothing of models.
RANK = {
    # plain helpers: errors, strict JSON, atomic files, file formats, checks of stored data,
    # libraries' logging kept in check
    "errors": 0,
    "jsonio": 0,
    "fileio": 0,
    "logging_state": 0,
    "formats": 0,
    "stored": 0,
    "version": 0,
    # presentation: matplotlib figures and rich tables from plain data
    "figures": 1,
    "tables": 1,
    "models": 2,
    "data": 2,
    "analysis": 3,
    "train": 4,
    "deploy": 5,
    "lab": 6,
    "cli": 7,
    "__main__": 8,
}
#: Imports allowed to break the rule while they are being removed: every entry must still be
#: an import that breaks it. Empty since issue 19's second part; keep it so.
TEMPORARY_ALLOWED: set[tuple[str, str]] = set()
#: The package itself (``lightnets/__init__.py``) is the public API: it may reach any layer.
FACADE = "lightnets"


def _module_files() -> dict[str, Path]:
    modules = {}
    for path in (SOURCE / "lightnets").rglob("*.py"):
        parts = list(path.relative_to(SOURCE).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        modules[".".join(parts)] = path
    return modules


MODULES = _module_files()


def _owning_module(name: str) -> str:
    while name and name not in MODULES:
        name = name.rpartition(".")[0]
    return name


def _imports(module: str) -> set[str]:
    """Every lightnets module that ``module`` imports, at top level or inside functions."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                origin = ".".join(base + ([node.module] if node.module else []))
            else:
                origin = node.module or ""
            # ``from package import module`` imports that module; any other name is an
            # attribute of ``origin`` itself (its ``__init__`` for a package).
            names = [f"{origin}.{alias.name}" for alias in node.names]
            if any(name not in MODULES for name in names):
                names.append(origin)
        else:
            continue
        found.update(_owning_module(n) for n in names if n.split(".")[0] == "lightnets")
    found.discard("")
    found.discard(module)
    return found


GRAPH = {module: _imports(module) for module in MODULES}
#: The graph the rules are checked on: every import but the temporarily allowed ones.
CHECKED = {
    module: {t for t in targets if (module, t) not in TEMPORARY_ALLOWED}
    for module, targets in GRAPH.items()
}


def _layer(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else FACADE


def test_every_package_has_a_layer():
    unknown = {_layer(m) for m in MODULES} - set(RANK) - {FACADE}
    assert not unknown, f"packages without a layer in RANK: {sorted(unknown)}"


def _upward(module: str, target: str) -> bool:
    if _layer(module) == FACADE:
        return False
    return _layer(target) == FACADE or RANK[_layer(target)] > RANK[_layer(module)]


def test_imports_point_only_down():
    upward = [
        f"{module} -> {target}"
        for module, targets in CHECKED.items()
        for target in targets
        if _upward(module, target)
    ]
    assert not upward, "imports pointing up:\n" + "\n".join(sorted(upward))


@pytest.mark.parametrize(
    ("low", "other"),
    [("models", "data"), ("data", "models"), ("figures", "tables"), ("tables", "figures")],
)
def test_packages_of_one_rank_do_not_import_each_other(low, other):
    crossing = [
        f"{module} -> {target}"
        for module, targets in CHECKED.items()
        if _layer(module) == low
        for target in targets
        if _layer(target) == other
    ]
    assert not crossing, "\n".join(sorted(crossing))


def test_temporary_allowlist_holds_only_live_violations():
    # An entry whose import is gone, or no longer breaks a rule, must leave the allowlist.
    for module, target in sorted(TEMPORARY_ALLOWED):
        assert target in GRAPH.get(module, set()), f"{module} no longer imports {target}"
        cycle = module in _reachable(target, GRAPH)
        assert _upward(module, target) or cycle, f"{module} -> {target} breaks no rule"


def _reachable(start: str, graph: dict[str, set[str]]) -> set[str]:
    seen, todo = set(), [start]
    while todo:
        for target in graph[todo.pop()] - seen:
            seen.add(target)
            todo.append(target)
    return seen


def test_no_import_cycles():
    # Tarjan's strongly connected components: any component of more than one module is a cycle.
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    cycles: list[list[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in CHECKED[module]:
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == module:
                    break
            if len(component) > 1:
                cycles.append(sorted(component))

    for module in sorted(CHECKED):
        if module not in index:
            visit(module)
    assert not cycles, "import cycles:\n" + "\n".join(" <-> ".join(c) for c in cycles)
