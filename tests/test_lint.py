"""The whole repository passes ``ruff check`` and ``ruff format --check`` (rules in pyproject.toml).

Run here so that ``make test`` is the one command that says whether a change is ready: a finding
fails the suite with ruff's own report. Fix with ``ruff check --fix . && ruff format .``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RUFF = Path(sys.executable).with_name("ruff")


@pytest.mark.parametrize(
    "args", [["check", "--no-cache"], ["format", "--check", "--no-cache"]], ids=["check", "format"]
)
def test_ruff_finds_nothing(args):
    assert RUFF.is_file(), f"{RUFF} missing: ruff is in the dev extra (pip install -e '.[dev]')"
    proc = subprocess.run([str(RUFF), *args, "."], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"ruff {' '.join(args)}:\n{proc.stdout[-6000:]}{proc.stderr[-2000:]}"
