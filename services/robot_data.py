"""What a run's sinks (the recorders, the live viewer) read of the robot: structural types.

The control step hands its sinks the robot's observations and spec. ``robots.base``'s ``Observation``,
``Frame`` and ``RobotSpec`` are what it passes; these protocols name only the fields the sinks read,
so ``services/`` stays below ``robots/`` and imports none of it (tests/services/test_robot_data.py
checks that robots.base's classes still have every field named here).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class FrameLike(Protocol):
    """One camera image: (3, H, W) uint8 and the time it was captured (the device's or sim's clock)."""

    image: np.ndarray
    capture_time: float


@runtime_checkable
class ObservationLike(Protocol):
    """One robot read: state in robot units, the newest frame per camera, the state's capture time
    (monotonic s), and extras such as the sim's ``success``."""

    state: np.ndarray
    images: Mapping[str, FrameLike]
    timestamp: float
    info: Mapping[str, Any]


@runtime_checkable
class RobotSpecLike(Protocol):
    """The robot's joint names (one per action entry) and control rate (Hz)."""

    joint_names: tuple[str, ...]
    hz: float
