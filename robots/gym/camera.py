"""A camera of the gym robot: the env's rendered frame or an image in its observation.

It renders nothing itself: the env renders where it steps (in lockstep in the control process, in
real time in the env process, with the state of the same step), and the robot hands the frame out
with the state. This object names the frame (``source``: ``render`` for ``env.render()``, or the
path of an image entry of the observation, e.g. ``pixels`` or ``pixels/top``) and its size (the
run's ``cameras.width``/``height``; a frame of another size is resized).
"""

from __future__ import annotations

from typing import Any

from robots.base import Frame, RobotError
from robots.cameras.base import FrameSpec


class GymCamera:
    """Frames of camera ``frames.name`` from the gym robot ``host`` (start-time checked: the env can
    render ``source``)."""

    host_class = "robots.gym.GymRobot"

    def __init__(self, frames: FrameSpec, host: Any = None, *, source: str = "render") -> None:
        if host is None or not hasattr(host, "frame"):
            raise RobotError(f"GymCamera {frames.name!r} needs the GymRobot as host (got {host!r})")
        frames.bind(self)
        self.source = str(source)
        self._host = host

    def start(self) -> None:
        """Nothing to start: the env renders with every step."""

    def read(self) -> Frame:
        return self._host.frame(self.name)

    def stop(self) -> None:
        """Nothing to stop."""
