"""The robot contract every robot (simulated or real) implements.

Units: joint positions in radians (grippers/hands in the robot's own normalized units), times in
seconds from ``time.monotonic()``. Images are CHW uint8 at the configured camera size.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np


class RobotError(RuntimeError):
    """A robot cannot be used: a topic is silent, a device is missing, state is stale..."""


class StaleDataError(RobotError):
    """A sample is older than its configured maximum age; the caller must hold, not reuse it."""


@dataclass(frozen=True)
class RobotSpec:
    """Static facts about a robot, in robot units (radians; grippers in their own units).

    ``max_delta`` is the slew-rate limit per control tick for every action dimension.
    ``command_in_state``: the state's first ``action_dim`` entries are the measured command-space
    position (joint positions: the command that holds the robot where it is). False for a robot
    commanded in force or torque (``robots.gym``), whose holding command is ``home``.
    """

    name: str
    hz: float
    action_dim: int
    state_dim: int
    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    home: np.ndarray
    max_delta: np.ndarray
    camera_names: tuple[str, ...] = ()
    command_in_state: bool = True

    @property
    def period_s(self) -> float:
        return 1.0 / self.hz

    def __post_init__(self) -> None:
        for key in ("lower", "upper", "home", "max_delta"):
            value = np.asarray(getattr(self, key), dtype=np.float64)
            if value.shape != (self.action_dim,):
                raise ValueError(f"robot {self.name}: {key} has shape {value.shape}, expected ({self.action_dim},)")
            object.__setattr__(self, key, value)
        if len(self.joint_names) != self.action_dim:
            raise ValueError(f"robot {self.name}: {len(self.joint_names)} joint_names for action_dim {self.action_dim}")


@dataclass
class Frame:
    """One camera image with its times: capture (device/sim clock) and receive (our monotonic).

    A camera in its own process hands out ``image`` as a read-only view of its shared-memory ring
    slot (no copy on the control thread); ``intact_check`` then says whether the producer has begun
    to reuse that slot. Whoever copies the image (the inference snapshot, a recording) checks
    ``intact()`` after the copy; whoever keeps it longer than a few camera periods takes ``owned()``.
    """

    image: np.ndarray  # (3, H, W) uint8
    capture_time: float
    receive_time: float
    index: int = 0  # frame counter from the source, for history sub-sampling
    intact_check: Callable[[], bool] | None = field(default=None, repr=False, compare=False)

    def intact(self) -> bool:
        """False once the image's ring slot is being rewritten (a copy taken before was torn)."""
        return self.intact_check is None or self.intact_check()

    def owned(self) -> Frame:
        """This frame with an image of its own (itself if it has one already)."""
        if self.intact_check is None:
            return self
        image = np.array(self.image)
        if not self.intact():
            raise StaleDataError(f"frame {self.index}: its ring slot was rewritten before it was copied")
        return Frame(image, self.capture_time, self.receive_time, self.index)


@dataclass
class Observation:
    """What ``Robot.read()`` returns: proprio state, latest camera frames, their times.

    ``info`` carries extras a real robot does not have (privileged sim state for the scripted
    expert, task success); policies that need it declare so in their metadata.
    """

    state: np.ndarray  # (state_dim,) float32, robot units
    images: dict[str, Frame]
    timestamp: float  # monotonic time the state was captured
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Robot(Protocol):
    """A robot the engine can drive.

    ``realtime`` is False for lockstep robots: each ``send`` advances exactly one control period
    and the caller must not sleep between ticks.
    """

    spec: RobotSpec
    realtime: bool

    def start(self) -> None: ...

    def read(self) -> Observation: ...

    def send(self, action: np.ndarray) -> None: ...

    def home(self, seed: int | None = None) -> None:
        """Start an episode: move (slowly, on hardware) to the home pose; sim also re-draws the task."""
        ...

    def stop(self) -> None:
        """Hold still and release resources. Safe to call twice."""
        ...
