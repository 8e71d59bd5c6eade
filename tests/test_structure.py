"""The package's import graph: no cycles, and no module reaches into another's privates.

Every ``import``/``from ... import`` counts, at module level or inside a function (a
function-local import only hides a cycle until that function runs). Imports under
``if TYPE_CHECKING:`` are left out: they never run. ``from pkg import name`` is an edge to
``pkg.name`` when that is a module, else to ``pkg`` (its ``__init__``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

import throttlepool

ROOT = Path(throttlepool.__file__).parent
PACKAGE = "throttlepool"


@dataclass(frozen=True)
class Module:
    name: str
    path: Path
    is_package: bool


def modules() -> dict[str, Module]:
    found = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        name = ".".join(parts)
        found[name] = Module(name, path, is_package)
    return found


def _absolute(module: Module, level: int, name: str | None) -> str:
    if level == 0:
        return name or ""
    base = module.name.split(".")
    if not module.is_package:
        base.pop()
    if level > 1:
        base = base[: len(base) - (level - 1)]
    return ".".join([*base, name] if name else base)


def _type_checking_only(tree: ast.AST) -> set[int]:
    """ids of the import nodes under ``if TYPE_CHECKING:``."""
    skipped: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If):
            test = node.test
            named = (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
                isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
            if named:
                for inner in node.body:
                    skipped.update(id(n) for n in ast.walk(inner))
    return skipped


@dataclass(frozen=True)
class Import:
    importer: str
    target: str  # the module the statement depends on
    name: str | None  # the name taken from it (``from target import name``)
    line: int


def imports(all_modules: dict[str, Module]) -> list[Import]:
    found = []
    for module in all_modules.values():
        tree = ast.parse(module.path.read_text(encoding="utf-8"))
        skipped = _type_checking_only(tree)
        for node in ast.walk(tree):
            if id(node) in skipped:
                continue
            if isinstance(node, ast.Import):
                for alias in node.names:
                    if alias.name.split(".")[0] == PACKAGE:
                        found.append(Import(module.name, alias.name, None, node.lineno))
            elif isinstance(node, ast.ImportFrom):
                target = _absolute(module, node.level, node.module)
                if target.split(".")[0] != PACKAGE:
                    continue
                for alias in node.names:
                    sub = f"{target}.{alias.name}"
                    if sub in all_modules:
                        found.append(Import(module.name, sub, None, node.lineno))
                    else:
                        found.append(Import(module.name, target, alias.name, node.lineno))
    return found


def cycles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(edges.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in sorted(edges):
        if v not in index:
            visit(v)
    return found


def test_the_walker_sees_function_local_imports_and_skips_type_checking(tmp_path: Path
                                                                        ) -> None:
    source = ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from .b import B\n"
              "def f():\n    from .c import _hidden\n")
    path = tmp_path / "a.py"
    path.write_text(source)
    module = Module("throttlepool.a", path, False)
    found = imports({"throttlepool.a": module})
    assert [(i.target, i.name) for i in found] == [("throttlepool.c", "_hidden")]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_no_import_cycle_among_the_packages_modules() -> None:
    all_modules = modules()
    edges: dict[str, set[str]] = {name: set() for name in all_modules}
    for imp in imports(all_modules):
        if imp.target in all_modules and imp.target != imp.importer:
            edges[imp.importer].add(imp.target)
    assert cycles(edges) == []


def test_no_module_imports_a_private_name_of_another() -> None:
    private = [
        f"{imp.importer}:{imp.line} imports {imp.name} from {imp.target}"
        for imp in imports(modules())
        if imp.name is not None and imp.name.startswith("_") and not imp.name.startswith("__")
        and imp.target != imp.importer
    ]
    assert private == []


def _dependency_privates(path: Path) -> list[str]:
    """``module:line`` of each import of another package's private module or name (one
    whose dotted path has a part starting with ``_``), which its next release may drop."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [f"{node.module}.{alias.name}" for alias in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] not in (PACKAGE, "__future__") and any(
                    p.startswith("_") and not p.startswith("__") for p in parts):
                found.append(f"{path.name}:{node.lineno} {name}")
    return found


def test_no_module_imports_a_private_part_of_a_dependency() -> None:
    found = [hit for module in modules().values() for hit in _dependency_privates(module.path)]
    assert found == []
