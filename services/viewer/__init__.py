"""Live run viewers (config group ``viewer``): ``viewer=none`` is :class:`NullViewer` here,
``viewer=rerun`` is :class:`services.viewer.rerun_viewer.RerunViewer`.

A viewer sees what telemetry sees (ticks, inferences, commands with states, chunks, events: the
telemetry records are mirrored into the viewer's own shared-memory ring, see ``taps``) plus the
camera frames (it rides along the run's recorder: :meth:`wrap`). Like telemetry and recording it
draws in a process of its own; the control thread only copies records into a ring and never waits
for it.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from services.ring import RecordRing
    from services.robot_data import ObservationLike, RobotSpecLike


class NullViewer:
    """``viewer=none``: no tap, the recorder unchanged."""

    def taps(self) -> list[RecordRing]:
        return []

    def wrap(self, recorder: Any) -> Any:
        return recorder


class ViewedRecorder:
    """The run's recorder with the viewer riding along: every call goes to both, the recorder first.

    The recorder interface (``start``/``observation``/``command``/``chunk``/``close``) is how the
    control step hands out camera frames; the viewer takes those and nothing else from it (commands
    and chunks reach it through the telemetry tap, with their tick and chunk ids)."""

    def __init__(self, recorder: Any, viewer: Any) -> None:
        self.recorder = recorder
        self.viewer = viewer

    def start(self, run_dir: Path, spec: RobotSpecLike, camera_names: tuple[str, ...]) -> None:
        self.recorder.start(run_dir, spec, camera_names)
        self.viewer.start(run_dir, spec, camera_names)

    def observation(self, obs: ObservationLike) -> None:
        self.recorder.observation(obs)
        self.viewer.observation(obs)

    def command(self, command: np.ndarray) -> None:
        self.recorder.command(command)

    def chunk(self, chunk: np.ndarray) -> None:
        self.recorder.chunk(chunk)

    def close(self) -> dict[str, Any]:
        out = dict(self.recorder.close() or {})
        out.update(self.viewer.close())
        return out
