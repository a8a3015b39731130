"""The camera contract: a background source that always has its latest frame ready."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

from robots.base import Frame


@dataclass(frozen=True)
class FrameSpec:
    """What every camera delivers, whatever its source: frames of camera ``name`` as (3, ``height``,
    ``width``) uint8, never older than ``max_frame_age_s`` when read. The run object builds one per
    configured device (``cameras.width/height/max_frame_age_s``) and hands it to the camera."""

    name: str
    width: int
    height: int
    max_frame_age_s: float

    def __post_init__(self) -> None:
        if self.width <= 0 or self.height <= 0 or not self.max_frame_age_s > 0:
            raise ValueError(
                f"camera {self.name!r}: width, height and max_frame_age_s must be > 0 "
                f"(got {self.width}, {self.height}, {self.max_frame_age_s})"
            )

    def bind(self, camera: Any) -> None:
        """Set the spec's fields as the camera's attributes (``name``, ``width``, ...)."""
        camera.frames = self
        camera.name, camera.width, camera.height = self.name, int(self.width), int(self.height)
        camera.max_frame_age_s = float(self.max_frame_age_s)


@runtime_checkable
class Camera(Protocol):
    """A camera keeps capturing in the background; ``read`` returns the newest frame at once.

    ``read`` raises ``robots.base.StaleDataError`` when the newest frame is older than the
    camera's ``max_frame_age_s`` and ``robots.base.RobotError`` when no frame arrived within the
    start-up timeout. It never returns a blank or repeated-forever frame silently.
    """

    name: str

    def start(self) -> None: ...

    def read(self) -> Frame: ...

    def stop(self) -> None: ...
