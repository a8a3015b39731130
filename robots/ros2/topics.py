"""Topic mapping from configuration: which message fields become which observation keys, and
which action slices go to which command topics. Pure logic (no I/O), shared by the robot and
its twin, so a test of the twin's inverse mapping is a test of the robot's mapping.

State topics (the form of an ``inference_runtime_topics.json`` topics file)::

    joints:
      topic: /igris_b/{robot_id}/joint_states
      msg_type: JointState
      qos: {reliability: reliable, depth: 10}
      fields:
        /observation/joint_pos/right: {attr: position, slice: [0, 6]}
        /observation/joint_pos/left:  {attr: position, slice: [6, 12]}

Command topics (action slice -> message slice; every message slot must be covered once)::

    arms:
      topic: /igris_b/{robot_id}/target_joints
      msg_type: JointState
      attr: position
      size: 12
      slots:
        - {action: [6, 12], slice: [0, 6]}   # right arm first
        - {action: [0, 6],  slice: [6, 12]}  # then left

``{robot_id}`` in a topic name is replaced by the robot's id.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robots.base import RobotError
from robots.ros2 import messages
from robots.ros2.transport import QosProfile

_ARRAY_TYPES = ("std_msgs/msg/Float32MultiArray", "std_msgs/msg/Float64MultiArray")
_JOINT_STATE = "sensor_msgs/msg/JointState"
_JOINT_ATTRS = ("position", "velocity", "effort")


def _span(value: Any, what: str) -> tuple[int, int]:
    if not isinstance(value, Sequence) or len(value) != 2:
        raise ValueError(f"{what}: a slice is [start, stop], got {value!r}")
    start, stop = int(value[0]), int(value[1])
    if not 0 <= start < stop:
        raise ValueError(f"{what}: slice [{start}, {stop}) is empty or negative")
    return start, stop


def _check_attr(msg_type: str, attr: str, what: str) -> None:
    if msg_type == _JOINT_STATE and attr in _JOINT_ATTRS:
        return
    if msg_type in _ARRAY_TYPES and attr == "data":
        return
    if attr not in {name for name, _ in messages.typestore().fielddefs[msg_type][1]}:
        raise ValueError(f"{what}: {msg_type} has no field {attr!r}")


@dataclass(frozen=True)
class FieldMap:
    """Observation ``key`` = ``msg.<attr>[start:stop]``."""

    key: str
    attr: str
    start: int
    stop: int

    @property
    def size(self) -> int:
        return self.stop - self.start


@dataclass(frozen=True)
class StateTopic:
    """A subscribed topic and the observation keys sliced out of it."""

    name: str
    topic: str
    msg_type: str
    fields: tuple[FieldMap, ...]
    qos: QosProfile = QosProfile()

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any], robot_id: str = "") -> StateTopic:
        cfg = dict(cfg)
        unknown = set(cfg) - {"topic", "msg_type", "fields", "qos"}
        if unknown:
            raise ValueError(f"state topic {name!r}: unknown keys {sorted(unknown)}")
        msg_type = messages.resolve_type(str(cfg["msg_type"]))
        fields = []
        for key, fcfg in dict(cfg.get("fields") or {}).items():
            fcfg = dict(fcfg)
            attr = str(fcfg.get("attr", "data" if msg_type in _ARRAY_TYPES else "position"))
            _check_attr(msg_type, attr, f"state topic {name!r} field {key!r}")
            start, stop = _span(fcfg.get("slice"), f"state topic {name!r} field {key!r}")
            fields.append(FieldMap(str(key), attr, start, stop))
        if not fields:
            raise ValueError(f"state topic {name!r} maps no fields")
        return cls(
            name=name,
            topic=str(cfg["topic"]).format(robot_id=robot_id),
            msg_type=msg_type,
            fields=tuple(fields),
            qos=QosProfile.from_config(cfg.get("qos")),
        )

    def extract(self, msg: Any) -> dict[str, np.ndarray]:
        """Observation key -> float64 values. A message too short for a slice is an error."""
        out = {}
        for f in self.fields:
            values = np.asarray(getattr(msg, f.attr), dtype=np.float64)
            if values.shape[0] < f.stop:
                raise RobotError(
                    f"{self.topic}: {f.attr} has {values.shape[0]} values, {f.key} needs [{f.start}, {f.stop})"
                )
            out[f.key] = values[f.start : f.stop]
        return out

    def attr_sizes(self) -> dict[str, int]:
        sizes: dict[str, int] = {}
        for f in self.fields:
            sizes[f.attr] = max(sizes.get(f.attr, 0), f.stop)
        return sizes

    def compose(self, values: Mapping[str, np.ndarray], names: Sequence[str] = ()) -> Any:
        """The inverse of ``extract`` (used by the twin): a message carrying ``values``."""
        arrays = {attr: np.zeros(size) for attr, size in self.attr_sizes().items()}
        for f in self.fields:
            if f.key in values:
                arrays[f.attr][f.start : f.stop] = values[f.key]
        return build_message(self.msg_type, arrays, names)


@dataclass(frozen=True)
class CommandSlot:
    action_start: int
    action_stop: int
    start: int
    stop: int


@dataclass(frozen=True)
class CommandTopic:
    """A published topic filled from action slices: ``msg.<attr>[start:stop] = action[a:b]``."""

    name: str
    topic: str
    msg_type: str
    attr: str
    size: int
    slots: tuple[CommandSlot, ...]
    qos: QosProfile = QosProfile()

    @classmethod
    def from_config(cls, name: str, cfg: Mapping[str, Any], action_dim: int, robot_id: str = "") -> CommandTopic:
        cfg = dict(cfg)
        unknown = set(cfg) - {"topic", "msg_type", "attr", "size", "slots", "qos"}
        if unknown:
            raise ValueError(f"command topic {name!r}: unknown keys {sorted(unknown)}")
        msg_type = messages.resolve_type(str(cfg["msg_type"]))
        attr = str(cfg.get("attr", "data" if msg_type in _ARRAY_TYPES else "position"))
        _check_attr(msg_type, attr, f"command topic {name!r}")
        size = int(cfg["size"])
        covered = np.zeros(size, dtype=int)
        slots = []
        for i, scfg in enumerate(cfg.get("slots") or []):
            scfg = dict(scfg)
            a0, a1 = _span(scfg.get("action"), f"command topic {name!r} slot {i} action")
            s0, s1 = _span(scfg.get("slice"), f"command topic {name!r} slot {i} slice")
            if a1 - a0 != s1 - s0:
                raise ValueError(
                    f"command topic {name!r} slot {i}: action [{a0},{a1}) and slice [{s0},{s1}) differ in size"
                )
            if a1 > action_dim or s1 > size:
                raise ValueError(
                    f"command topic {name!r} slot {i}: out of range (action_dim {action_dim}, size {size})"
                )
            covered[s0:s1] += 1
            slots.append(CommandSlot(a0, a1, s0, s1))
        if not (covered == 1).all():
            bad = np.flatnonzero(covered != 1).tolist()
            raise ValueError(f"command topic {name!r}: message slots {bad} are not covered exactly once")
        return cls(
            name,
            str(cfg["topic"]).format(robot_id=robot_id),
            msg_type,
            attr,
            size,
            tuple(slots),
            QosProfile.from_config(cfg.get("qos")),
        )

    def split(self, action: np.ndarray) -> np.ndarray:
        """The message values (``size``,) for one action vector."""
        out = np.empty(self.size, dtype=np.float64)
        for s in self.slots:
            out[s.start : s.stop] = action[s.action_start : s.action_stop]
        return out

    def merge(self, values: np.ndarray, action: np.ndarray) -> None:
        """The inverse of ``split`` (used by the twin): write message values into ``action``."""
        values = np.asarray(values, dtype=np.float64)
        if values.shape[0] < self.size:
            raise RobotError(f"{self.topic}: {self.attr} has {values.shape[0]} values, expected {self.size}")
        for s in self.slots:
            action[s.action_start : s.action_stop] = values[s.start : s.stop]

    def message(self, action: np.ndarray, names: Sequence[str] = ()) -> Any:
        return build_message(self.msg_type, {self.attr: self.split(action)}, names)

    def message_names(self, joint_names: Sequence[str]) -> list[str]:
        """JointState ``name`` for each message slot, from the action's joint names."""
        names = [""] * self.size
        for s in self.slots:
            names[s.start : s.stop] = joint_names[s.action_start : s.action_stop]
        return names


