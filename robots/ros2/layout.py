"""A ROS 2 robot's static layout from its YAML: action groups, state keys, topics, limits.

Action groups are listed in action order, each in its own unit (``deg`` or ``rad`` for joints,
``raw`` for hands/grippers in the robot's normalized units). Degrees are converted to radians
here, once; everything after this module is in robot units (radians / raw).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from robots.base import RobotSpec
from robots.ros2.topics import CommandTopic, StateTopic, load_seed_topics, parse_command_topics, parse_state_topics

_UNITS = {"deg": np.pi / 180.0, "rad": 1.0, "raw": 1.0}
_GROUP_KEYS = {"name", "size", "unit", "state_key", "home", "lower", "upper", "max_delta", "tolerance", "joint_names"}
# Keys of a robot YAML node that describe the layout (the rest are runtime knobs of Ros2Robot).
LAYOUT_KEYS = (
    "name",
    "hz",
    "action_dim",
    "state_dim",
    "robot_id",
    "topics",
    "topics_file",
    "commands",
    "state_keys",
    "groups",
    "max_delta_deg",
    "home_tolerance_deg",
)


@dataclass(frozen=True)
class Group:
    """A contiguous block of the action vector (an arm, a hand) and where its measurement lives."""

    name: str
    start: int
    stop: int
    unit: str
    state_key: str | None


def _vec(value: Any, size: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.float64)
    if arr.ndim == 0:
        arr = np.full(size, float(arr))
    if arr.shape != (size,):
        raise ValueError(f"{what}: expected {size} values, got {arr.shape[0] if arr.ndim else 'a scalar'}")
    return arr


@dataclass(frozen=True)
class RobotLayout:
    name: str
    hz: float
    action_dim: int
    state_dim: int
    robot_id: str
    state_topics: dict[str, StateTopic]
    commands: dict[str, CommandTopic]
    state_keys: tuple[str, ...]
    state_slices: dict[str, tuple[int, int]]
    groups: tuple[Group, ...]
    joint_names: tuple[str, ...]
    lower: np.ndarray
    upper: np.ndarray
    home: np.ndarray
    max_delta: np.ndarray
    home_tolerance: np.ndarray
    action_to_state: np.ndarray  # (action_dim,) state index measuring each action dim, -1 if none

    @classmethod
    def from_params(
        cls,
        *,
        name: str,
        hz: float,
        action_dim: int,
        state_dim: int,
        groups: Sequence[Mapping[str, Any]],
        commands: Mapping[str, Any],
        state_keys: Sequence[str],
        topics: Mapping[str, Any] | None = None,
        topics_file: str | None = None,
        robot_id: str = "",
        max_delta_deg: float = 5.0,
        home_tolerance_deg: float = 2.0,
    ) -> RobotLayout:
        if topics_file:
            seed = load_seed_topics(topics_file)
            topics = {**seed["topics"], **dict(topics or {})}
            robot_id = robot_id or seed["robot_id"]
        if not topics:
            raise ValueError(f"robot {name}: no state topics (give topics: or topics_file:)")
        state_topics = parse_state_topics(topics, robot_id)
        command_topics = parse_command_topics(commands, action_dim, robot_id)

        key_size = {}
        for st in state_topics.values():
            for f in st.fields:
                if f.key in key_size:
                    raise ValueError(f"robot {name}: observation key {f.key} is mapped by two topics")
                key_size[f.key] = f.size
        state_slices, offset = {}, 0
        for key in state_keys:
            if key not in key_size:
                raise ValueError(
                    f"robot {name}: state key {key} is not produced by any topic (have {sorted(key_size)})"
                )
            state_slices[key] = (offset, offset + key_size[key])
            offset += key_size[key]
        if offset != state_dim:
            raise ValueError(f"robot {name}: state keys add up to {offset} values, state_dim is {state_dim}")

        parsed, names = [], []
        lower, upper, home, max_delta, tol = (np.zeros(action_dim) for _ in range(5))
        action_to_state = np.full(action_dim, -1, dtype=np.int64)
        start = 0
        for i, gcfg in enumerate(groups):
            gcfg = dict(gcfg)
            unknown = set(gcfg) - _GROUP_KEYS
            if unknown:
                raise ValueError(
                    f"robot {name} group {i}: unknown keys {sorted(unknown)} (known: {sorted(_GROUP_KEYS)})"
                )
            gname, size, unit = str(gcfg["name"]), int(gcfg["size"]), str(gcfg.get("unit", "rad"))
            if unit not in _UNITS:
                raise ValueError(f"robot {name} group {gname}: unit must be one of {sorted(_UNITS)}, got {unit!r}")
            stop = start + size
            if stop > action_dim:
                raise ValueError(f"robot {name}: groups exceed action_dim {action_dim}")
            k = _UNITS[unit]
            what = f"robot {name} group {gname}"
            sl = slice(start, stop)
            home[sl] = k * _vec(gcfg["home"], size, f"{what} home")
            lower[sl] = k * _vec(gcfg["lower"], size, f"{what} lower")
            upper[sl] = k * _vec(gcfg["upper"], size, f"{what} upper")
            if unit == "raw":
                if "max_delta" not in gcfg:
                    raise ValueError(f"{what}: a raw-unit group needs max_delta (raw units per tick)")
                delta_default, tol_default = None, 0.05
            else:  # angles: defaults from the robot-wide degree values, expressed in this unit
                delta_default = np.deg2rad(max_delta_deg) / k
                tol_default = np.deg2rad(home_tolerance_deg) / k
            max_delta[sl] = k * _vec(gcfg.get("max_delta", delta_default), size, f"{what} max_delta")
            tol[sl] = k * _vec(gcfg.get("tolerance", tol_default), size, f"{what} tolerance")
            if not (lower[sl] <= home[sl]).all() or not (home[sl] <= upper[sl]).all():
                raise ValueError(f"{what}: home pose outside [lower, upper]")
            if (max_delta[sl] <= 0).any():
                raise ValueError(f"{what}: max_delta must be > 0")
            state_key = gcfg.get("state_key")
            if state_key is not None:
                if state_key not in state_slices:
                    raise ValueError(f"{what}: state_key {state_key} is not one of state_keys")
                s0, s1 = state_slices[state_key]
                if s1 - s0 != size:
                    raise ValueError(f"{what}: state_key {state_key} has {s1 - s0} values for {size} joints")
                action_to_state[sl] = np.arange(s0, s1)
            jn = gcfg.get("joint_names") or [f"{gname}_{j + 1}" for j in range(size)]
            if len(jn) != size:
                raise ValueError(f"{what}: {len(jn)} joint_names for {size} joints")
            names.extend(str(n) for n in jn)
            parsed.append(Group(gname, start, stop, unit, state_key))
            start = stop
        if start != action_dim:
            raise ValueError(f"robot {name}: groups cover {start} action dims, action_dim is {action_dim}")

        return cls(
            name=name,
            hz=float(hz),
            action_dim=int(action_dim),
            state_dim=int(state_dim),
            robot_id=robot_id,
            state_topics=state_topics,
            commands=command_topics,
            state_keys=tuple(state_keys),
            state_slices=state_slices,
            groups=tuple(parsed),
            joint_names=tuple(names),
            lower=lower,
            upper=upper,
            home=home,
            max_delta=max_delta,
            home_tolerance=tol,
            action_to_state=action_to_state,
        )

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> RobotLayout:
        """From a robot YAML node (``_target_`` and runtime keys are ignored)."""
        try:
            from omegaconf import DictConfig, OmegaConf

            if isinstance(cfg, DictConfig):
                cfg = OmegaConf.to_container(cfg, resolve=True)
        except ImportError:  # pragma: no cover
            pass
        return cls.from_params(**{k: cfg[k] for k in LAYOUT_KEYS if k in cfg})

    def spec(self, camera_names: Sequence[str] = ()) -> RobotSpec:
        return RobotSpec(
            name=self.name,
            hz=self.hz,
            action_dim=self.action_dim,
            state_dim=self.state_dim,
            joint_names=self.joint_names,
            lower=self.lower,
            upper=self.upper,
            home=self.home,
            max_delta=self.max_delta,
            camera_names=tuple(camera_names),
        )

    def state_vector(self, values: Mapping[str, np.ndarray]) -> np.ndarray:
        out = np.empty(self.state_dim, dtype=np.float32)
        for key, (s0, s1) in self.state_slices.items():
            out[s0:s1] = values[key]
        return out

    def measured_action(self, state: np.ndarray, fallback: np.ndarray) -> np.ndarray:
        """Action-space positions measured in ``state``; ``fallback`` where a dim has no sensor."""
        out = np.array(fallback, dtype=np.float64)
        have = self.action_to_state >= 0
        out[have] = state[self.action_to_state[have]]
        return out
