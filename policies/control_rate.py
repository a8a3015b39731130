"""Where a trained policy states the control rate it was trained at, read from files alone.

A chunk of H actions means H ticks of the rate the demonstrations were recorded at: the same chunk
played at another ``robot.hz`` moves the robot faster or slower than the data did, and the first
sign of it is the safety filter refusing implausible chunks mid-run. Policy classes that can tell
their checkpoint's rate answer ``trained_control_hz(node) -> ControlRate | None`` (None: the files do
not say); the start-time validation compares it with ``robot.hz``. Nothing here imports a policy
framework: only JSON is read.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class ControlRate:
    """A checkpoint's control rate (Hz) and the file (and key) that states it."""

    hz: float
    source: str


def positive_hz(value: Any) -> float | None:
    """``value`` as a rate in Hz when it is a finite positive number, else None."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    hz = float(value)
    return hz if math.isfinite(hz) and hz > 0 else None


def read_json(path: Path) -> Any:
    """The JSON in ``path``, or None when it is absent or unreadable (the rate is then unknown)."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def lerobot_home() -> Path:
    """LeRobot's local dataset cache (``HF_LEROBOT_HOME``, else ``$HF_HOME/lerobot``)."""
    if os.environ.get("HF_LEROBOT_HOME"):
        return Path(os.environ["HF_LEROBOT_HOME"]).expanduser()
    return Path(os.environ.get("HF_HOME", "~/.cache/huggingface")).expanduser() / "lerobot"


def lerobot_dataset_rate(repo_id: Any, root: Any = None) -> ControlRate | None:
    """The ``fps`` a LeRobot dataset's ``meta/info.json`` states: under ``root`` when given, else
    in the local LeRobot cache under ``repo_id``. None when the dataset is not on this machine."""
    candidates = []
    if root:
        candidates.append(Path(str(root)).expanduser())
    if repo_id and isinstance(repo_id, str):
        candidates.append(lerobot_home() / repo_id)
    for base in candidates:
        info = base / "meta" / "info.json"
        data = read_json(info)
        hz = positive_hz(data.get("fps")) if isinstance(data, dict) else None
        if hz is not None:
            return ControlRate(hz, f"{info} (fps)")
    return None
