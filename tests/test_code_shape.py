"""The code's shape, checked like behaviour: lint and format (ruff), imports that flow one way
through the package (import-linter, pyproject.toml's contracts), and types (mypy)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import ROOT

BIN = Path(sys.executable).parent


def run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("command", [("ruff", "check", "."), ("ruff", "format", "--check", ".")], ids=" ".join)
def test_ruff_finds_nothing(command):
    result = run(str(BIN / command[0]), *command[1:])
    assert result.returncode == 0, result.stdout + result.stderr


def test_imports_flow_one_way_through_the_package():
    """Layers from the extension down to settings, no cycle (function-local imports count), and the
    package never imports the reference app."""
    result = run(str(BIN / "lint-imports"), "--no-cache")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_package_type_checks():
    result = run(str(BIN / "mypy"))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_type_ignore_says_why():
    """A ``# type: ignore[code]`` is followed by ``# why`` on the same line."""
    bare = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in sorted((ROOT / "offload").rglob("*.py"))
        for number, line in enumerate(path.read_text().splitlines(), 1)
        if "type: ignore" in line and not line.split("type: ignore", 1)[1].partition("#")[2].strip()
    ]
    assert bare == []
