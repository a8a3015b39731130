"""ROS 2 message types without a ROS install: rosbags' typestore (ROS 2 Humble definitions).

Messages are rosbags dataclasses (``sensor_msgs__msg__JointState`` ...) on both transports; the
wire payload is the CDR byte string rosbags produces, which is the exact format ROS 2 puts on the
wire (4-byte encapsulation header CDR_LE + XCDR1 body), so a ROS 2 node can read what we publish.
"""

from __future__ import annotations

import functools
import time
from typing import Any

import numpy as np
from rosbags.typesys import Stores, get_typestore

# Short names accepted in configs (topics files in the inference_runtime_topics.json format say "JointState").
_SHORT_NAMES = {
    "JointState": "sensor_msgs/msg/JointState",
    "Image": "sensor_msgs/msg/Image",
    "Float32MultiArray": "std_msgs/msg/Float32MultiArray",
    "Float64MultiArray": "std_msgs/msg/Float64MultiArray",
    "PoseStamped": "geometry_msgs/msg/PoseStamped",
    "Twist": "geometry_msgs/msg/Twist",
}


@functools.lru_cache(maxsize=1)
def typestore() -> Any:
    """The process-wide ROS 2 Humble typestore (building it takes ~100 ms, so once)."""
    return get_typestore(Stores.ROS2_HUMBLE)


def resolve_type(msg_type: str) -> str:
    """Full ROS 2 type name: 'JointState' -> 'sensor_msgs/msg/JointState'; also accepts 'pkg/Type'."""
    if msg_type in _SHORT_NAMES:
        return _SHORT_NAMES[msg_type]
    parts = msg_type.split("/")
    if len(parts) == 2:
        msg_type = f"{parts[0]}/msg/{parts[1]}"
    if msg_type not in typestore().types:
        raise ValueError(f"unknown ROS 2 message type {msg_type!r} (not in the ROS 2 Humble typestore)")
    return msg_type


def dds_type_name(msg_type: str) -> str:
    """ROS 2's DDS type name: 'sensor_msgs/msg/JointState' -> 'sensor_msgs::msg::dds_::JointState_'."""
    pkg, kind, name = resolve_type(msg_type).split("/")
    return f"{pkg}::{kind}::dds_::{name}_"


def dds_topic_name(topic: str) -> str:
    """ROS 2's DDS topic name for a ROS topic: '/a/b' -> 'rt/a/b'."""
    return "rt/" + topic.lstrip("/")


def serialize(msg: Any, msg_type: str) -> bytes:
    """CDR bytes (with the 4-byte encapsulation header) of a rosbags message."""
    return bytes(typestore().serialize_cdr(msg, resolve_type(msg_type)))


def deserialize(data: bytes | memoryview, msg_type: str) -> Any:
    """A rosbags message from CDR bytes (what ROS 2 sends)."""
    return typestore().deserialize_cdr(data, resolve_type(msg_type))


def message_class(msg_type: str) -> type:
    return typestore().types[resolve_type(msg_type)]


def stamp(t_wall_s: float | None = None) -> Any:
    """A builtin_interfaces/Time for a wall-clock time (ROS stamps are wall time, not monotonic)."""
    t = time.time() if t_wall_s is None else t_wall_s
    sec = int(t)
    Time = message_class("builtin_interfaces/msg/Time")
    return Time(sec=sec, nanosec=int((t - sec) * 1e9))


def header(frame_id: str = "", t_wall_s: float | None = None) -> Any:
    Header = message_class("std_msgs/msg/Header")
    return Header(stamp=stamp(t_wall_s), frame_id=frame_id)


def joint_state(
    names: list[str] | tuple[str, ...],
    position: np.ndarray,
    velocity: np.ndarray | None = None,
    effort: np.ndarray | None = None,
    frame_id: str = "",
) -> Any:
    """A sensor_msgs/JointState; empty velocity/effort when not given (ROS convention)."""
    empty = np.zeros(0, dtype=np.float64)
    return message_class("sensor_msgs/msg/JointState")(
        header=header(frame_id),
        name=list(names),
        position=np.asarray(position, dtype=np.float64),
        velocity=empty if velocity is None else np.asarray(velocity, dtype=np.float64),
        effort=empty if effort is None else np.asarray(effort, dtype=np.float64),
    )


def float32_multi_array(data: np.ndarray) -> Any:
    """A std_msgs/Float32MultiArray with one unlabeled dimension (how the IGRIS hands talk)."""
    data = np.asarray(data, dtype=np.float32)
    Dim = message_class("std_msgs/msg/MultiArrayDimension")
    Layout = message_class("std_msgs/msg/MultiArrayLayout")
    layout = Layout(dim=[Dim(label="", size=len(data), stride=len(data))], data_offset=0)
    return message_class("std_msgs/msg/Float32MultiArray")(layout=layout, data=data)


def image_rgb8(hwc: np.ndarray, frame_id: str = "", t_wall_s: float | None = None) -> Any:
    """A sensor_msgs/Image (encoding rgb8) from an (H, W, 3) uint8 array."""
    hwc = np.ascontiguousarray(hwc, dtype=np.uint8)
    h, w, _ = hwc.shape
    return message_class("sensor_msgs/msg/Image")(
        header=header(frame_id, t_wall_s),
        height=h,
        width=w,
        encoding="rgb8",
        is_bigendian=0,
        step=w * 3,
        data=hwc.reshape(-1),
    )
