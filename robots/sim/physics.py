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
    # A sliding-cube task (aloha.CubeSlide): the cube's velocity (m/s, xyz), until when it slides
    # (s; it stops earlier when a finger touches it), whether it is still sliding, and the
    # demonstrator's strategy draw in [0, 1). Zeros / False / 0.0 for the other tasks.
    cube_velocity: np.ndarray
    slide_until_s: float
    sliding: bool
    strategy_draw: float


class SimPhysics:
    """One MuJoCo state of the transfer-cube scene, stepped ``n_substeps`` per control period."""

    def __init__(
        self, model: mujoco.MjModel, n_substeps: int, shift: aloha.CubeShift | aloha.CubeSlide | None = None
    ) -> None:
        self.model = model
        self.shift = shift if isinstance(shift, aloha.CubeShift) else None
        self.slide = shift if isinstance(shift, aloha.CubeSlide) else None
        self.data = mujoco.MjData(model)
        self.n_substeps = int(n_substeps)
        self.reward = aloha.ContactReward(model)
        self.seq = 0
        self.step = 0
        self.episode = 0
        self.cube_init = np.zeros(7)
        self.shift_tick = -1
        self.cube_shift = np.zeros(7)
        self.cube_velocity = np.zeros(3)
        self.slide_until_s = 0.0
        self.sliding = False
        self.strategy_draw = 0.0

    def reset(self, rng: np.random.Generator, new_episode: bool) -> np.ndarray:
        """Arms home, cube drawn from ``rng``, step 0; returns the home command (14)."""
        m, d = self.model, self.data
        mujoco.mj_resetData(m, d)
        d.qpos[:16] = aloha.home_qpos16()
        self.cube_init = aloha.sample_cube_pose(rng) if self.slide is None else self.slide.start_pose(rng)
        self.cube_velocity, self.slide_until_s, self.sliding, self.strategy_draw = np.zeros(3), 0.0, False, 0.0
        if self.slide is not None:
            draw = self.slide.draw(rng)
            self.cube_velocity, self.slide_until_s = draw.velocity_mps, draw.until_s
            self.sliding, self.strategy_draw = True, draw.strategy_draw
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
        if self.sliding:
            self._advance_sliding()
        else:
            mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self.step += 1
        if self.step == self.shift_tick:  # the task's disturbance: the cube is moved, at rest
            self.data.qpos[aloha.CUBE_QPOS] = self.cube_shift
            self.data.qvel[aloha.CUBE_QVEL] = 0.0
            mujoco.mj_forward(self.model, self.data)

    def _advance_sliding(self) -> None:
        """One control period while the cube slides: before each physics step its position and
        velocity are set (kinematically, like a conveyor under it), until ``slide_until_s`` or
        until a finger touches it; from then on it is left to the physics, at rest."""
        m, d = self.model, self.data
        for _ in range(self.n_substeps):
            if self.sliding and (d.time >= self.slide_until_s - 1e-9 or self.reward.touches_finger(d)):
                self.sliding = False
                d.qvel[aloha.CUBE_QVEL] = 0.0
            if self.sliding:
                xyz = aloha.CubeSlide.position_at(self.cube_init, self.cube_velocity, self.slide_until_s, d.time)
                d.qpos[aloha.CUBE_QPOS.start : aloha.CUBE_QPOS.start + 2] = xyz[:2]
                d.qpos[aloha.CUBE_QPOS.start + 3 : aloha.CUBE_QPOS.stop] = (1.0, 0.0, 0.0, 0.0)
                d.qvel[aloha.CUBE_QVEL] = 0.0
                d.qvel[aloha.CUBE_QVEL.start : aloha.CUBE_QVEL.start + 2] = self.cube_velocity[:2]
            mujoco.mj_step(m, d)

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
            cube_velocity=self.cube_velocity.copy(),
            slide_until_s=self.slide_until_s,
            sliding=self.sliding,
            strategy_draw=self.strategy_draw,
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
        self.cube_velocity = np.array(snap.cube_velocity, dtype=np.float64)
        self.slide_until_s = float(snap.slide_until_s)
        self.sliding = bool(snap.sliding)
        self.strategy_draw = float(snap.strategy_draw)
