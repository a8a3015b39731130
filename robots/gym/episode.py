"""One Gymnasium environment driven as a robot: reset, noisy step, success, hold after the end.

Used as is by the lockstep robot (in the control process) and by the real-time device process
(``robots/gym/process.py``), so both clock modes step, score and render the same way.

Per ``step(command)``: Gaussian noise (``action_noise_std``, action units, from a generator seeded
by the episode seed) is added to the command, the sum is clipped to the action bounds, and the env
steps once. Once the env has terminated or truncated, ``step`` no longer steps it (a finished env
must be reset before stepping again): the final state holds and says so.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from robots.gym.layout import StateLayout, lookup, state_layout, to_chw
from robots.gym.suites import control_dt, make_env

SuccessMode = Literal["auto", "is_success", "return", "termination"]


@dataclass(frozen=True)
class CameraSource:
    """A camera of the gym robot: ``source`` is ``render`` (``env.render()``) or the path of an image
    in the observation (``pixels``, ``pixels/top``); frames are (3, ``height``, ``width``) uint8."""

    name: str
    source: str
    width: int
    height: int


@dataclass(frozen=True)
class EnvConfig:
    """Everything needed to build the same environment in any process (it pickles)."""

    env_id: str
    env_kwargs: Mapping[str, Any] = field(default_factory=dict)
    state_keys: tuple[str, ...] | None = None
    action_noise_std: float = 0.0
    success: SuccessMode = "auto"
    success_return: float | None = None
    cameras: tuple[CameraSource, ...] = ()

    @property
    def render_mode(self) -> str | None:
        return "rgb_array" if any(c.source == "render" for c in self.cameras) else None


def success_now(
    mode: SuccessMode,
    info: Mapping[str, Any],
    terminated: bool,
    truncated: bool,
    episode_return: float,
    threshold: float | None,
) -> bool:
    """Whether the episode has succeeded after this step (pure).

    ``is_success``: the env's ``info["is_success"]``. ``return``: the episode ended (terminated or
    truncated) with its return at or above ``threshold`` (judged at the end, since rewards may be
    negative and a running return would cross a threshold early). ``termination``: the env
    terminated (reached its goal), not truncated by a time limit. ``auto``: ``is_success`` when the
    env reports it, else ``return`` when a threshold is known, else ``termination``.
    """
    if mode == "auto":
        if "is_success" in info:
            mode = "is_success"
        elif threshold is not None:
            mode = "return"
        else:
            mode = "termination"
    if mode == "is_success":
        return bool(info.get("is_success", False))
    if mode == "return":
        return (terminated or truncated) and threshold is not None and episode_return >= threshold
    return bool(terminated) and not truncated


@dataclass
class GymSnapshot:
    """The env's state after a reset or a step, with the time it stands for."""

    seq: int
    state: np.ndarray  # float32 (state_dim,)
    reward: float  # the last step's reward (0 after a reset)
    episode_return: float
    step: int  # env steps taken this episode
    episode: int
    terminated: bool
    truncated: bool
    success: bool
    mono_time: float
    images: dict[str, np.ndarray] = field(default_factory=dict)  # camera name -> (3, H, W) uint8

    @property
    def finished(self) -> bool:
        return self.terminated or self.truncated


