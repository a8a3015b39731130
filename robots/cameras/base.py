"""The camera contract: a background source that always has its latest frame ready."""

from __future__ import annotations

from typing import Protocol, runtime_checkable

from robots.base import Frame


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
