"""The simulated ALOHA bimanual ViperX robot (transfer-cube task), MuJoCo driven directly.

Two clock modes (``realtime``):

* lockstep (``False``): ``send`` applies the command and advances exactly one control period
  (``n_substeps`` physics steps) with no sleeping; ``read`` returns the state after it and renders
  cameras synchronously. Same seed + same actions -> identical states and images. For evaluation.
* real time (``True``): physics advances one control period per wall-clock period on absolute
  deadlines, applying the latest command; ``send`` only stores it; ``read`` returns the newest
  state. With ``device_processes`` (default) physics runs in its own process and talks to this one
  through shared memory like hardware (``robots/sim/process.py``: command in, state out, with
  times), and each camera renders in its own process into a frame ring: the control process keeps
  one Python thread. ``device_processes=false`` is the earlier design (physics and camera threads
  in the control process), kept for comparison (``benchmarks/bench_realtime.py``).

Lockstep stays in the calling thread whatever ``device_processes`` says: it has no wall clock to
keep, and a process hop per tick would only add latency to a deterministic computation.

Units: joints in rad, grippers normalized (0 closed .. 1 open), times from ``time.monotonic()``.
``Observation.info`` carries privileged sim data (cube pose, reward, success) for the scripted
expert and for evaluation; a real robot has none of it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Annotated, Any

import numpy as np

from robots.base import Observation, RobotError, RobotSpec, StaleDataError
from robots.device_block import read_state, request_home, stop_process, wait_ready
from robots.sim import aloha
from robots.sim.physics import SimPhysics, SimSnapshot
from robots.sim.process import K, PhysicsShared, physics_main, physics_specs
from services.devproc import DeviceProcess
from services.knobs import NonNegativeInt, PositiveFloat, Range
from services.shm import SharedArrays, ShmRegistry, unique_block_name

mujoco = aloha.mujoco
log = logging.getLogger(__name__)

SUCCESS_REWARD = 4


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
    episode (before any ``home``); ``device_processes`` real time: physics and cameras in their
    own processes (False: threads of this process); ``task`` the scene's variant
    (``aloha.TASKS``: ``transfer_cube``, ``transfer_cube_shift`` whose cube jumps once per
    episode while the right arm approaches it, or ``transfer_cube_slide`` whose cube slides
    while the right arm approaches it).

    ``stats`` (real time): physics ``ticks``, ``late_ticks`` (finished more than one period after
    their deadline), ``max_lag_s`` and ``resyncs`` (clock re-anchored after lagging > max_lag_s).
    """

    def __init__(
        self,
        *,
        cameras: dict[str, Callable[..., Any]] | None = None,
        name: str = "sim",
        hz: Annotated[float, Range(gt=0, le=500)] = 20.0,  # at most one physics step (0.002 s) per tick
        action_dim: int = 14,
        state_dim: int = 14,
        realtime: bool = True,
        max_delta_deg: PositiveFloat = 5.0,
        max_gripper_delta: PositiveFloat = 0.1,
        render_in_lockstep: bool = True,
        max_state_age_s: PositiveFloat = 0.5,
        max_lag_s: PositiveFloat = 0.5,
        start_timeout_s: PositiveFloat = 10.0,
        render_msaa: NonNegativeInt = 0,
        seed: NonNegativeInt | None = 0,
        device_processes: bool = True,
        task: aloha.SimTask = "transfer_cube",
    ) -> None:
        if action_dim != 14 or state_dim != 14:
            raise ValueError(f"sim robot is 14-dim (got action_dim={action_dim}, state_dim={state_dim})")
        if hz <= 0:
            raise ValueError(f"hz must be > 0 (got {hz})")
        self.task = str(task)
        shift = aloha.task_shift(self.task)
        self.model = aloha.load_model()
        # Multisampling of the offscreen buffer (the MJCF asks for 4): set before any camera
        # creates its GL context. 0 renders ~4x faster on CPU Mesa (llvmpipe).
        self.model.vis.quality.offsamples = int(render_msaa)
        self.timestep_s = float(self.model.opt.timestep)
        self.n_substeps = max(1, int(round(1.0 / (hz * self.timestep_s))))
        self.realtime = bool(realtime)
        self.render_in_lockstep = bool(render_in_lockstep)
        self.max_state_age_s = float(max_state_age_s)
        self.max_lag_s = float(max_lag_s)
        self.start_timeout_s = float(start_timeout_s)
        self.render_msaa = int(render_msaa)
        self.device_processes = bool(device_processes)
        self.hz = float(hz)
        self.physics = SimPhysics(self.model, self.n_substeps, shift)
        self.data = self.physics.data

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
        self._cmd = aloha.home_joints14()
        self._proc: DeviceProcess | None = None  # the physics process (device_processes)
        self._shared: PhysicsShared | None = None
        self._block: SharedArrays | None = None
        self._pending: PhysicsShared | None = None  # spawned, not yet ready
        self._read_seq = -1
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

    # --- physics (lockstep and thread mode: in this process) -------------------------------
    @property
    def in_process(self) -> bool:
        """True when physics runs in a process of its own (real time, started, device_processes)."""
        return self._shared is not None

    def _reset(self, rng: np.random.Generator, new_episode: bool) -> None:
        with self._physics_lock:
            home = self.physics.reset(rng, new_episode)
            with self._cmd_lock:
                self._cmd = home
            self._publish(time.monotonic())

    def _publish(self, mono_time: float) -> None:
        """Snapshot the physics state (caller holds the physics lock)."""
        snap = self.physics.snapshot(mono_time)
        with self._snap_lock:
            self._snapshot = snap

    def _advance(self, mono_time: float | None) -> None:
        """One control period with the latest command (caller holds the physics lock)."""
        with self._cmd_lock:
            cmd = self._cmd
        self.physics.advance(cmd)
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

    # --- physics process (real time with device_processes) ----------------------------------
    def physics_block(self) -> tuple[str, list] | None:
        """(name, specs) of the shared physics state while the physics process runs (cameras attach it)."""
        return None if self._block is None else (self._block.name, list(self._block.specs))

    def _start_process(self) -> None:
        specs = physics_specs(self.model)
        self._block = SharedArrays.create(specs, name=unique_block_name("sim"))
        ShmRegistry.add(self._block)
        shared = PhysicsShared(self._block)
        with self._physics_lock:  # hand the current state over
            shared.write_state(self.latest_snapshot())
            with self._cmd_lock:
                shared.write_command(self._cmd)
        self._proc = DeviceProcess(
            "sim-physics", physics_main, (self._block.name, specs, self.hz, self.max_lag_s, self.render_msaa, self.task)
        )
        self._proc.start()
        self._pending = shared  # cameras may attach the block while physics starts

    def _wait_process(self) -> None:
        shared, self._pending = self._pending, None
        wait_ready(self._proc, shared, self.start_timeout_s, "sim physics", self._stop_process)
        self._shared = shared
        self._read_seq = -1

    def _stop_process(self, deadline: float | None = None) -> None:
        proc, shared, block = self._proc, self._shared, self._block
        self._proc, self._shared, self._pending = None, None, None
        if proc is not None:
            stats_src = shared or (PhysicsShared(block) if block is not None else None)
            self.stats.update(stop_process(proc, stats_src, deadline))
            if stats_src is not None:
                try:  # keep the last state: read() after stop() shows it (and ages it), start() resumes it
                    snap, cmd = stats_src.read_state(), stats_src.read_command()
                    with self._physics_lock:
                        self.physics.load(snap, cmd)
                        with self._snap_lock:
                            self._snapshot = snap
                        with self._cmd_lock:
                            self._cmd = cmd
                except TimeoutError:
                    log.warning("sim physics process left its state mid-write; keeping the previous one")
        if block is not None:
            self._block = None
            ShmRegistry.release(block)

    # --- robot protocol ---------------------------------------------------------------------
    def latest_snapshot(self) -> SimSnapshot:
        if self._shared is not None:
            return self._shared.read_state()
        with self._snap_lock:
            snap = self._snapshot
        assert snap is not None
        return snap

    def start(self) -> None:
        """Real time: start physics (process or thread) and cameras; return once every camera has
        a fresh frame (``RobotError`` after ``start_timeout_s``). Lockstep: nothing to do."""
        if not self.realtime:
            return
        if self.device_processes:
            if self._proc is None:
                self._ran = True
                self._start_process()
        elif self._thread is None or not self._thread.is_alive():
            self._stop_evt.clear()
            self._physics_error = None
            self._ran = True
            self._thread = threading.Thread(target=self._physics_loop, name="sim-physics", daemon=True)
            self._thread.start()
        started = time.monotonic()
        try:
            for cam in self.cameras.values():
                cam.start()
            if self._pending is not None:
                self._wait_process()
            # Block until every camera shows the running sim, so the first read() is not stale.
            self._wait_for_frames_after(started)
        except BaseException:
            self.stop()
            raise

    def home(self, seed: int | None = None) -> None:
        """New episode: arms to home, cube re-drawn from ``default_rng(seed)``, step counter 0.

        In real time it returns once every camera shows the new episode: the reset is a teleport,
        and a camera's newest frame would otherwise still show the last episode (or the pose
        before the first home), so the episode's first observation -- the one its first chunk is
        planned from -- would pair the new state with an old scene."""
        if self._shared is None:
            self._reset(np.random.default_rng(seed), new_episode=True)
        else:
            self._home_process(seed)
        if self._physics_running():
            self._wait_for_frames_after(self.latest_snapshot().mono_time)

    def _physics_running(self) -> bool:
        """Real-time physics is stepping (process or thread): its cameras render the live scene."""
        return self.in_process or (self._thread is not None and self._thread.is_alive())

    def _wait_for_frames_after(self, mono_time: float) -> None:
        """Block until every camera has a frame captured at or after ``mono_time`` (``RobotError``
        after ``start_timeout_s``)."""
        for cam in self.cameras.values():
            cam.wait_for_frame(mono_time, self.start_timeout_s)

    def _home_process(self, seed: int | None) -> None:
        shared = self._shared
        home = aloha.home_joints14()
        with self._cmd_lock:
            self._cmd = home
        shared.write_command(home)  # before the reset: the first step after it holds home
        request_home(self._proc, shared, seed, self.start_timeout_s, "sim physics", "home")

    def send(self, action: np.ndarray) -> None:
        """Command 14 joint targets. Lockstep: also advance one control period.

        Raises ValueError on a wrong shape or a non-finite value; nothing is applied then.
        """
        cmd = np.array(action, dtype=np.float64).reshape(-1)
        if cmd.shape != (14,):
            raise ValueError(f"sim action must have shape (14,), got {np.shape(action)}")
        if not np.all(np.isfinite(cmd)):
            raise ValueError(f"non-finite sim action refused: {cmd}")
        shared = self._shared
        if shared is not None:
            shared.write_command(cmd)
            return
        with self._cmd_lock:
            self._cmd = cmd
        if not self.realtime:
            with self._physics_lock:
                self._advance(None)

    def _read_state(self) -> SimSnapshot:
        shared = self._shared
        if shared is None:
            if self._physics_error is not None:
                raise RobotError(f"sim physics thread failed: {self._physics_error!r}")
            return self.latest_snapshot()
        snap = read_state(self._proc, shared, self._read_seq, "sim physics")
        self._read_seq = snap.seq
        return snap

    def read(self) -> Observation:
        """Newest state (and frames). Real time raises if physics died or its state is stale."""
        snap = self._read_state()
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
            "cube_init_pose": snap.cube_init_pose,
            "cube_pose": snap.cube_pose,
            "shift_tick": snap.shift_tick,
            "cube_shift_pose": snap.cube_shift_pose,
            "cube_velocity": snap.cube_velocity,  # a sliding-cube task's motion and strategy draw
            "slide_until_s": snap.slide_until_s,
            "strategy_draw": snap.strategy_draw,
            "reward": snap.reward,
            "success": snap.reward >= SUCCESS_REWARD,
            "sim_time": snap.sim_time,
            "hz": self.spec.hz,
        }
        if self._shared is None:  # an in-process snapshot is shared: hand out copies
            info["cube_init_pose"] = snap.cube_init_pose.copy()
            info["cube_pose"] = snap.cube_pose.copy()
            info["cube_shift_pose"] = snap.cube_shift_pose.copy()
            info["cube_velocity"] = snap.cube_velocity.copy()
            return Observation(state=snap.state.copy(), images=images, timestamp=snap.mono_time, info=info)
        return Observation(state=snap.state, images=images, timestamp=snap.mono_time, info=info)

    def stop(self) -> None:
        """Stop physics and cameras (the arm holds its last command). Idempotent."""
        self._stop_evt.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("sim physics thread did not stop within 2 s")
        for cam in self.cameras.values():  # every device process winds down at once
            request = getattr(cam, "request_stop", None)
            if request is not None:
                request()
        if self._shared is not None:
            self._shared.ctl[K.STOP] = 1
        deadline = time.monotonic() + 0.4  # one grace period for all of them, then SIGTERM
        for cam in self.cameras.values():
            if getattr(cam, "request_stop", None) is not None:
                cam.stop(deadline)
            else:
                cam.stop()
        self._stop_process(deadline)

    def __enter__(self) -> SimRobot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
