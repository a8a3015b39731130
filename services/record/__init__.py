"""Episode recording sinks (config group ``record``): ``record=none`` is :class:`NullRecorder` here,
``record=mcap`` is :class:`services.record.mcap.McapRecorder`.

A recorder gets every observation, command and chunk from the control step and must never block it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from services.robot_data import ObservationLike, RobotSpecLike

STATE_TOPIC = "/observation/joint_states"
COMMAND_TOPIC = "/command/joint_states"
CHUNK_TOPIC = "/policy/chunk"


def run_subdirectory_problem(directory: Any) -> str | None:
    """Why a recorder's ``directory`` cannot be its own new folder inside the run directory, or None:
    it must be a non-empty relative path that stays inside (the run directory itself already exists,
    and a writer refuses to write into an existing folder)."""
    text = str(directory if directory is not None else "").strip()
    if not text:
        return "empty (a folder name inside the run directory, e.g. recording)"
    path = Path(text)
    if path.is_absolute() or ".." in path.parts or path == Path("."):
        return f"{text!r} must be a new folder inside the run directory (a relative path without '..')"
    return None


def image_topic(camera: str) -> str:
    return f"/observation/{camera}/image/compressed"


class NullRecorder:
    """``record=none``."""

    def start(self, run_dir: Path, spec: RobotSpecLike, camera_names: tuple[str, ...]) -> None:
        pass

    def observation(self, obs: ObservationLike) -> None:
        pass

    def command(self, command: np.ndarray) -> None:
        pass

    def chunk(self, chunk: np.ndarray) -> None:
        pass

    def close(self) -> dict[str, Any]:
        return {}
