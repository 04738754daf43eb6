"""dripdrop_core imports only stdlib, pydantic, zoneinfo and itself (style guide B1)."""

from __future__ import annotations

import ast
import sys
from pathlib import Path

import dripdrop_core

CORE = Path(dripdrop_core.__file__).parent
ALLOWED_THIRD_PARTY = {"pydantic", "dripdrop_core"}
FORBIDDEN = {
    "faust",
    "mode",
    "aiokafka",
    "confluent_kafka",
    "sqlalchemy",
    "psycopg",
    "fastavro",
    "typer",
    "streams",
}


def _imported_roots(path: Path) -> set[str]:
    roots: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            roots.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            roots.add(node.module.split(".")[0])
    return roots


def test_core_modules_any_import_only_stdlib_pydantic_or_core() -> None:
    modules = sorted(CORE.rglob("*.py"))
    assert len(modules) > 10
    for module in modules:
        roots = _imported_roots(module)
        assert not roots & FORBIDDEN, module
        foreign = {
            r for r in roots if r not in sys.stdlib_module_names and r not in ALLOWED_THIRD_PARTY
        }
        assert foreign == set(), f"{module.name} imports {foreign}"


def test_import_scanner_shell_import_detected(tmp_path: Path) -> None:
    bad = tmp_path / "bad.py"
    bad.write_text("import faust\nfrom sqlalchemy.orm import Session\nfrom . import x\n")
    assert _imported_roots(bad) == {"faust", "sqlalchemy"}
