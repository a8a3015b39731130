"""The ALOHA bimanual ViperX transfer-cube task: model, unit conversions, cube sampling, reward.

Pure helpers shared by the sim robot and the scripted expert (which runs in another process and
loads its own copy of the model). Conventions follow gym_aloha (``gym_aloha/constants.py``,
``gym_aloha/tasks/sim.py``): the 14-dim joint vector is left arm (6 joints, rad), left gripper
(normalized finger position, 0 closed .. 1 open), then the same for the right arm; the MJCF has 16
actuators (each gripper drives two mirrored finger slides).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Literal, get_args

# MuJoCo reads MUJOCO_GL when it is first imported: entry points call robots.gl.select_backend()
# before importing this module (an explicit call at start, not an import side effect).
import mujoco
import numpy as np
from gym_aloha.constants import (
    ASSETS_DIR,
    JOINTS,
    START_ARM_POSE,
    normalize_puppet_gripper_position,
    unnormalize_puppet_gripper_position,
)

XML_PATH: Path = Path(ASSETS_DIR) / "bimanual_viperx_transfer_cube.xml"
JOINT_NAMES: tuple[str, ...] = tuple(JOINTS)
ARM_QPOS = {"left": slice(0, 6), "right": slice(8, 14)}  # arm joints in the 16 robot qpos
GRIPPER_QPOS = {"left": 6, "right": 14}  # the 'left_finger' slide of each gripper
CUBE_QPOS = slice(16, 23)  # free joint: xyz + quat (w, x, y, z)
CUBE_QVEL = slice(16, 22)  # its 6 velocity dofs (linear, angular)
GRIPPER_DIMS = (6, 13)  # gripper entries in the 14-dim vector

# gym_aloha's sample_box_pose ranges (metres, world frame).
CUBE_X_RANGE = (0.0, 0.2)
CUBE_Y_RANGE = (0.4, 0.6)
CUBE_Z = 0.05


def load_model() -> mujoco.MjModel:
    """Load the transfer-cube MJCF (physics timestep 0.002 s from the file)."""
    return mujoco.MjModel.from_xml_path(str(XML_PATH))


def home_qpos16() -> np.ndarray:
    return np.asarray(START_ARM_POSE, dtype=np.float64)


def qpos16_to_joints14(qpos16: np.ndarray) -> np.ndarray:
    """Robot qpos (16: fingers as slides) -> 14-dim state (grippers normalized)."""
    q = np.asarray(qpos16, dtype=np.float64)
    return np.concatenate(
        [q[0:6], [normalize_puppet_gripper_position(q[6])], q[8:14], [normalize_puppet_gripper_position(q[14])]]
    )


def joints14_to_ctrl16(action: np.ndarray) -> np.ndarray:
    """14-dim command -> 16 actuator targets (each gripper: finger position and its mirror)."""
    a = np.asarray(action, dtype=np.float64)
    left_g = unnormalize_puppet_gripper_position(a[6])
    right_g = unnormalize_puppet_gripper_position(a[13])
    return np.concatenate([a[0:6], [left_g, -left_g], a[7:13], [right_g, -right_g]])


def home_joints14() -> np.ndarray:
    return qpos16_to_joints14(home_qpos16())


def sample_cube_pose(rng: np.random.Generator) -> np.ndarray:
    """Cube pose (x, y, z, qw, qx, qy, qz) uniform in gym_aloha's sample_box_pose box."""
    xy = rng.uniform([CUBE_X_RANGE[0], CUBE_Y_RANGE[0]], [CUBE_X_RANGE[1], CUBE_Y_RANGE[1]])
    return np.array([xy[0], xy[1], CUBE_Z, 1.0, 0.0, 0.0, 0.0])


@dataclass(frozen=True)
class CubeShift:
    """A task variant's disturbance: once per episode, at a time drawn from ``[first_s, last_s]``
    (seconds from home, rounded to a control tick), the cube is moved (at rest) to a pose drawn in the start box at least
    ``min_distance_m`` from where it started. Acting on an observation older than the shift
    reaches for an empty table; the policy has to see it and re-aim in time."""

    first_s: float
    last_s: float
    min_distance_m: float

    def draw(self, rng: np.random.Generator, cube_init: np.ndarray, hz: float) -> tuple[int, np.ndarray]:
        """(tick, pose) of the shift; drawn after the cube's start pose from the same ``rng``."""
        tick = int(round(rng.uniform(self.first_s, self.last_s) * hz))
        for _ in range(1000):
            pose = sample_cube_pose(rng)
            if np.linalg.norm(pose[:2] - cube_init[:2]) >= self.min_distance_m:
                return tick, pose
        raise RuntimeError(f"no cube pose {self.min_distance_m} m from {cube_init[:2]} in the start box")


@dataclass(frozen=True)
class SlideDraw:
    """One episode's draw of a :class:`CubeSlide`: the cube's velocity (m/s, world frame), until
    when it slides (s from home, unless a finger touches it first) and the demonstrator's strategy
    draw in [0, 1) (which of its strategies it follows: drawn here, from the episode's RNG, so it
    is independent of anything a camera shows)."""

    velocity_mps: np.ndarray
    until_s: float
    strategy_draw: float


