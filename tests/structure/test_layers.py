"""The package's imports point one way: from the command line down to the leaves, with no cycle.

Every ``import`` of an ``ecgforge`` module in every file (lazy imports inside functions included; imports
under ``if TYPE_CHECKING:`` aside, they never run) is resolved to a file, and each file belongs to a layer.
A file may import its own layer or lower ones, never a higher one, and the file graph has no cycle, not even
through ``if TYPE_CHECKING:`` imports: two modules that need each other's types are one design knot, whether
or not the import runs.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PKG = ROOT / "ecgforge"

#: Bottom to top: module-name prefix -> layer. The longest matching prefix decides.
LAYERS: dict[str, int] = {
    # 1 leaves: no ecgforge import beyond each other
    "ecgforge.errors": 1, "ecgforge.version": 1, "ecgforge.interrupts": 1, "ecgforge.fsio": 1,
    "ecgforge.registry": 1, "ecgforge.progress": 1, "ecgforge.config_files": 1,
    # 2 ECG and data: leads, DSP, WFDB I/O, sources, the cache spec / writer / reader / inspection, splits, windows
    "ecgforge.data": 2,
    # 3 components: shared layers, augmentations, encoders, maskers, objectives
    "ecgforge.layers": 3, "ecgforge.augment": 3, "ecgforge.encoders": 3, "ecgforge.maskers": 3,
    "ecgforge.objectives": 3,
    # 4 evaluation: metrics, task loader, feature cache, typed rows, one file per protocol
    "ecgforge.evaluation": 4,
    # 5 the recipe schema, the encoder file format, the run directory
    "ecgforge.recipe": 5, "ecgforge.encoder_files": 5, "ecgforge.rundir": 5, "ecgforge.hub": 5,
    "ecgforge.factory": 5,
    # 6 training
    "ecgforge.train": 6,
    # 7 the application: run a recipe, evaluate, embed, export, report (no Typer, no rich)
    "ecgforge.app": 7,
    # 8 the user interface
    "ecgforge.ui": 8, "ecgforge.cli": 8, "ecgforge.__main__": 8,
    # 9 the package's public face (lazy re-exports)
    "ecgforge": 9,
}
#: Packages whose imports the lower layers must not use, by layer (UI libraries stay in the UI).
UI_ONLY = ("typer", "rich")


def module_name(path: Path, root: Path = ROOT) -> str:
    rel = path.relative_to(root).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def layer_of(module: str) -> int:
    best = max((p for p in LAYERS if module == p or module.startswith(p + ".")), key=len)
    return LAYERS[best]


def _is_type_checking(node: ast.If) -> bool:
    t = node.test
    return (isinstance(t, ast.Name) and t.id == "TYPE_CHECKING") or (
        isinstance(t, ast.Attribute) and t.attr == "TYPE_CHECKING")


def imports(path: Path, *, type_checking: bool = False, root: Path = ROOT) -> list[tuple[str, int]]:
    """(imported module, line) for every import in ``path``; those in ``if TYPE_CHECKING`` blocks only with
    ``type_checking``."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    skip: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and _is_type_checking(node) and not type_checking:
            skip.update(id(n) for child in node.body for n in ast.walk(child))
    me = module_name(path, root)
    package = me if path.name == "__init__.py" else me.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if id(node) in skip:
            continue
        if isinstance(node, ast.Import):
            found += [(a.name, node.lineno) for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else []))
            found.append((base, node.lineno))
            # `from ecgforge.x import y` may name a submodule y
            found += [(f"{base}.{a.name}", node.lineno) for a in node.names]
    return found


def resolve(module: str, pkg: Path = PKG) -> str | None:
    """The module (file) of package ``pkg`` an imported name refers to, or None outside it / not a module."""
    if module != pkg.name and not module.startswith(pkg.name + "."):
        return None
    parts = module.split(".")
    path = pkg.parent.joinpath(*parts)
    if path.with_suffix(".py").is_file() or (path / "__init__.py").is_file():
        return module
    return None


def graph(pkg: Path = PKG, *, type_checking: bool = False) -> dict[str, set[tuple[str, int]]]:
    """Module -> {(imported module of ``pkg``, line)}; with ``type_checking``, ``if TYPE_CHECKING`` imports too."""
    edges: dict[str, set[tuple[str, int]]] = {}
    for path in sorted(pkg.rglob("*.py")):
        me = module_name(path, pkg.parent)
        edges[me] = set()
        for name, line in imports(path, type_checking=type_checking, root=pkg.parent):
            target = resolve(name, pkg)
            if target is not None and target != me:
                edges[me].add((target, line))
    return edges


def test_every_file_has_a_layer() -> None:
    for path in PKG.rglob("*.py"):
        assert layer_of(module_name(path)) in range(1, 10)


def test_no_import_goes_up_a_layer() -> None:
    bad = []
    for src, targets in graph().items():
        for dst, line in targets:
            if dst == "ecgforge" and src.startswith("ecgforge."):
                bad.append(f"{src}:{line} imports the package root (import from its module instead)")
            elif layer_of(dst) > layer_of(src):
                bad.append(f"{src} (layer {layer_of(src)}):{line} imports {dst} (layer {layer_of(dst)})")
    assert not bad, "imports against the layering:\n" + "\n".join(sorted(bad))


def cycles(pkg: Path = PKG) -> list[list[str]]:
    """Import cycles among the files of ``pkg``, ``if TYPE_CHECKING`` imports included."""
    edges = {k: {d for d, _ in v} for k, v in graph(pkg, type_checking=True).items()}
    # The package __init__ of a module is imported with it at run time but is not a dependency of its code;
    # an __init__ that imports its submodules (a table, a union) would otherwise make every sibling a cycle.
    state: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(edges.get(node, ())):
            if state.get(nxt) == 1:
                found.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    return found


def test_no_import_cycle() -> None:
    found = cycles()
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


def test_a_cycle_through_type_only_imports_is_found(tmp_path: Path) -> None:
    pkg = tmp_path / "knot"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "context.py").write_text("from knot.features import FeatureCache\n")
    (pkg / "features.py").write_text("from typing import TYPE_CHECKING\n\nif TYPE_CHECKING:\n"
                                     "    from knot.context import EvalContext\n")
    assert cycles(pkg) == [["knot.context", "knot.features", "knot.context"]]
    (pkg / "features.py").write_text("from typing import Protocol\n")
    assert cycles(pkg) == []


def test_ui_libraries_stay_in_the_ui() -> None:
    bad = []
    for path in PKG.rglob("*.py"):
        me = module_name(path)
        if layer_of(me) >= 8:
            continue
        for name, line in imports(path):
            if name.split(".")[0] in UI_ONLY:
                bad.append(f"{me}:{line} imports {name}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("argv", [["list", "--json"], ["validate", "recipes/caches/synthetic.toml"]])
def test_listing_and_validating_a_cache_recipe_load_no_torch(argv: list[str]) -> None:
    code = ("import sys; from ecgforge.cli import app\n"
            "try:\n    app(" + repr(argv) + ")\nexcept SystemExit as e:\n    assert not e.code, e.code\n"
            "assert 'torch' not in sys.modules, 'torch was imported'")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
