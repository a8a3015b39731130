"""Any Gymnasium environment with a continuous (Box) action space, behind the ``Robot`` protocol.

State: the observation flattened (``robots/gym/layout.py``). Action: the env's Box action in its own
units; its bounds are the robot's limits (the safety filter clips to them). ``home(seed)`` resets the
env with the episode seed and re-seeds the action noise from it. ``Observation.info`` carries
``success``, ``episode_return``, ``reward``, ``step``, ``terminated``, ``truncated``; after the env
terminated or truncated the robot holds (sends no longer step it) and keeps reporting it.

Two clock modes, as for the sim robot:

* lockstep (``realtime=false``): each ``send`` steps the env once, in the calling thread; same seed
  and same commands give the same states (the noise is seeded too).
* real time (``realtime=true``): the env steps once per period of ``hz`` in its own device process
  (``robots/gym/process.py``), applying the newest command; ``send`` only hands it over, ``read``
  returns the newest state with the time it stands for.

The env's rate, action size and state size are facts of the env: ``complete_config`` (run at start,
before anything is built) fills ``hz``, ``action_dim``, ``state_dim`` and ``home_action`` when the
config leaves them null, and refuses values that contradict the env -- each as one line naming the key.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import Annotated, Any

import numpy as np

from robots.base import Frame, Observation, RobotError, RobotSpec, StaleDataError
from robots.device_block import read_state, request_home, stop_process, wait_ready
from robots.gym.episode import CameraSource, EnvConfig, GymEpisode, GymSnapshot, SuccessMode, plain
from robots.gym.layout import LayoutError, leaves, state_layout
from robots.gym.process import EnvShared, K, env_main, env_specs
from robots.gym.suites import SuiteError, control_dt, make_env
from services.devproc import DeviceProcess
from services.errors import ConfigError
from services.knobs import NonNegativeFloat, NonNegativeInt, PositiveFloat, PositiveInt, Range
from services.shm import SharedArrays, ShmRegistry, unique_block_name

log = logging.getLogger(__name__)

CAMERA_TARGET = "robots.gym.GymCamera"
RATE_TOLERANCE = 1e-6  # relative: robot.hz equal to the env's rate up to float noise


class GymRobot:
    """A Gymnasium environment as a robot.

    Parameters: ``env_id`` the environment (``Pendulum-v1``, ``InvertedPendulum-v5``,
    ``dm_control/cartpole-swingup-v0`` through shimmy, ``module:Namespace/Env-v0`` for another suite);
    ``env_kwargs`` passed to ``gymnasium.make``; ``hz`` the control rate (null: the env's own,
    1/``env.unwrapped.dt``; stepping an env is its rate, so any other value is refused);
    ``action_dim``/``state_dim`` null: the env's (a value must match it); ``state_keys`` which
    observation entries make the state, in order (null: every non-image entry in the space's order;
    a nested entry is ``outer/inner``); ``action_noise_std`` Gaussian noise added to every command
    before it steps the env (action units, seeded by the episode seed; 0: none); ``success`` how
    success is read (``auto``: ``info["is_success"]`` when the env reports it, else the return
    threshold when one is known, else termination; or one of ``is_success``, ``return``,
    ``termination``); ``success_return`` the episode return at or above which an ended episode
    succeeded (null: the env's registered ``reward_threshold``, if any); ``max_delta`` the slew limit
    per tick (action units; null: the full action range, i.e. none beyond the bounds);
    ``home_action`` the command that holds (the safety filter's anchor at an episode start and what
    ``policy=hold`` sends; null: zero, clipped into the bounds); ``max_state_age_s`` real-time ``read``
    raises ``StaleDataError`` past it; ``max_lag_s`` the env process re-anchors its clock beyond this
    lag; ``start_timeout_s`` how long ``start``/``home`` wait for the env process; ``seed`` the
    episode before any ``home``.
    """

    def __init__(
        self,
        *,
        env_id: str,
        cameras: dict[str, Callable[..., Any]] | None = None,
        name: str = "gym",
        env_kwargs: dict | None = None,
        hz: PositiveFloat | None = None,
        action_dim: PositiveInt | None = None,
        state_dim: PositiveInt | None = None,
        realtime: bool = True,
        state_keys: list[str] | None = None,
        action_noise_std: NonNegativeFloat = 0.0,
        success: SuccessMode = "auto",
        success_return: Annotated[float, Range()] | None = None,
        max_delta: PositiveFloat | None = None,
        home_action: list[float] | None = None,
        max_state_age_s: PositiveFloat = 0.5,
        max_lag_s: PositiveFloat = 0.5,
        start_timeout_s: PositiveFloat = 30.0,
        seed: NonNegativeInt | None = 0,
    ) -> None:
        self.realtime = bool(realtime)
        self.max_state_age_s = float(max_state_age_s)
        self.max_lag_s = float(max_lag_s)
        self.start_timeout_s = float(start_timeout_s)
        self.cameras: dict[str, Any] = {}
        for cam_name, factory in (cameras or {}).items():
            self.cameras[cam_name] = factory(host=self)
        sources = tuple(CameraSource(c.name, c.source, c.width, c.height) for c in self.cameras.values())
        self.config = EnvConfig(
            env_id=str(env_id),
            env_kwargs=plain(env_kwargs or {}),
            state_keys=None if state_keys is None else tuple(str(k) for k in state_keys),
            action_noise_std=float(action_noise_std),
            success=success,
            success_return=None if success_return is None else float(success_return),
            cameras=sources,
        )
        facts = env_facts(self.config)
        if hz is not None and not _same_rate(float(hz), facts.hz):
            raise ValueError(f"robot.hz={hz} is not {env_id}'s rate ({facts.hz:g} Hz)")
        for key, given, actual in (
            ("action_dim", action_dim, facts.action_dim),
            ("state_dim", state_dim, facts.state_dim),
        ):
            if given is not None and int(given) != actual:
                raise ValueError(f"robot.{key}={given} but {env_id} has {actual}")
        home = facts.home_action(home_action)
        span = facts.upper - facts.lower
        max_delta_arr = (
            np.full(facts.action_dim, float(max_delta))
            if max_delta is not None
            else np.where(np.isfinite(span), span, np.inf)
        )
        self.spec = RobotSpec(
            name=name,
            hz=facts.hz,
            action_dim=facts.action_dim,
            state_dim=facts.state_dim,
            joint_names=tuple(f"a{i}" for i in range(facts.action_dim)),
            lower=facts.lower,
            upper=facts.upper,
            home=home,
            max_delta=np.maximum(max_delta_arr, np.finfo(np.float64).tiny),
            camera_names=tuple(self.cameras),
            command_in_state=False,
        )
        self._seed = seed
        self._cmd = home.copy()
        self._local: GymEpisode | None = None  # the env in this process (lockstep; real time before start)
        self._snapshot: GymSnapshot | None = None
        self._proc: DeviceProcess | None = None
        self._shared: EnvShared | None = None
        self._block: SharedArrays | None = None
        self._read_seq = -1
        self._ran = False
        self.stats = {"ticks": 0, "late_ticks": 0, "max_lag_s": 0.0, "resyncs": 0}
        self._reset_local(seed)

    # --- start-time configuration (no robot is built) ------------------------------------------
    @classmethod
    def complete_config(
        cls, node: Mapping[str, Any], cameras: Mapping[str, Any] | None, path: str = "robot"
    ) -> dict[str, Any]:
        """The keys ``node`` leaves null that the env decides (``hz``, ``action_dim``, ``state_dim``,
        ``home_action``), after checking the env can be driven as configured: it exists here, its
        action space is a Box, ``state_keys`` name observation entries, the given rate and sizes are
        the env's, and every gym camera's ``source`` can be rendered. Raises ``ConfigError`` naming
        the key."""
        env_id = str(node["env_id"])
        devices = {
            name: dev
            for name, dev in ((cameras or {}).get("devices") or {}).items()
            if isinstance(dev, Mapping) and dev.get("_target_") == CAMERA_TARGET
        }
        config = EnvConfig(
            env_id=env_id,
            env_kwargs=plain(node.get("env_kwargs") or {}),
            state_keys=None if node.get("state_keys") is None else tuple(node["state_keys"]),
            success=node.get("success", "auto"),
            success_return=node.get("success_return"),
        )
        try:
            facts = env_facts(config)
        except SuiteError as exc:
            raise ConfigError(f"{path}.env_id: {exc}") from None
        except LayoutError as exc:
            key = "state_keys" if config.state_keys is not None else "env_id"
            raise ConfigError(f"{path}.{key}: {env_id}: {exc}") from None
        except NotBoxAction as exc:
            raise ConfigError(f"{path}.env_id: {exc}") from None
        except Exception as exc:  # noqa: BLE001 - the env's constructor refused: its kwargs, or the id
            key = "env_kwargs" if config.env_kwargs else "env_id"
            raise ConfigError(
                f"{path}.{key}: {env_id} cannot be made with env_kwargs={dict(config.env_kwargs)}: "
                f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
            ) from None
        hz = node.get("hz")
        if hz is not None and not _same_rate(float(hz), facts.hz):
            raise ConfigError(
                f"{path}.hz: {hz:g} Hz is not {env_id}'s rate: each step advances {facts.dt:g} s "
                f"({facts.hz:g} Hz), and stepping an env is its rate (leave {path}.hz null)"
            )
        for key, actual, what in (
            ("action_dim", facts.action_dim, "action space"),
            ("state_dim", facts.state_dim, "state (its observation, flattened)"),
        ):
            given = node.get(key)
            if given is not None and int(given) != actual:
                raise ConfigError(
                    f"{path}.{key}: {given} but {env_id}'s {what} has {actual} (leave {path}.{key} "
                    "null to take the env's)"
                )
        try:
            home = facts.home_action(node.get("home_action"))
        except ValueError as exc:
            raise ConfigError(f"{path}.home_action: {exc}") from None
        if config.success == "return" and facts.success_threshold(config.success_return) is None:
            raise ConfigError(
                f"{path}.success_return: success=return needs a return threshold and {env_id} "
                "registers none (set robot.success_return)"
            )
        for name, dev in devices.items():
            why = facts.camera_problem(config, str(dev.get("source", "render")))
            if why:
                raise ConfigError(f"cameras.devices.{name}.source: {why}")
        out = {
            "hz": facts.hz,
            "action_dim": facts.action_dim,
            "state_dim": facts.state_dim,
            "home_action": [float(v) for v in home],
        }
        return {k: v for k, v in out.items() if node.get(k) is None}

    # --- episodes in this process ----------------------------------------------------------------
    def _local_episode(self) -> GymEpisode:
        if self._local is None:
            self._local = GymEpisode(self.config)
        return self._local

    def _reset_local(self, seed: int | None) -> None:
        self._snapshot = self._local_episode().reset(seed)
        self._cmd = self.spec.home.copy()

    @property
    def in_process(self) -> bool:
        """True while the env runs in a device process of its own (real time, started)."""
        return self._shared is not None

    # --- the env process (real time) ---------------------------------------------------------------
    def start(self) -> None:
        """Real time: start the env process (it resets the env with the current episode's seed) and
        return once it runs (``RobotError`` after ``start_timeout_s``). Lockstep: nothing to do."""
        if not self.realtime or self._proc is not None:
            return
        specs = env_specs(self.config, self.spec.state_dim, self.spec.action_dim)
        self._block = SharedArrays.create(specs, name=unique_block_name("gym"))
        ShmRegistry.add(self._block)
        shared = EnvShared(self._block, tuple(self.cameras))
        shared.write_command(self._cmd)
        if self._local is not None:  # one env at a time: the process builds its own
            self._local.close()
            self._local = None
        self._proc = DeviceProcess(
            "gym-env", env_main, (self._block.name, specs, self.config, self.spec.hz, self.max_lag_s, self._seed)
        )
        self._ran = True
        self._proc.start()
        wait_ready(self._proc, shared, self.start_timeout_s, "gym env", self._stop_process)
        self._shared = shared
        self._read_seq = -1

    def _stop_process(self) -> None:
        proc, block = self._proc, self._block
        self._proc, self._shared, self._block = None, None, None
        if proc is not None and block is not None:
            shared = EnvShared(block, tuple(self.cameras))
            self.stats.update(stop_process(proc, shared))
            if shared.ctl[K.READY]:
                try:  # read() after stop() shows the last state (and ages it)
                    self._snapshot = shared.read_state()
                except TimeoutError:
                    log.warning("gym env process left its state mid-write; keeping the previous one")
        if block is not None:
            ShmRegistry.release(block)

    # --- robot protocol -----------------------------------------------------------------------------
    def home(self, seed: int | None = None) -> None:
        """New episode: ``env.reset(seed=seed)``, the noise re-seeded from ``seed``, the command at
        ``home_action``. Real time: returns once the env process has reset."""
        self._seed = seed
        self._cmd = self.spec.home.copy()
        shared = self._shared
        if shared is None:
            self._reset_local(seed)
            return
        shared.write_command(self._cmd)
        request_home(self._proc, shared, seed, self.start_timeout_s, "gym env", "reset")

    def send(self, action: np.ndarray) -> None:
        """Command one action (env units). Lockstep: also step the env once (not after it ended).

        Raises ValueError on a wrong shape or a non-finite value; nothing is applied then."""
        cmd = np.array(action, dtype=np.float64).reshape(-1)
        if cmd.shape != (self.spec.action_dim,):
            raise ValueError(f"gym action must have shape ({self.spec.action_dim},), got {np.shape(action)}")
        if not np.all(np.isfinite(cmd)):
            raise ValueError(f"non-finite gym action refused: {cmd}")
        self._cmd = cmd
        if self._shared is not None:
            self._shared.write_command(cmd)
            return
        if not self.realtime:
            if self._local is None:
                raise RobotError("gym robot is stopped: home() starts a new episode")
            self._snapshot = self._local.step(cmd, time.monotonic())

    def _read_snapshot(self) -> GymSnapshot:
        shared = self._shared
        if shared is None:
            assert self._snapshot is not None
            return self._snapshot
        snap = read_state(self._proc, shared, self._read_seq, "gym env")
        self._read_seq = snap.seq
        return snap

    def read(self) -> Observation:
        """Newest state, its frames and the episode's numbers. Real time raises ``StaleDataError``
        when the env process stopped publishing (stalled or stopped) for ``max_state_age_s``."""
        snap = self._read_snapshot()
        if self.realtime and self._ran:
            age = time.monotonic() - snap.mono_time
            if age > self.max_state_age_s:
                raise StaleDataError(f"gym env state is {age:.3f} s old (max {self.max_state_age_s} s)")
        now = time.monotonic()
        images = {
            name: Frame(image=snap.images[name], capture_time=snap.mono_time, receive_time=now, index=snap.seq)
            for name in self.cameras
        }
        info = {
            "success": bool(snap.success),
            "episode_return": float(snap.episode_return),
            "reward": float(snap.reward),
            "step": int(snap.step),
            "episode": int(snap.episode),
            "terminated": bool(snap.terminated),
            "truncated": bool(snap.truncated),
            "hz": self.spec.hz,
        }
        return Observation(state=snap.state.copy(), images=images, timestamp=snap.mono_time, info=info)

    def frame(self, name: str) -> Frame:
        """Camera ``name``'s newest frame (what ``read`` hands out with the state)."""
        return self.read().images[name]

    def stop(self) -> None:
        """Stop the env process (real time) and close the env in this process (lockstep); the last
        state stays readable, and ``home`` starts a new episode. Idempotent."""
        self._stop_process()
        if self._local is not None:
            self._local.close()
            self._local = None

    close = stop

    def __enter__(self) -> GymRobot:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class NotBoxAction(ValueError):
    """The env's action space is not a Box (discrete, multi-discrete, ...)."""


class EnvFacts:
    """What a robot needs to know of an env before driving it (read once per config per process)."""

    def __init__(self, config: EnvConfig) -> None:
        from gymnasium import spaces

        env = make_env(config.env_id, config.env_kwargs)
        try:
            space = env.action_space
            if not isinstance(space, spaces.Box):
                raise NotBoxAction(
                    f"{config.env_id}'s action space is {space}; robot=gym drives continuous (Box) actions only"
                )
            self.lower = np.asarray(space.low, dtype=np.float64).reshape(-1)
            self.upper = np.asarray(space.high, dtype=np.float64).reshape(-1)
            self.action_dim = int(self.lower.size)
            self.layout = state_layout(env.observation_space, config.state_keys)
            self.state_dim = self.layout.state_dim
            self.leaves = {leaf.path: leaf for leaf in leaves(env.observation_space)}
            self.dt = control_dt(env)
            self.hz = 1.0 / self.dt
            self.reward_threshold = getattr(env.spec, "reward_threshold", None) if env.spec else None
            self.render_modes = tuple(env.metadata.get("render_modes", ()))
        finally:
            env.close()

    def success_threshold(self, success_return: float | None) -> float | None:
        return success_return if success_return is not None else self.reward_threshold

    def home_action(self, given: Any) -> np.ndarray:
        """``given`` checked against the action space, or zero clipped into the bounds."""
        if given is None:
            return np.clip(np.zeros(self.action_dim), self.lower, self.upper)
        home = np.asarray(list(given), dtype=np.float64)
        if home.shape != (self.action_dim,) or not np.all(np.isfinite(home)):
            raise ValueError(f"needs {self.action_dim} finite numbers, got {list(given)}")
        if np.any(home < self.lower) or np.any(home > self.upper):
            raise ValueError(
                f"{home.tolist()} is outside the action bounds [{self.lower.tolist()}, {self.upper.tolist()}]"
            )
        return home

    def camera_problem(self, config: EnvConfig, source: str) -> str | None:
        """Why a camera with ``source`` cannot be had from this env (None: it can)."""
        if source != "render":
            leaf = self.leaves.get(source)
            if leaf is None or not leaf.is_image:
                images = [p for p, leaf in self.leaves.items() if leaf.is_image]
                return (
                    f"{source!r} is not an image in {config.env_id}'s observation (images: {images or 'none'}; "
                    "or source=render for env.render())"
                )
            return None
        if "rgb_array" not in self.render_modes:
            return f"{config.env_id} cannot render rgb_array frames (render modes: {list(self.render_modes)})"
        return _render_problem(config.env_id, json.dumps(dict(config.env_kwargs), sort_keys=True))


@functools.lru_cache(maxsize=32)
def _render_problem(env_id: str, kwargs_json: str) -> str | None:
    """Render one frame of a fresh env; why it failed, or None."""
    env = None
    try:
        env = make_env(env_id, json.loads(kwargs_json), "rgb_array")
        env.reset(seed=0)
        image = env.render()
        shape = np.shape(image)
        if len(shape) != 3 or shape[-1] != 3:
            return f"{env_id}.render() gave {type(image).__name__} of shape {shape}, not an (H, W, 3) image"
        return None
    except Exception as exc:  # noqa: BLE001 - no GL, no display, ...: the reason is the message
        return f"{env_id} cannot render here: {type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
    finally:
        if env is not None:
            env.close()


_FACTS: dict[Any, EnvFacts] = {}


def env_facts(config: EnvConfig) -> EnvFacts:
    key = (config.env_id, json.dumps(dict(config.env_kwargs), sort_keys=True, default=repr), config.state_keys)
    if key not in _FACTS:
        _FACTS[key] = EnvFacts(config)
    return _FACTS[key]


def _same_rate(hz: float, env_hz: float) -> bool:
    return math.isclose(hz, env_hz, rel_tol=RATE_TOLERANCE)
