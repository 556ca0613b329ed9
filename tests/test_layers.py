"""The house rule, checked on every run: ``api -> vault -> hsm``, never back up; ``pkcs11`` only
in ``hsm/``; ``vault/`` never names ``api``, not even in an import string."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FORBIDDEN = {"hsm": {"vault", "api"}, "vault": {"api"}}


def _modules(package: str) -> Iterator[Path]:
    yield from sorted((ROOT / package).rglob("*.py"))


def _imported(tree: ast.AST) -> Iterator[str]:
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
            yield node.module


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_no_import_runs_back_up_the_layers(package: str) -> None:
    wrong = []
    for path in _modules(package):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for name in _imported(tree):
            if name.split(".")[0] in FORBIDDEN[package]:
                wrong.append(f"{path.relative_to(ROOT)} imports {name}")
    assert not wrong, wrong


def test_vault_names_api_nowhere_not_even_in_a_string() -> None:
    wrong = []
    for path in _modules("vault"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Constant) and isinstance(node.value, str):
                text = node.value
                if text.startswith(("api.", "api:")) or text == "api":
                    wrong.append(f"{path.relative_to(ROOT)}: {text!r}")
    assert not wrong, wrong


def test_only_hsm_imports_pkcs11() -> None:
    wrong = []
    for package in ("vault", "api"):
        for path in _modules(package):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            wrong += [
                f"{path.relative_to(ROOT)} imports {name}"
                for name in _imported(tree)
                if name.split(".")[0] == "pkcs11"
            ]
    assert not wrong, wrong


def test_the_check_sees_a_violation(tmp_path: Path) -> None:
    """The detector itself works (a test that could not fail would prove nothing)."""
    tree = ast.parse("from vault.errors import BadRequest\nimport api.app\n")
    assert {n.split(".")[0] for n in _imported(tree)} == {"vault", "api"}
