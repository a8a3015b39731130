"""A camera fed by a ROS 2 ``sensor_msgs/Image`` topic.

With a host robot that has a ``transport`` (``Ros2Robot``) it subscribes through it, so one DDS
participant serves the robot and its cameras; otherwise it opens its own transport. Frames are
converted like OpenCV frames (INTER_AREA resize, RGB, CHW uint8). ``capture_time`` is the
message's receive time (monotonic), on the same clock as the robot's state.

``process`` (default true): the subscription lives in a camera process of its own (its own DDS
participant, same topic, QoS, transport kind and domain as the host's) and converted frames
reach this one through a shared-memory ring (``robots/cameras/process.py``), so no DDS callback or
image conversion runs in the control process; false subscribes here as described above.
"""

from __future__ import annotations

import functools
import logging
import string
import time
from typing import Annotated, Any, Literal

import cv2
import numpy as np

from robots.base import Frame, RobotError, StaleDataError
from robots.cameras.base import FrameSpec
from robots.cameras.process import CameraProcess, start_in_process
from robots.ros2.transport import QosProfile, Subscription, TransportKind, make_transport
from services.errors import ConfigError
from services.knobs import PositiveFloat, PositiveInt, Range

TOPIC_FIELDS = ("robot", "robot_id")  # what a topic's {placeholders} are filled with

log = logging.getLogger(__name__)

_CHANNELS = {"rgb8": 3, "bgr8": 3, "mono8": 1, "rgba8": 4, "bgra8": 4}


def image_to_chw(msg: Any, width: int, height: int) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, mono8, rgba8, bgra8) -> (3, height, width) RGB uint8."""
    enc = str(msg.encoding).lower()
    if enc not in _CHANNELS:
        raise RobotError(f"image encoding {msg.encoding!r} is not supported (use one of {sorted(_CHANNELS)})")
    ch = _CHANNELS[enc]
    h, w, step = int(msg.height), int(msg.width), int(msg.step)
    data = np.asarray(msg.data, dtype=np.uint8)
    if data.size < h * step or step < w * ch:
        raise RobotError(f"image {w}x{h} {enc}: {data.size} bytes, step {step} is inconsistent")
    img = data[: h * step].reshape(h, step)[:, : w * ch].reshape(h, w, ch)
    if enc == "bgr8":
        img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    elif enc == "bgra8":
        img = cv2.cvtColor(img, cv2.COLOR_BGRA2RGB)
    elif enc == "rgba8":
        img = cv2.cvtColor(img, cv2.COLOR_RGBA2RGB)
    elif enc == "mono8":
        img = cv2.cvtColor(img, cv2.COLOR_GRAY2RGB)
    if w != width or h != height:
        img = cv2.resize(img, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(img.transpose(2, 0, 1))


class RosImageCamera:
    """Newest frame of an image topic; converts lazily, once per new message."""

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check: the topic's ``{placeholders}`` are ones the host robot fills in."""
        topic = str(node.get("topic", ""))
        try:
            fields = [f for _, f, _, _ in string.Formatter().parse(topic) if f is not None]
        except ValueError as exc:
            raise ConfigError(f"{path}.topic: {topic!r}: {exc}") from None
        unknown = [f for f in fields if f not in TOPIC_FIELDS]
        if unknown or not topic.strip():
            raise ConfigError(
                f"{path}.topic: {topic!r}: placeholders may only be "
                f"{', '.join('{' + f + '}' for f in TOPIC_FIELDS)} (got {unknown or 'an empty topic'})"
            )

    def __init__(
        self,
        frames: FrameSpec,
        host: Any = None,
        *,
        topic: str,
        reliability: Literal["best_effort", "reliable"] = "best_effort",
        depth: PositiveInt = 2,
        transport: TransportKind = "auto",
        domain_id: Annotated[int, Range(ge=0, le=232)] | None = None,
        open_timeout_s: PositiveFloat = 5.0,
        process: bool = True,
    ) -> None:
        frames.bind(self)
        self.host = host
        # "{robot}" and "{robot_id}" in the topic come from the host robot's config
        self.topic = topic.format(robot=getattr(host, "name", "") or "", robot_id=getattr(host, "robot_id", "") or "")
        self.qos = QosProfile.from_config({"reliability": reliability, "depth": depth})
        self.transport_kind = transport
        self.domain_id = domain_id
        self.open_timeout_s = float(open_timeout_s)
        self._own_transport = None
        self._sub: Subscription | None = None
        self._cache: tuple[int, Frame] | None = None
        self.reliability, self.depth = reliability, int(depth)
        self.process = bool(process)
        self._remote: CameraProcess | None = None

    def start(self) -> None:
        """Subscribe and wait for the first image (at most ``open_timeout_s``)."""
        if self.process:
            twin = functools.partial(
                RosImageCamera,
                self.frames,
                topic=self.topic,
                reliability=self.reliability,
                depth=self.depth,
                transport=getattr(self.host, "transport_kind", self.transport_kind),
                domain_id=getattr(self.host, "domain_id", self.domain_id),
                open_timeout_s=self.open_timeout_s,
                process=False,
            )
            self._remote = start_in_process(self, twin, self.open_timeout_s, self._remote)
            return
        if self._sub is not None:
            return
        transport = getattr(self.host, "transport", None)
        if transport is None:
            transport = self._own_transport = make_transport(
                self.transport_kind, self.domain_id, node_name=f"camera_{self.name}"
            )
        self._sub = transport.subscribe(self.topic, "sensor_msgs/msg/Image", self.qos)
        deadline = time.monotonic() + self.open_timeout_s
        while self._sub.latest() is None:
            if time.monotonic() >= deadline:
                self.stop()
                raise RobotError(f"camera {self.name}: no image on {self.topic} within {self.open_timeout_s:.1f} s")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._remote is not None:
            self._remote.stop()
        sub, self._sub = self._sub, None
        if sub is not None and self._own_transport is None:
            sub.close()
        own, self._own_transport = self._own_transport, None
        if own is not None:
            own.close()

    def read(self) -> Frame:
        if self._remote is not None:
            return self._remote.read()
        if self._sub is None:
            raise RobotError(f"camera {self.name}: not started")
        count = self._sub.count
        latest = self._sub.latest()
        if latest is None:
            raise RobotError(f"camera {self.name}: no image yet on {self.topic}")
        msg, t_recv = latest
        age = time.monotonic() - t_recv
        if age > self.max_frame_age_s:
            raise StaleDataError(
                f"camera {self.name}: newest image on {self.topic} is {age:.3f} s old (max_frame_age_s {self.max_frame_age_s})"
            )
        if self._cache is not None and self._cache[1].receive_time == t_recv:
            return self._cache[1]
        frame = Frame(
            image=image_to_chw(msg, self.width, self.height), capture_time=t_recv, receive_time=t_recv, index=count - 1
        )
        self._cache = (count, frame)
        return frame