@dataclass(frozen=True)
class CubeSlide:
    """A task variant whose cube moves while the right arm approaches it: it slides at a constant
    velocity, drawn per episode (speed uniform in ``speed_range_mps`` along ``direction_xy``, a
    conveyor), from home until ``until_s`` or until a gripper finger touches it, whichever comes
    first; then it is free (at rest). Its start is the start box shifted by ``start_offset_xy_m``
    (upstream), so that it ends within reach.

    The direction is fixed and the speed range narrow on purpose: one camera frame shows where
    the cube is, not how fast it moves, so a policy can only plan ahead for a motion it can
    predict; a direction drawn per episode would make even an undelayed policy guess.
    """

    speed_range_mps: tuple[float, float]
    direction_xy: tuple[float, float]
    until_s: float
    start_offset_xy_m: tuple[float, float]

    def start_pose(self, rng: np.random.Generator) -> np.ndarray:
        pose = sample_cube_pose(rng)
        pose[:2] += np.asarray(self.start_offset_xy_m)
        return pose

    def draw(self, rng: np.random.Generator) -> SlideDraw:
        """This episode's velocity and strategy draw, from the same ``rng`` after the start pose."""
        speed = float(rng.uniform(*self.speed_range_mps))
        direction = np.asarray(self.direction_xy, dtype=np.float64)
        direction = direction / np.linalg.norm(direction)
        velocity = np.array([speed * direction[0], speed * direction[1], 0.0])
        return SlideDraw(velocity, float(self.until_s), float(rng.uniform()))

    @staticmethod
    def position_at(start: np.ndarray, velocity_mps: np.ndarray, until_s: float, t_s: float) -> np.ndarray:
        """Where an untouched sliding cube is at ``t_s`` (xyz, m): it moves until ``until_s``."""
        return np.asarray(start[:3], np.float64) + np.asarray(velocity_mps, np.float64) * float(
            np.clip(t_s, 0.0, until_s)
        )


# Named task variants of the scene (``robot.task``): the disturbance each episode draws.
TASKS: dict[str, CubeShift | CubeSlide | None] = {
    "transfer_cube": None,  # gym_aloha's task: the cube stays where it starts
    # The cube jumps once, 0.4-1.5 s in (while the right arm approaches it), by >= 6 cm.
    "transfer_cube_shift": CubeShift(first_s=0.4, last_s=1.5, min_distance_m=0.06),
    # The cube slides towards the left arm at 2.5-3.5 cm/s until the right gripper is down on it
    # (2.6 s, 6.5-9 cm of travel), and the expert's approach side is drawn per episode.
    "transfer_cube_slide": CubeSlide(
        speed_range_mps=(0.025, 0.035), direction_xy=(-1.0, 0.0), until_s=2.6, start_offset_xy_m=(0.06, 0.0)
    ),
}


# The task names as a type, for start-time config validation of ``robot.task``.
SimTask = Literal["transfer_cube", "transfer_cube_shift", "transfer_cube_slide"]
assert set(get_args(SimTask)) == set(TASKS), "SimTask must list exactly the TASKS"


def task_shift(task: str) -> CubeShift | CubeSlide | None:
    """The disturbance of a named task; ValueError naming the choices for an unknown one."""
    if task not in TASKS:
        raise ValueError(f"unknown sim task {task!r}; expected one of {sorted(TASKS)}")
    return TASKS[task]


class ContactReward:
    """gym_aloha's TransferCubeTask.get_reward, reimplemented from MuJoCo contacts.

    0: nothing; 1: right gripper touches the cube; 2: ... and the cube is off the table;
    3: left gripper touches the cube; 4: ... and the cube is off the table (= success).
    Contact pairs are matched in either order.
    """

    def __init__(self, model: mujoco.MjModel) -> None:
        gid = lambda name: mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_GEOM, name)  # noqa: E731
        self.box = gid("red_box")
        self.table = gid("table")
        self.left_finger = gid("vx300s_left/10_left_gripper_finger")
        self.right_finger = gid("vx300s_right/10_right_gripper_finger")
        if min(self.box, self.table, self.left_finger, self.right_finger) < 0:
            raise ValueError("transfer-cube model lacks the geoms the reward needs")

    def touches_finger(self, data: mujoco.MjData) -> bool:
        """Whether either gripper finger touches the cube now."""
        n = data.ncon
        if n == 0:
            return False
        g1 = np.asarray(data.contact.geom1[:n])
        g2 = np.asarray(data.contact.geom2[:n])
        other = np.concatenate([g2[g1 == self.box], g1[g2 == self.box]])
        return bool(np.any((other == self.left_finger) | (other == self.right_finger)))

    def __call__(self, data: mujoco.MjData) -> int:
        n = data.ncon
        if n == 0:
            return 0
        g1 = np.asarray(data.contact.geom1[:n])
        g2 = np.asarray(data.contact.geom2[:n])
        other = np.concatenate([g2[g1 == self.box], g1[g2 == self.box]])
        touch_left = bool(np.any(other == self.left_finger))
        touch_right = bool(np.any(other == self.right_finger))
        touch_table = bool(np.any(other == self.table))
        reward = 0
        if touch_right:
            reward = 1
        if touch_right and not touch_table:
            reward = 2
        if touch_left:
            reward = 3
        if touch_left and not touch_table:
            reward = 4
        return reward