class GymEpisode:
    """The environment, its noise generator and the episode's bookkeeping."""

    def __init__(self, config: EnvConfig) -> None:
        self.config = config
        self.env = make_env(config.env_id, config.env_kwargs, config.render_mode)
        space = self.env.action_space
        self.action_shape = tuple(int(n) for n in space.shape)
        self.lower = np.asarray(space.low, dtype=np.float64).reshape(-1)
        self.upper = np.asarray(space.high, dtype=np.float64).reshape(-1)
        self.action_dtype = space.dtype
        self.layout: StateLayout = state_layout(self.env.observation_space, config.state_keys)
        self.dt = control_dt(self.env)
        spec_threshold = getattr(self.env.spec, "reward_threshold", None) if self.env.spec else None
        self.success_threshold = config.success_return if config.success_return is not None else spec_threshold
        self._rng = np.random.default_rng(0)
        self._seq = 0
        self._episode = -1
        self._obs: Any = None
        self.snapshot: GymSnapshot | None = None

    def reset(self, seed: int | None, mono_time: float | None = None) -> GymSnapshot:
        """New episode: ``env.reset(seed=seed)``; the noise generator re-seeded from the same seed.
        The state stands for ``mono_time`` (None: the time the reset, and its rendering, finished)."""
        self._obs, _ = self.env.reset(seed=seed)
        self._rng = np.random.default_rng(seed)
        self._episode += 1
        return self._publish(0.0, 0.0, 0, False, False, False, mono_time)

    def noisy(self, command: np.ndarray) -> np.ndarray:
        """``command`` plus this episode's next noise draw, clipped to the action bounds."""
        action = np.asarray(command, dtype=np.float64).reshape(-1)
        std = self.config.action_noise_std
        if std > 0:
            action = action + self._rng.normal(0.0, std, size=action.shape)
        return np.clip(action, self.lower, self.upper)

    def step(self, command: np.ndarray, mono_time: float) -> GymSnapshot:
        """One env step with ``command`` (noised, clipped); after the episode ended, the final state
        again with the new time."""
        snap = self.snapshot
        assert snap is not None, "reset() first"
        if snap.finished:
            return self._republish(mono_time)
        action = self.noisy(command).reshape(self.action_shape).astype(self.action_dtype)
        self._obs, reward, terminated, truncated, info = self.env.step(action)
        ret = snap.episode_return + float(reward)
        success = snap.success or success_now(
            self.config.success, info, bool(terminated), bool(truncated), ret, self.success_threshold
        )
        return self._publish(float(reward), ret, snap.step + 1, bool(terminated), bool(truncated), success, mono_time)

    def _publish(
        self,
        reward: float,
        ret: float,
        step: int,
        terminated: bool,
        truncated: bool,
        success: bool,
        mono_time: float | None,
    ) -> GymSnapshot:
        self._seq += 1
        images = self.render() if self.config.cameras else {}
        self.snapshot = GymSnapshot(
            seq=self._seq,
            state=self.layout.flatten(self._obs),
            reward=reward,
            episode_return=ret,
            step=step,
            episode=self._episode,
            terminated=terminated,
            truncated=truncated,
            success=success,
            mono_time=time.monotonic() if mono_time is None else mono_time,
            images=images,
        )
        return self.snapshot

    def _republish(self, mono_time: float) -> GymSnapshot:
        snap = self.snapshot
        self._seq += 1
        self.snapshot = GymSnapshot(
            seq=self._seq,
            state=snap.state,
            reward=0.0,
            episode_return=snap.episode_return,
            step=snap.step,
            episode=snap.episode,
            terminated=snap.terminated,
            truncated=snap.truncated,
            success=snap.success,
            mono_time=mono_time,
            images=snap.images,
        )
        return self.snapshot

    def render(self) -> dict[str, np.ndarray]:
        """Every camera's frame of the current state (``env.render()`` once, however many use it)."""
        frames: dict[str, np.ndarray] = {}
        rendered = None
        for cam in self.config.cameras:
            if cam.source == "render":
                if rendered is None:
                    rendered = self.env.render()
                image = rendered
            else:
                image = lookup(self._obs, cam.source)
            frames[cam.name] = to_chw(image, cam.width, cam.height)
        return frames

    def close(self) -> None:
        try:
            self.env.close()
        except Exception:  # noqa: BLE001 - closing a half-built env's viewer may fail; nothing to keep
            pass


def plain(value: Any) -> Any:
    """A config value (possibly an OmegaConf container) as plain dicts and lists."""
    if isinstance(value, Mapping):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        return [plain(v) for v in value]
    return value
