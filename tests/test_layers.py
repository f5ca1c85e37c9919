"""Imports point one way. Each layer may import only the layers listed before it in LAYERS (and
itself); scripts are thin CLIs over the engine. Every import statement counts, inside functions too,
read from the source (AST), so a lazy import cannot hide an upward dependency."""
import ast
import sys
from pathlib import Path

import pytest

from conftest import ROOT

# layer → the project packages it may import (besides itself). gan/ and denoising/ share a floor and
# never import each other: what both need (generator networks) lives in networks/.
LAYERS = {
    "common": set(),
    "data": {"common"},
    "networks": {"common", "data"},
    "gan": {"common", "data", "networks"},
    "denoising": {"common", "data", "networks"},
    "engine": {"common", "data", "networks", "gan", "denoising"},
}
SCRIPTS_MAY_IMPORT = {"common", "engine", "_bootstrap"}  # never another script, never a lower package


def packages() -> set[str]:
    return {p.parent.name for p in ROOT.glob("*/__init__.py")}


def scripts() -> set[str]:
    return {p.stem for p in (ROOT / "scripts").glob("*.py")}


def imported_modules(path: Path) -> list[tuple[int, str]]:
    """(line, absolute module name) of every import in a file; relative imports are resolved
    against the file's own package."""
    package = path.relative_to(ROOT).parent.parts
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package[:len(package) - node.level + 1]
                name = ".".join([*base, *([node.module] if node.module else [])])
            else:
                name = node.module
            out.append((node.lineno, name))
    return out


def violations(folder: str, allowed: set[str]) -> list[str]:
    project = packages() | scripts()
    bad = []
    for path in sorted((ROOT / folder).rglob("*.py")):
        for line, module in imported_modules(path):
            top = module.split(".")[0]
            if top in project and top != folder and top not in allowed:
                bad.append(f"{path.relative_to(ROOT)}:{line} imports {module}")
    return bad


def test_every_package_has_a_layer():
    assert packages() == set(LAYERS), "give a new top-level package its place in LAYERS (and the README)"


@pytest.mark.parametrize("layer", list(LAYERS))
def test_a_layer_imports_only_the_layers_below_it(layer):
    assert violations(layer, LAYERS[layer]) == []


def test_scripts_import_only_the_engine_and_common():
    assert violations("scripts", SCRIPTS_MAY_IMPORT) == []


def test_the_walk_sees_imports_inside_functions_and_relative_ones(tmp_path, monkeypatch):
    """The checker itself: a lazy upward import in a function and a relative import are both found."""
    root = tmp_path / "checkout"
    (root / "common").mkdir(parents=True)
    (root / "engine").mkdir()
    for pkg in ("common", "engine"):
        (root / pkg / "__init__.py").write_text("")
    (root / "scripts").mkdir()
    (root / "common" / "x.py").write_text("from .y import z\n\ndef f():\n    from engine import loop\n")
    monkeypatch.setattr(sys.modules[__name__], "ROOT", root)
    assert imported_modules(root / "common" / "x.py") == [(1, "common.y"), (4, "engine")]
    assert violations("common", set()) == ["common/x.py:4 imports engine"]


def test_every_package_is_installed():
    """pyproject.toml's package list names every layer (the editable install finds them all)."""
    text = (ROOT / "pyproject.toml").read_text()
    include = text.split("include = [", 1)[1].split("]", 1)[0]
    assert {name.strip().strip('"').rstrip("*") for name in include.split(",")} == set(LAYERS)
