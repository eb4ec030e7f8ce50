"""The import layers hold: no package imports a higher layer, no cycles, no private imports.

The layers and the cycle rule are import-linter contracts in ``.importlinter`` (README,
"Architecture"); this module runs them so that ``pytest`` fails when a layer is broken. Private
imports across packages are checked here with the standard library's ``ast``: import-linter
sees modules, not the private functions a module imports from another package.
"""

from __future__ import annotations

import ast
import configparser
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "morphml"

#: the private helper packages of every layer (base): their modules may be imported anywhere
SHARED_PRIVATE = {"_utils", "_version"}

#: known private imports across packages, (importing module, imported name); each entry says
#: who removes it. Delete an entry when its import is gone (a test fails on stale entries).
PRIVATE_IGNORED: set[tuple[str, str]] = set()


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _imported_names(tree: ast.AST, module: str, is_package: bool) -> Iterator[str]:
    """Every dotted name an import statement of ``module`` reaches (``pkg.mod.name``)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: resolve against this module's package
                parent = module.split(".")
                parent = parent[: len(parent) - node.level + (1 if is_package else 0)]
                base = ".".join([*parent, *([node.module] if node.module else [])])
            yield from (f"{base}.{alias.name}" for alias in node.names)


def _is_private(part: str) -> bool:
    return part.startswith("_") and not part.startswith("__")


def private_imports_across_packages() -> set[tuple[str, str]]:
    """(importing module, imported name) for every private name reached from another package."""
    found = set()
    for path in sorted(PACKAGE.rglob("*.py")):
        module = _module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        for name in _imported_names(tree, module, path.name == "__init__.py"):
            parts = name.split(".")
            if parts[0] != "morphml" or len(parts) < 3:
                continue
            own = module.split(".")[1] if "." in module else ""
            if parts[1] == own or parts[1] in SHARED_PRIVATE:
                continue
            if any(_is_private(p) for p in parts[2:]):
                found.add((module, name))
    return found


def _lint(config: Path) -> subprocess.CompletedProcess[str]:
    code = (
        "import sys\n"
        "from importlinter.cli import lint_imports\n"
        f"sys.exit(lint_imports(config_filename={str(config)!r}, no_cache=True, no_logo=True))\n"
    )
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=600
    )


def test_import_contracts_hold() -> None:
    pytest.importorskip("importlinter")
    done = _lint(ROOT / ".importlinter")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "0 broken" in done.stdout


def test_every_package_has_a_layer() -> None:
    """A new package must be placed in the map (else import-linter would not check it)."""
    config = configparser.ConfigParser()
    config.read(ROOT / ".importlinter", encoding="utf-8")
    raw = config["importlinter:contract:layers"]["layers"]
    placed = {
        name.strip().strip("()")
        for line in raw.strip().splitlines()
        for name in line.replace("|", ":").split(":")
    }
    packages = {p.parent.name for p in PACKAGE.glob("*/__init__.py")}
    packages |= {p.stem for p in PACKAGE.glob("*.py") if not p.name.startswith("__")}
    assert packages - placed == set(), f"not in .importlinter's layers: {packages - placed}"


def test_a_broken_layer_is_reported(tmp_path: Path) -> None:
    """The layers contract fails on a violation: here the command line under ``_version``."""
    pytest.importorskip("importlinter")
    config = tmp_path / "contracts.ini"
    config.write_text(
        "[importlinter]\nroot_package = morphml\n\n"
        "[importlinter:contract:upside-down]\nname = upside down\ntype = layers\n"
        "containers =\n    morphml\nlayers =\n    _version\n    cli\n",
        encoding="utf-8",
    )
    done = _lint(config)
    assert done.returncode != 0
    assert "morphml.cli is not allowed to import morphml._version" in done.stdout


def test_no_private_imports_across_packages() -> None:
    found = private_imports_across_packages()
    new = sorted(found - PRIVATE_IGNORED)
    assert not new, "private names imported from another package (export them):\n" + "\n".join(
        f"  {a} imports {b}" for a, b in new
    )


def test_private_ignore_list_has_no_stale_entries() -> None:
    stale = sorted(PRIVATE_IGNORED - private_imports_across_packages())
    assert not stale, f"remove these fixed entries from PRIVATE_IGNORED: {stale}"


def test_the_private_check_sees_private_imports(tmp_path: Path) -> None:
    tree = ast.parse(
        "from morphml.db._store import db_path\n"
        "from morphml.db import connect\n"
        "from ._x import y\n"
        "import morphml.io._writer\n"
    )
    names = set(_imported_names(tree, "morphml.qc._run", is_package=False))
    assert names == {
        "morphml.db._store.db_path",
        "morphml.db.connect",
        "morphml.qc._x.y",
        "morphml.io._writer",
    }
