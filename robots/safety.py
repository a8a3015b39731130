"""The last check between any algorithm and a robot.

Order per command: non-finite -> reject (hold the last safe command); clip to joint limits;
slew-rate limit against the last command actually sent (per dimension, robot units per tick).
The filter is pure state + numpy so it is tested exhaustively and shared by every algorithm.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from robots.base import RobotSpec
from services.knobs import PositiveFloat

log = logging.getLogger(__name__)


@dataclass
class SafetyCounters:
    commands: int = 0
    rejected_nonfinite: int = 0
    clipped_limits: int = 0
    slew_limited: int = 0
    held: int = 0


class SafetyFilter:
    """Per-joint slew limit, position limits and non-finite rejection.

    ``max_delta`` overrides the robot's per-tick limit (robot units per tick). ``enabled=False``
    keeps the non-finite rejection (it is never optional) but skips limits and slew.
    """

    def __init__(
        self,
        spec: RobotSpec,
        max_delta: np.ndarray | None = None,
        enforce_limits: bool = True,
        enforce_slew: bool = True,
    ) -> None:
        self.spec = spec
        self.max_delta = np.asarray(spec.max_delta if max_delta is None else max_delta, dtype=np.float64)
        if self.max_delta.shape != (spec.action_dim,) or np.any(self.max_delta <= 0):
            raise ValueError(f"safety: max_delta must be ({spec.action_dim},) and > 0")
        self.enforce_limits = enforce_limits
        self.enforce_slew = enforce_slew
        self.counters = SafetyCounters()
        self._last: np.ndarray | None = None
        self._in_nonfinite_burst = False

    @property
    def last_command(self) -> np.ndarray | None:
        return None if self._last is None else self._last.copy()

    def reset(self, current: np.ndarray) -> None:
        """Anchor the slew limit at the robot's measured position (episode start, after homing)."""
        current = np.asarray(current, dtype=np.float64)
        if current.shape != (self.spec.action_dim,) or not np.all(np.isfinite(current)):
            raise ValueError(f"safety: cannot reset to {current!r}")
        self._last = np.clip(current, self.spec.lower, self.spec.upper)

    def hold(self) -> np.ndarray:
        """The command that keeps the robot still: the last safe one."""
        if self._last is None:
            raise RuntimeError("safety filter has no safe command yet: call reset() first")
        self.counters.held += 1
        return self._last.copy()

    def apply(self, action: np.ndarray) -> np.ndarray:
        """Return the command to send for the requested ``action`` (robot units)."""
        if self._last is None:
            raise RuntimeError("safety filter has no safe command yet: call reset() first")
        self.counters.commands += 1
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.spec.action_dim,) or not np.all(np.isfinite(action)):
            self.counters.rejected_nonfinite += 1
            if not self._in_nonfinite_burst:
                log.warning(
                    "safety: rejected a non-finite or mis-shaped action %s; holding the last safe command",
                    np.shape(action),
                )
            self._in_nonfinite_burst = True
            return self._last.copy()
        self._in_nonfinite_burst = False
        out = action
        if self.enforce_limits:
            clipped = np.clip(out, self.spec.lower, self.spec.upper)
            if np.any(clipped != out):
                self.counters.clipped_limits += 1
            out = clipped
        if self.enforce_slew:
            delta = out - self._last
            limited = np.clip(delta, -self.max_delta, self.max_delta)
            if np.any(limited != delta):
                self.counters.slew_limited += 1
            out = self._last + limited
        self._last = out
        return out.copy()


def make_safety_filter(
    spec: RobotSpec,
    max_delta_deg: PositiveFloat | None = None,
    max_gripper_delta: PositiveFloat | None = None,
    enforce_limits: bool = True,
    enforce_slew: bool = True,
) -> SafetyFilter:
    """Config entry point: optional overrides of the robot's own per-tick limits.

    ``max_delta_deg`` applies to every dimension whose robot limit is an angle (all but the
    grippers/hands, recognised as joints whose spec limit differs from the arm default);
    ``max_gripper_delta`` to the rest. Leave both None to use the robot's spec.
    """
    max_delta = spec.max_delta.copy()
    if max_delta_deg is not None or max_gripper_delta is not None:
        arm = _arm_mask(spec)
        if max_delta_deg is not None:
            max_delta[arm] = np.deg2rad(max_delta_deg)
        if max_gripper_delta is not None:
            max_delta[~arm] = max_gripper_delta
    return SafetyFilter(spec, max_delta, enforce_limits, enforce_slew)


def _arm_mask(spec: RobotSpec) -> np.ndarray:
    names = [n.lower() for n in spec.joint_names]
    return np.array([not ("gripper" in n or "hand" in n or "finger" in n) for n in names])