def build_message(msg_type: str, arrays: Mapping[str, np.ndarray], names: Sequence[str] = ()) -> Any:
    """A JointState or (Float32|Float64)MultiArray message carrying ``arrays`` (attr -> values)."""
    if msg_type == _JOINT_STATE:
        size = max((len(v) for v in arrays.values()), default=0)
        return messages.joint_state(
            list(names)[:size] if names else [],
            arrays.get("position", np.zeros(0)),
            arrays.get("velocity"),
            arrays.get("effort"),
        )
    if msg_type == "std_msgs/msg/Float32MultiArray":
        return messages.float32_multi_array(arrays["data"])
    if msg_type == "std_msgs/msg/Float64MultiArray":
        msg = messages.float32_multi_array(arrays["data"])
        return messages.message_class(msg_type)(layout=msg.layout, data=np.asarray(arrays["data"], np.float64))
    raise ValueError(f"no message builder for {msg_type}")


def parse_state_topics(cfg: Mapping[str, Any], robot_id: str = "") -> dict[str, StateTopic]:
    return {str(name): StateTopic.from_config(str(name), tcfg, robot_id) for name, tcfg in dict(cfg).items()}


def parse_command_topics(cfg: Mapping[str, Any], action_dim: int, robot_id: str = "") -> dict[str, CommandTopic]:
    commands = {
        str(name): CommandTopic.from_config(str(name), ccfg, action_dim, robot_id) for name, ccfg in dict(cfg).items()
    }
    covered = np.zeros(action_dim, dtype=int)
    for c in commands.values():
        for s in c.slots:
            covered[s.action_start : s.action_stop] += 1
    if not (covered == 1).all():
        bad = np.flatnonzero(covered != 1).tolist()
        raise ValueError(f"action dims {bad} are not sent by exactly one command slot")
    return commands


def load_seed_topics(path: str | Path) -> dict[str, Any]:
    """Read an ``inference_runtime_topics.json`` topics file (a robot's existing topic map) into this module's config form.

    Returns ``{"robot_id": ..., "hz": ..., "topics": {name: {topic, msg_type, fields}}}``; the
    file's field entries (``{"slice": [a, b], "attr": ...}``) are kept as they are.
    """
    raw = json.loads(Path(path).read_text())
    topics = {}
    for name, tcfg in raw.get("topics", {}).items():
        topics[name] = {
            "topic": tcfg["topic"],
            "msg_type": tcfg["msg_type"],
            "fields": {
                k: {"attr": v.get("attr", "position"), "slice": list(v["slice"])} for k, v in tcfg["fields"].items()
            },
        }
        if "qos" in tcfg:
            topics[name]["qos"] = tcfg["qos"]
    return {"robot_id": raw.get("robot_id", ""), "hz": raw.get("HZ"), "topics": topics}
