"""The package's shape, checked from its source: the command line on top and nothing importing back up into
it, no import cycles between modules, and no ``_private`` name of one module used from another package."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[2] / "src"
PKG = SRC / "unrolled"


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, ast.Module]:
    return {_module_name(p): ast.parse(p.read_text(), str(p)) for p in sorted(PKG.rglob("*.py"))}


MODULES = _modules()


def _package(module: str) -> str:
    """The sub-package a module belongs to: unrolled.kernels.lstm → unrolled.kernels; unrolled.layers →
    unrolled (the top-level modules form one package)."""
    parts = module.split(".")
    if module in MODULES and (PKG / Path(*parts[1:]) / "__init__.py").exists():
        return module  # a package's __init__ belongs to itself
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    is_pkg = (PKG / Path(*base[1:]) / "__init__.py").exists()
    base = base if is_pkg else base[:-1]
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def _imports(module: str, tree: ast.Module, top_level_only: bool):
    """(imported module, names, line) for each import of an unrolled module."""
    body = tree.body if top_level_only else list(ast.walk(tree))
    for node in body:
        if isinstance(node, ast.Import):
            for a in node.names:
                if a.name.startswith("unrolled"):
                    yield a.name, [], node.lineno
        elif isinstance(node, ast.ImportFrom):
            target = _resolve(module, node)
            if not target.startswith("unrolled"):
                continue
            names = [a.name for a in node.names]
            for n in names:  # `from unrolled.kernels import _jit` imports a module
                if f"{target}.{n}" in MODULES:
                    yield f"{target}.{n}", [], node.lineno
            yield (
                target,
                [n for n in names if f"{target}.{n}" not in MODULES],
                node.lineno,
            )


def _is_cli(module: str) -> bool:
    return any(module == top or module.startswith(top + ".") for top in ("unrolled.commands", "unrolled.cli"))


def test_nothing_below_the_command_line_imports_it():
    bad = [
        f"{m}:{line} imports {target}"
        for m, tree in MODULES.items()
        if not _is_cli(m)
        for target, _, line in _imports(m, tree, top_level_only=False)
        if _is_cli(target)
    ]
    assert not bad, "\n".join(bad)


def test_no_import_cycles_between_modules():
    graph = {m: set() for m in MODULES}
    for m, tree in MODULES.items():
        for target, _, _ in _imports(m, tree, top_level_only=True):
            while target not in MODULES and "." in target:
                target = target.rsplit(".", 1)[0]
            # a module importing its own package's __init__ (or a parent package) is Python's import order
            if target in MODULES and target != m and not m.startswith(target + "."):
                graph[m].add(target)
    seen, stack, cycles = set(), [], []

    def visit(m):
        if m in stack:
            cycles.append(" → ".join(stack[stack.index(m) :] + [m]))
            return
        if m in seen:
            return
        seen.add(m)
        stack.append(m)
        for t in sorted(graph[m]):
            visit(t)
        stack.pop()

    for m in sorted(graph):
        visit(m)
    assert not cycles, "\n".join(cycles)


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


def _defined_private_names(tree: ast.Module) -> set[str]:
    """Private functions, classes, methods and attributes (``self._x = …``) a module defines."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef | ast.ClassDef | ast.AsyncFunctionDef) and _private(node.name):
            names.add(node.name)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store) and _private(node.attr):
            names.add(node.attr)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store) and _private(node.id):
            names.add(node.id)
    return names


PRIVATE: dict[str, set[str]] = {}
for _m, _tree in MODULES.items():
    PRIVATE.setdefault(_package(_m), set()).update(_defined_private_names(_tree))


def _private_names(package: str) -> set[str]:
    return PRIVATE.get(package, set())


def test_no_private_name_is_used_from_another_package():
    bad = []
    for m, tree in MODULES.items():
        for target, names, line in _imports(m, tree, top_level_only=False):
            if _package(target) == _package(m) or target.startswith(_package(m) + "."):
                continue
            last = target.rsplit(".", 1)[-1]
            # private top-level modules (unrolled._checks, unrolled._files) are the whole package's internals
            if _private(last) and target.count(".") > 1:
                bad.append(f"{m}:{line} imports private module {target}")
            bad += [f"{m}:{line} imports {target}.{n}" for n in names if _private(n)]
        # attribute access to a private name only another package defines (layer._cache, layer._suffix)
        mine = _private_names(_package(m))
        for node in ast.walk(tree):
            if isinstance(node, ast.Attribute) and _private(node.attr) and node.attr not in mine:
                owners = sorted(p for p, names in PRIVATE.items() if node.attr in names)
                if owners:
                    bad.append(f"{m}:{node.lineno} uses .{node.attr}, private to {', '.join(owners)}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("module", sorted(MODULES))
def test_every_module_has_a_docstring(module):
    assert ast.get_docstring(MODULES[module]) or module.endswith("__init__") or "." not in module, module
