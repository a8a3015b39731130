"""The transfer-cube physics of the sim robot, without threads or processes.

``SimPhysics`` owns one ``MjData``: reset to an episode's home pose and cube draw, advance one
control period with a command, snapshot the state. The sim robot runs it in the calling thread
(lockstep), in a thread (``device_processes=false``) or in the physics process
(``robots/sim/process.py``); all three step the same code.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from robots.sim import aloha

mujoco = aloha.mujoco


@dataclass(frozen=True)
class SimSnapshot:
    """The robot's state after one control tick; immutable, shared between threads.

    ``mono_time``: monotonic time this state stands for (real time: the tick's deadline;
    lockstep: when the tick was computed). ``qpos``/``qvel`` are full MuJoCo vectors (for rendering).
    """

    seq: int
    qpos: np.ndarray
    qvel: np.ndarray
    sim_time: float
    mono_time: float
    step: int
    episode: int
    state: np.ndarray
    cube_pose: np.ndarray
    cube_init_pose: np.ndarray
    reward: int
    shift_tick: int  # the task's cube shift: the step it happens at (-1: none this episode)
    cube_shift_pose: np.ndarray  # ... and where the cube goes then


class SimPhysics:
    """One MuJoCo state of the transfer-cube scene, stepped ``n_substeps`` per control period."""

    def __init__(self, model: mujoco.MjModel, n_substeps: int, shift: aloha.CubeShift | None = None) -> None:
        self.model = model
        self.shift = shift
        self.data = mujoco.MjData(model)
        self.n_substeps = int(n_substeps)
        self.reward = aloha.ContactReward(model)
        self.seq = 0
        self.step = 0
        self.episode = 0
        self.cube_init = np.zeros(7)
        self.shift_tick = -1
        self.cube_shift = np.zeros(7)

    def reset(self, rng: np.random.Generator, new_episode: bool) -> np.ndarray:
        """Arms home, cube drawn from ``rng``, step 0; returns the home command (14)."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:16] = aloha.home_qpos16()
        self.cube_init = aloha.sample_cube_pose(rng)
        if self.shift is not None:
            hz = 1.0 / (self.n_substeps * float(m.opt.timestep))
            self.shift_tick, self.cube_shift = self.shift.draw(rng, self.cube_init, hz)
        d.qpos[aloha.CUBE_QPOS] = self.cube_init
        home = aloha.home_joints14()
        d.ctrl[:] = aloha.joints14_to_ctrl16(home)
        mujoco.mj_forward(m, d)
        self.step = 0
        if new_episode:
            self.episode += 1
        return home

    def advance(self, command: np.ndarray) -> None:
        """One control period holding the 14-dim joint ``command``."""
        self.data.ctrl[:] = aloha.joints14_to_ctrl16(command)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.step += 1
        if self.step == self.shift_tick:  # the task's disturbance: the cube is moved, at rest
            self.data.qpos[aloha.CUBE_QPOS] = self.cube_shift
            self.data.qvel[aloha.CUBE_QVEL] = 0.0
            mujoco.mj_forward(self.model, self.data)

    def snapshot(self, mono_time: float) -> SimSnapshot:
        d = self.data
        self.seq += 1
        return SimSnapshot(
            seq=self.seq,
            qpos=d.qpos.copy(),
            qvel=d.qvel.copy(),
            sim_time=float(d.time),
            mono_time=mono_time,
            step=self.step,
            episode=self.episode,
            state=aloha.qpos16_to_joints14(d.qpos[:16]).astype(np.float32),
            cube_pose=d.qpos[aloha.CUBE_QPOS].copy(),
            cube_init_pose=self.cube_init.copy(),
            reward=self.reward(d),
            shift_tick=self.shift_tick,
            cube_shift_pose=self.cube_shift.copy(),
        )

    def load(self, snap: SimSnapshot, command: np.ndarray) -> None:
        """Continue from ``snap`` (e.g. handed over from or back to the physics process)."""
        d = self.data
        d.qpos[:] = snap.qpos
        d.qvel[:] = snap.qvel
        d.time = snap.sim_time
        d.ctrl[:] = aloha.joints14_to_ctrl16(command)
        mujoco.mj_forward(self.model, d)
        self.seq, self.step, self.episode = snap.seq, snap.step, snap.episode
        self.cube_init = np.array(snap.cube_init_pose, dtype=np.float64)
        self.shift_tick = int(snap.shift_tick)
        self.cube_shift = np.array(snap.cube_shift_pose, dtype=np.float64)
