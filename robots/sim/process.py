"""The sim robot's physics in its own process, talking to the control process like hardware.

One shared block (created and unlinked by the control process) from explicit specs:

* ``state.*`` (physics writes once per control period, behind the ``state.lock`` seqlock): full
  ``qpos``/``qvel`` (cameras render from them), the 14-dim joint state, cube poses, reward, step,
  episode, sim time and the monotonic time the state stands for (the tick's deadline).
* ``cmd.*`` (control writes on every ``send``, behind ``cmd.lock``): the 14 joint targets.
* ``ctl.*``: home requests (control bumps ``HOME_REQ`` with a seed; physics resets and answers
  with ``HOME_ACK``), the stop flag, the physics pid/ready flag, a failure message, clock stats.

The physics process advances one period per wall-clock period on absolute deadlines, applying
the newest command, and exits when asked, when its parent is gone, or on a failure (the message
says why). Camera processes attach the same block read-only and render from ``state.*``.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robots.device_block import Ctl as K
from robots.device_block import DeviceBlock, control_specs, run_clock
from robots.sim import aloha
from robots.sim.physics import SimPhysics, SimSnapshot
from services.logs import FILE_ONLY
from services.shm import ArraySpec, SharedArrays

log = logging.getLogger(__name__)


class S:
    """``state.i64`` / ``state.f64`` indices."""

    SEQ, STEP, EPISODE, REWARD, SHIFT_TICK, N = 0, 1, 2, 3, 4, 5
    SIM_TIME, MONO_TIME, NF = 0, 1, 2


def physics_specs(model: Any) -> list[ArraySpec]:
    return [
        ArraySpec("state.lock", (1,), "int64"),
        ArraySpec("state.qpos", (int(model.nq),), "float64"),
        ArraySpec("state.qvel", (int(model.nv),), "float64"),
        ArraySpec("state.i64", (S.N,), "int64"),
        ArraySpec("state.f64", (S.NF,), "float64"),
        ArraySpec("state.joints", (14,), "float32"),
        ArraySpec("state.cube", (7,), "float64"),
        ArraySpec("state.cube_init", (7,), "float64"),
        ArraySpec("state.cube_shift", (7,), "float64"),
        ArraySpec("state.slide", (6,), "float64"),  # sliding-cube task: velocity xyz, until_s, sliding, strategy
    ] + control_specs(14)


class PhysicsShared(DeviceBlock):
    """Typed access to the physics block (either side)."""

    def __init__(self, arrays: SharedArrays) -> None:
        super().__init__(arrays)
        self._state = {
            k: arrays[f"state.{k}"]
            for k in ("qpos", "qvel", "i64", "f64", "joints", "cube", "cube_init", "cube_shift", "slide")
        }

    # --- state (physics writes) ---
    def write_state(self, snap: SimSnapshot) -> None:
        s = self._state
        self.state_lock.write_begin()
        s["qpos"][:] = snap.qpos
        s["qvel"][:] = snap.qvel
        s["i64"][:] = (snap.seq, snap.step, snap.episode, snap.reward, snap.shift_tick)
        s["f64"][:] = (snap.sim_time, snap.mono_time)
        s["joints"][:] = snap.state
        s["cube"][:] = snap.cube_pose
        s["cube_init"][:] = snap.cube_init_pose
        s["cube_shift"][:] = snap.cube_shift_pose
        s["slide"][:3] = snap.cube_velocity
        s["slide"][3:] = (snap.slide_until_s, float(snap.sliding), snap.strategy_draw)
        self.state_lock.write_end()

    def state_seq(self) -> int:
        return int(self._state["i64"][S.SEQ])

    def read_state(self) -> SimSnapshot:
        s = self._state

        def copy() -> SimSnapshot:
            i64, f64, slide = s["i64"].copy(), s["f64"].copy(), s["slide"].copy()
            return SimSnapshot(
                seq=int(i64[S.SEQ]),
                qpos=s["qpos"].copy(),
                qvel=s["qvel"].copy(),
                sim_time=float(f64[S.SIM_TIME]),
                mono_time=float(f64[S.MONO_TIME]),
                step=int(i64[S.STEP]),
                episode=int(i64[S.EPISODE]),
                state=s["joints"].copy(),
                cube_pose=s["cube"].copy(),
                cube_init_pose=s["cube_init"].copy(),
                reward=int(i64[S.REWARD]),
                shift_tick=int(i64[S.SHIFT_TICK]),
                cube_shift_pose=s["cube_shift"].copy(),
                cube_velocity=slide[:3],
                slide_until_s=float(slide[3]),
                sliding=bool(slide[4]),
                strategy_draw=float(slide[5]),
            )

        return self.state_lock.read(copy)


def physics_main(
    block: str,
    specs: list[ArraySpec],
    hz: float,
    max_lag_s: float,
    render_msaa: int,
    task: str = "transfer_cube",
    *,
    parent_alive: Callable[[], bool],
) -> None:
    """Physics process entry point (module level for ``spawn``)."""
    arrays = SharedArrays.attach(block, specs)
    shared = PhysicsShared(arrays)
    try:
        model = aloha.load_model()
        model.vis.quality.offsamples = int(render_msaa)
        physics = SimPhysics(model, max(1, int(round(1.0 / (hz * float(model.opt.timestep))))), aloha.task_shift(task))
        physics.load(shared.read_state(), shared.read_command())
        shared.write_state(physics.snapshot(time.monotonic()))  # the handed-over state, as of now
        shared.ctl[K.PID] = os.getpid()
        shared.ctl[K.READY] = 1
        _physics_loop(shared, physics, 1.0 / hz, max_lag_s, parent_alive)
    except BaseException as exc:  # noqa: BLE001 - the control side reads the message
        shared.record_failure(exc)
        log.exception("sim physics process failed", extra=FILE_ONLY)  # the parent names it in one fault line
        raise SystemExit(1)
    finally:
        arrays.close(orphaned=not parent_alive())


def _physics_loop(
    shared: PhysicsShared, physics: SimPhysics, period: float, max_lag_s: float, parent_alive: Callable[[], bool]
) -> None:
    def home(seed: int | None) -> None:
        physics.reset(np.random.default_rng(seed), new_episode=True)
        shared.write_state(physics.snapshot(time.monotonic()))

    def step(deadline: float) -> None:
        physics.advance(shared.read_command())
        shared.write_state(physics.snapshot(deadline))

    run_clock(shared, period, max_lag_s, parent_alive, step, home, "sim physics")
