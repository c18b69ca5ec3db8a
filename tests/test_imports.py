"""Import structure: a lazy package and command line, and no import from data/ up to models/."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import avalanche_exmask

PACKAGE = Path(avalanche_exmask.__file__).parent
HEAVY = ("avalanche", "torch", "transformers", "open_clip")


def _python(code: str) -> str:
    """Run ``code`` in a fresh interpreter; return its stdout."""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    return done.stdout


def test_help_runs():
    done = subprocess.run(
        [sys.executable, "-m", "avalanche_exmask", "--help"], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "{demo,run,methods,caption}" in done.stdout


def test_import_and_parser_building_import_nothing_heavy():
    loaded = _python(
        "import json, sys\n"
        "import avalanche_exmask\n"
        "from avalanche_exmask.__main__ import build_parser\n"
        "build_parser().parse_args(['caption', '--images', 'x', '--out', 'y'])\n"
        f"print(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))\n"
    )
    assert json.loads(loaded) == []


def test_every_public_name_resolves_lazily():
    assert set(avalanche_exmask.__all__) <= set(dir(avalanche_exmask))
    for name in avalanche_exmask.__all__:
        value = getattr(avalanche_exmask, name)
        assert getattr(value, "__name__", name) == name
    with pytest.raises(AttributeError, match="no_such_name"):
        avalanche_exmask.no_such_name  # noqa: B018 - the access is the test


def _imported_modules(path: Path) -> set[str]:
    """Absolute names of the modules ``path`` imports (relative imports resolved), at any depth."""
    package = ".".join(path.relative_to(PACKAGE.parent).with_suffix("").parts[:-1])
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            module = ".".join(part for part in (base, node.module) if part)
            names.add(module)
            names.update(f"{module}.{alias.name}" for alias in node.names)
    return names


def test_data_does_not_import_models():
    offenders = {
        str(path.relative_to(PACKAGE)): sorted(
            name for name in _imported_modules(path)
            if name == "avalanche_exmask.models" or name.startswith("avalanche_exmask.models.")
        )
        for path in sorted((PACKAGE / "data").rglob("*.py"))
    }
    assert {path: names for path, names in offenders.items() if names} == {}
