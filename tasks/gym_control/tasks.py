"""The Gymnasium tasks the experts solve: env id, kwargs, control rate, action noise, success.

The state a policy sees is the observation flattened to float32 the way ``robot=gym`` does it: a
Box observation raveled; a Dict observation's values raveled and concatenated in the space's key
order. Success is a return threshold (neither env reports success); each threshold sits between
what the expert scores at its worst and what an episode that never balances scores (the numbers are
in ``benchmarks/results/gym_control_policies.md``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class GymTask:
    """One task. ``action_noise_std`` (action units) is 10% of the action range: the Gaussian noise
    added to every executed action when recording demonstrations and when evaluating (as the RTC
    paper does), so a policy must correct in closed loop. ``success_return``: an episode whose
    return reaches it is a success."""

    name: str
    env_id: str
    hz: float
    success_return: float
    action_noise_std: float
    env_kwargs: dict[str, Any] = field(default_factory=dict)


TASKS: dict[str, GymTask] = {
    # Torque-limited pendulum (|u| <= 2 N m cannot lift it from below: it must pump), 200 ticks at 20 Hz.
    # Return >= -500: up and balanced at the end (the expert's worst over seeds 0..99: -401 with the noise;
    # episodes that never balance score below -1000).
    "pendulum": GymTask("pendulum", "Pendulum-v1", 20.0, success_return=-500.0, action_noise_std=0.4),
    # dm_control cart-pole swing-up through shimmy at a 20 Hz control rate (0.05 s control timestep,
    # 5 physics steps of 0.01 s), 10 s = 200 ticks; per-tick reward in [0, 1]. Return >= 120: the pole is
    # up and centred for well over half the episode (the expert's worst over seeds 0..99: 167; the learned
    # policies' failed episodes score as low as 26-40).
    "cartpole_swingup": GymTask(
        "cartpole_swingup",
        "dm_control/cartpole-swingup-v0",
        20.0,
        success_return=120.0,
        action_noise_std=0.2,
        env_kwargs={"environment_kwargs": {"control_timestep": 0.05}},
    ),
}


def get_task(name: str) -> GymTask:
    if name not in TASKS:
        raise ValueError(f"unknown gym control task {name!r}; known: {sorted(TASKS)}")
    return TASKS[name]


def make_env(task: GymTask):
    """The task's Gymnasium env, made as ``robot=gym`` makes it (its suite registered first)."""
    from robots.gym.suites import make_env as make_suite_env

    return make_suite_env(task.env_id, task.env_kwargs)


def flatten_observation(obs: Any, space: Any) -> np.ndarray:
    """The policy's state: a Box observation raveled, or a Dict observation's values raveled and
    concatenated in ``space``'s key order (the Dict observation space), as float32."""
    if isinstance(obs, dict):
        return np.concatenate([np.asarray(obs[k], np.float64).ravel() for k in space.spaces]).astype(np.float32)
    return np.asarray(obs, np.float32).ravel()
