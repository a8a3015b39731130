"""The simulated ALOHA bimanual ViperX robot (transfer-cube task), MuJoCo driven directly.

Two clock modes (``realtime``):

* lockstep (``False``): ``send`` applies the command and advances exactly one control period
  (``n_substeps`` physics steps) with no sleeping; ``read`` returns the state after it and renders
  cameras synchronously. Same seed + same actions -> identical states and images. For evaluation.
* real time (``True``): ``start`` launches a physics thread that advances one control period per
  wall-clock period on absolute deadlines, applying the latest command; ``send`` only stores it;
  ``read`` returns the newest snapshot; cameras render in their own threads from snapshots.

Units: joints in rad, grippers normalized (0 closed .. 1 open), times from ``time.monotonic()``.
``Observation.info`` carries privileged sim data (cube pose, reward, success) for the scripted
expert and for evaluation; a real robot has none of it.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from robots.base import Observation, RobotError, RobotSpec, StaleDataError
from robots.sim import aloha

mujoco = aloha.mujoco
log = logging.getLogger(__name__)

SUCCESS_REWARD = 4


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


class SimRobot:
    """ALOHA transfer-cube in MuJoCo behind the ``robots.base.Robot`` protocol.

    Parameters: ``hz`` control rate (Hz); ``max_delta_deg`` arm slew limit per tick (degrees);
    ``max_gripper_delta`` gripper slew limit per tick (normalized units); ``render_in_lockstep``
    False skips camera rendering in lockstep ``read`` (faster evaluation without images);
    ``max_state_age_s`` real-time ``read`` raises ``StaleDataError`` when the newest physics
    snapshot is older (physics thread stalled); ``max_lag_s`` real-time physics re-anchors its
    clock instead of bursting to catch up when it falls further behind; ``start_timeout_s`` how
    long real-time ``start`` waits for every camera's first fresh frame; ``render_msaa`` the
    offscreen multisampling (anti-aliasing) samples; ``seed`` the cube pose of the initial
    episode (before any ``home``).

    ``stats`` (real time): physics ``ticks``, ``late_ticks`` (finished more than one period after
    their deadline), ``max_lag_s`` and ``resyncs`` (clock re-anchored after lagging > max_lag_s).
    """

    def __init__(
        self,
        *,
        cameras: dict[str, Callable[..., Any]] | None = None,
        name: str = "sim",
        hz: float = 20.0,
        action_dim: int = 14,
        state_dim: int = 14,
        realtime: bool = True,
        max_delta_deg: float = 5.0,
        max_gripper_delta: float = 0.1,
        render_in_lockstep: bool = True,
        max_state_age_s: float = 0.5,
        max_lag_s: float = 0.5,
        start_timeout_s: float = 10.0,
        render_msaa: int = 0,
        seed: int | None = 0,
    ) -> None:
        if action_dim != 14 or state_dim != 14:
            raise ValueError(f"sim robot is 14-dim (got action_dim={action_dim}, state_dim={state_dim})")
        if hz <= 0:
            raise ValueError(f"hz must be > 0 (got {hz})")
        self.model = aloha.load_model()
        # Multisampling of the offscreen buffer (the MJCF asks for 4): set before any camera
        # creates its GL context. 0 renders ~4x faster on CPU Mesa (llvmpipe).
        self.model.vis.quality.offsamples = int(render_msaa)
        self.data = mujoco.MjData(self.model)
        self.timestep_s = float(self.model.opt.timestep)
        self.n_substeps = max(1, int(round(1.0 / (hz * self.timestep_s))))
        self.realtime = bool(realtime)
        self.render_in_lockstep = bool(render_in_lockstep)
        self.max_state_age_s = float(max_state_age_s)
        self.max_lag_s = float(max_lag_s)
        self.start_timeout_s = float(start_timeout_s)
        self._reward = aloha.ContactReward(self.model)

        arm_range = self.model.actuator_ctrlrange
        lower = np.concatenate([arm_range[0:6, 0], [0.0], arm_range[8:14, 0], [0.0]])
        upper = np.concatenate([arm_range[0:6, 1], [1.0], arm_range[8:14, 1], [1.0]])
        arm_delta = np.deg2rad(max_delta_deg)
        max_delta = np.full(14, arm_delta)
        max_delta[list(aloha.GRIPPER_DIMS)] = max_gripper_delta

        self._physics_lock = threading.RLock()
        self._snap_lock = threading.Lock()
        self._cmd_lock = threading.Lock()
        self._stop_evt = threading.Event()
        self._thread: threading.Thread | None = None
        self._ran = False
        self._physics_error: BaseException | None = None
        self._seq = 0
        self._step = 0
        self._episode = 0
        self._cube_init = np.zeros(7)
        self._cmd = aloha.home_joints14()
        self._snapshot: SimSnapshot | None = None
        self.stats = {"ticks": 0, "late_ticks": 0, "max_lag_s": 0.0, "resyncs": 0}

        self.cameras: dict[str, Any] = {}
        for cam_name, factory in (cameras or {}).items():
            self.cameras[cam_name] = factory(host=self)

        self.spec = RobotSpec(
            name=name,
            hz=float(hz),
            action_dim=14,
            state_dim=14,
            joint_names=aloha.JOINT_NAMES,
            lower=lower,
            upper=upper,
            home=aloha.home_joints14(),
            max_delta=max_delta,
            camera_names=tuple(self.cameras),
        )
        self._reset(np.random.default_rng(seed), new_episode=False)

    # --- physics ----------------------------------------------------------------------------
    def _reset(self, rng: np.random.Generator, new_episode: bool) -> None:
        with self._physics_lock:
            m, d = self.model, self.data
            mujoco.mj_resetData(m, d)
            d.qpos[:16] = aloha.home_qpos16()
            self._cube_init = aloha.sample_cube_pose(rng)
            d.qpos[aloha.CUBE_QPOS] = self._cube_init
            home = aloha.home_joints14()
            d.ctrl[:] = aloha.joints14_to_ctrl16(home)
            mujoco.mj_forward(m, d)
            with self._cmd_lock:
                self._cmd = home
            self._step = 0
            if new_episode:
                self._episode += 1
            self._publish(time.monotonic())

    def _publish(self, mono_time: float) -> None:
        """Snapshot the physics state (caller holds the physics lock)."""
        d = self.data
        self._seq += 1
        snap = SimSnapshot(
            seq=self._seq,
            qpos=d.qpos.copy(),
            qvel=d.qvel.copy(),
            sim_time=float(d.time),
            mono_time=mono_time,
            step=self._step,
            episode=self._episode,
            state=aloha.qpos16_to_joints14(d.qpos[:16]).astype(np.float32),
            cube_pose=d.qpos[aloha.CUBE_QPOS].copy(),
            cube_init_pose=self._cube_init.copy(),
            reward=self._reward(d),
        )
        with self._snap_lock:
            self._snapshot = snap

    def _advance(self, mono_time: float | None) -> None:
        """One control period with the latest command (caller holds the physics lock)."""
        with self._cmd_lock:
            cmd = self._cmd
        self.data.ctrl[:] = aloha.joints14_to_ctrl16(cmd)
        mujoco.mj_step(self.model, self.data, nstep=self.n_substeps)
        self._step += 1
        self._publish(time.monotonic() if mono_time is None else mono_time)

    def _physics_loop(self) -> None:
        period = self.spec.period_s
        t0 = time.monotonic()
        k = 0
        try:
            while not self._stop_evt.is_set():
                k += 1
                deadline = t0 + k * period
                wait = deadline - time.monotonic()
                if wait > 0 and self._stop_evt.wait(wait):
                    break
                with self._physics_lock:
                    self._advance(deadline)
                lag = time.monotonic() - deadline
                self.stats["ticks"] += 1
                self.stats["max_lag_s"] = max(self.stats["max_lag_s"], lag)
                if lag > period:
                    self.stats["late_ticks"] += 1
                if lag > self.max_lag_s:
                    # Far behind (CPU starved): restart the clock rather than burst-step.
                    log.warning("sim physics %.3f s behind the wall clock; re-anchoring", lag)
                    t0 = time.monotonic() - k * period
                    self.stats["resyncs"] += 1
        except BaseException as exc:  # noqa: BLE001 - surfaced by read()
            log.exception("sim physics thread failed")
            self._physics_error = exc

    # --- robot protocol ---------------------------------------------------------------------
    def latest_snapshot(self) -> SimSnapshot:
        with self._snap_lock:
            snap = self._snapshot
        assert snap is not None
        return snap

    def start(self) -> None:
        """Real time: start physics and camera threads; return once every camera has a fresh
        frame (``RobotError`` after ``start_timeout_s``). Lockstep: nothing to do."""
        if not self.realtime:
            return
        if self._thread is None or not self._thread.is_alive():
            self._stop_evt.clear()
            self._physics_error = None
            self._ran = True
            self._thread = threading.Thread(target=self._physics_loop, name="sim-physics", daemon=True)
            self._thread.start()
        started = time.monotonic()
        for cam in self.cameras.values():
            cam.start()
        # Block until every camera shows the running sim, so the first read() is not stale.
        for cam in self.cameras.values():
            cam.wait_for_frame(started, self.start_timeout_s)

    def home(self, seed: int | None = None) -> None:
        """New episode: arms to home, cube re-drawn from ``default_rng(seed)``, step counter 0."""
        self._reset(np.random.default_rng(seed), new_episode=True)

    def send(self, action: np.ndarray) -> None:
        """Command 14 joint targets. Lockstep: also advance one control period.

        Raises ValueError on a wrong shape or a non-finite value; nothing is applied then.
        """
        cmd = np.array(action, dtype=np.float64).reshape(-1)
        if cmd.shape != (14,):
            raise ValueError(f"sim action must have shape (14,), got {np.shape(action)}")
        if not np.all(np.isfinite(cmd)):
            raise ValueError(f"non-finite sim action refused: {cmd}")
        with self._cmd_lock:
            self._cmd = cmd
        if not self.realtime:
            with self._physics_lock:
                self._advance(None)

    def read(self) -> Observation:
        """Newest state (and frames). Real time raises if physics died or its state is stale."""
        if self._physics_error is not None:
            raise RobotError(f"sim physics thread failed: {self._physics_error!r}")
        snap = self.latest_snapshot()
        if self.realtime:
            if self._ran:  # once physics ran, a frozen state (stalled or stopped) is stale
                age = time.monotonic() - snap.mono_time
                if age > self.max_state_age_s:
                    raise StaleDataError(f"sim state is {age:.3f} s old (max {self.max_state_age_s} s)")
            images = {name: cam.read() for name, cam in self.cameras.items()}
        elif self.render_in_lockstep:
            images = {name: cam.render_snapshot(snap) for name, cam in self.cameras.items()}
        else:
            images = {}
        info = {
            "step": snap.step,
            "episode": snap.episode,
            "cube_init_pose": snap.cube_init_pose.copy(),
            "cube_pose": snap.cube_pose.copy(),
            "reward": snap.reward,
            "success": snap.reward >= SUCCESS_REWARD,
            "sim_time": snap.sim_time,
            "hz": self.spec.hz,
        }
        return Observation(state=snap.state.copy(), images=images, timestamp=snap.mono_time, info=info)

    def stop(self) -> None:
        """Stop physics and camera threads (the arm holds its last command). Idempotent."""
        self._stop_evt.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("sim physics thread did not stop within 2 s")
        for cam in self.cameras.values():
            cam.stop()

    def __enter__(self) -> "SimRobot":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
