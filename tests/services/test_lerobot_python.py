"""LeRobot's interpreter, resolved and probed (services/lerobot_python.py) as policy=lerobot and
record=lerobot check it before a run starts. The probe runs a real interpreter: this one, with a
stand-in ``lerobot`` distribution on its path where a test needs one."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from services.lerobot_python import REPO, probe_python, resolve_python


def test_a_relative_interpreter_is_taken_from_the_repository_root(tmp_path: Path) -> None:
    assert resolve_python(".venvs/lerobot/bin/python") == str(REPO / ".venvs/lerobot/bin/python")
    assert resolve_python(str(tmp_path / "python")) == str(tmp_path / "python")
    assert resolve_python(None) is None and resolve_python("") is None


def test_a_file_that_cannot_run_is_refused(tmp_path: Path) -> None:
    script = tmp_path / "python"
    script.write_text("not an interpreter")
    with pytest.raises(ValueError, match="not an executable interpreter"):
        probe_python(str(script), "services.record.lerobot")


@pytest.fixture
def stand_in_lerobot(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A ``lerobot`` package with its distribution metadata, on the path of the probed interpreter."""
    (tmp_path / "lerobot").mkdir()
    (tmp_path / "lerobot" / "__init__.py").write_text("")
    dist = tmp_path / "lerobot-0.6.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: lerobot\nVersion: 0.6.0\n")
    monkeypatch.setenv("PYTHONPATH", str(tmp_path))


def test_an_interpreter_with_lerobot_and_the_engine_module_gives_its_version(stand_in_lerobot: None) -> None:
    pytest.importorskip("torch")  # the probe asks for torch too: LeRobot runs on it
    assert probe_python(sys.executable, "services.record.lerobot") == "0.6.0"


def test_a_missing_engine_module_is_named(stand_in_lerobot: None) -> None:
    pytest.importorskip("torch")
    with pytest.raises(
        ValueError, match=r"this engine's services\.no_such_writer \(cannot import services\.no_such_writer\)"
    ):
        probe_python(sys.executable, "services.no_such_writer")


def test_an_interpreter_without_lerobot_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PYTHONPATH", raising=False)
    if importlib.util.find_spec("lerobot") is not None:
        pytest.skip("this interpreter has lerobot: nothing to refuse")
    with pytest.raises(ValueError, match="cannot import lerobot"):
        probe_python(sys.executable, "services.record.lerobot")
