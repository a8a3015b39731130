"""The gym robot's environment in its own process (real time), talking to the control process
through shared memory like hardware -- the sim's physics process pattern; the clock, command and
control words both share are ``robots/device_block.py``.

One shared block (created and unlinked by the control process):

* ``state.*`` (the env process writes once per control period, behind the ``state.lock`` seqlock):
  the state vector, the episode's numbers (step, episode, flags; reward, return, the monotonic time
  the state stands for) and one (3, H, W) image per camera, rendered with that state.
* ``cmd.*`` (control writes on every ``send``, behind ``cmd.lock``): the newest action.
* ``ctl.*``: home requests (control bumps ``HOME_REQ`` with a seed; the env process resets and
  answers with ``HOME_ACK``), the stop flag, pid/ready, a failure message, clock stats.

The env process steps once per wall-clock period on absolute deadlines with the newest command
and exits when asked, when its parent is gone, or on a failure (the message says why).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

from robots.device_block import Ctl as K
from robots.device_block import DeviceBlock, control_specs, run_clock
from robots.gym.episode import EnvConfig, GymEpisode, GymSnapshot
from services.shm import ArraySpec, SharedArrays

log = logging.getLogger(__name__)


class S:
    """``state.i64`` / ``state.f64`` indices."""

    SEQ, STEP, EPISODE, TERMINATED, TRUNCATED, SUCCESS, N = range(7)
    REWARD, RETURN, MONO_TIME, NF = 0, 1, 2, 3


def env_specs(config: EnvConfig, state_dim: int, action_dim: int) -> list[ArraySpec]:
    specs = [
        ArraySpec("state.lock", (1,), "int64"),
        ArraySpec("state.obs", (state_dim,), "float32"),
        ArraySpec("state.i64", (S.N,), "int64"),
        ArraySpec("state.f64", (S.NF,), "float64"),
    ]
    specs += [ArraySpec(f"state.img.{c.name}", (3, c.height, c.width), "uint8") for c in config.cameras]
    return specs + control_specs(action_dim)


class EnvShared(DeviceBlock):
    """Typed access to the env block (either side)."""

    def __init__(self, arrays: SharedArrays, camera_names: tuple[str, ...]) -> None:
        super().__init__(arrays)
        self._obs, self._i64, self._f64 = arrays["state.obs"], arrays["state.i64"], arrays["state.f64"]
        self._images = {name: arrays[f"state.img.{name}"] for name in camera_names}

    def write_state(self, snap: GymSnapshot) -> None:
        self.state_lock.write_begin()
        self._obs[:] = snap.state
        self._i64[:] = (snap.seq, snap.step, snap.episode, snap.terminated, snap.truncated, snap.success)
        self._f64[:] = (snap.reward, snap.episode_return, snap.mono_time)
        for name, dst in self._images.items():
            dst[:] = snap.images[name]
        self.state_lock.write_end()

    def state_seq(self) -> int:
        return int(self._i64[S.SEQ])

    def read_state(self) -> GymSnapshot:
        def copy() -> GymSnapshot:
            i64, f64 = self._i64.copy(), self._f64.copy()
            return GymSnapshot(
                seq=int(i64[S.SEQ]),
                state=self._obs.copy(),
                reward=float(f64[S.REWARD]),
                episode_return=float(f64[S.RETURN]),
                step=int(i64[S.STEP]),
                episode=int(i64[S.EPISODE]),
                terminated=bool(i64[S.TERMINATED]),
                truncated=bool(i64[S.TRUNCATED]),
                success=bool(i64[S.SUCCESS]),
                mono_time=float(f64[S.MONO_TIME]),
                images={n: a.copy() for n, a in self._images.items()},
            )

        return self.state_lock.read(copy)


def env_main(
    block: str,
    specs: list[ArraySpec],
    config: EnvConfig,
    hz: float,
    max_lag_s: float,
    seed: int | None,
    *,
    parent_alive: Callable[[], bool],
) -> None:
    """Env process entry point (module level for ``spawn``): build the env, reset it with ``seed``
    (the episode the control side stands in), then step at ``hz``."""
    arrays = SharedArrays.attach(block, specs)
    shared = EnvShared(arrays, tuple(c.name for c in config.cameras))
    episode = None
    try:
        episode = GymEpisode(config)
        shared.write_state(episode.reset(seed))
        shared.ctl[K.PID] = os.getpid()
        shared.ctl[K.READY] = 1
        _env_loop(shared, episode, 1.0 / hz, max_lag_s, parent_alive)
    except BaseException as exc:  # noqa: BLE001 - the control side reads the message
        shared.record_failure(exc)
        log.exception("gym env process failed")
        raise SystemExit(1)
    finally:
        if episode is not None:
            episode.close()
        arrays.close(orphaned=not parent_alive())


def _env_loop(
    shared: EnvShared, episode: GymEpisode, period: float, max_lag_s: float, parent_alive: Callable[[], bool]
) -> None:
    def home(seed: int | None) -> None:
        shared.write_state(episode.reset(seed))

    def step(deadline: float) -> None:
        shared.write_state(episode.step(shared.read_command(), deadline))

    # the episode starts at the reset: its first step is one period after it
    run_clock(shared, period, max_lag_s, parent_alive, step, home, "gym env", restart_clock_on_home=True)
