"""Gymnasium environments of our own, registered when this module is imported.

``robot.env_id=tasks.gym_control.envs:GymControl/PendulumReach-v1`` (Gymnasium's ``module:id`` form)
makes them; that is also how a user's own environment plugs into ``robot=gym``.

``PendulumReach-v1``: Gymnasium's ``Pendulum-v1`` (same dynamics, observation, torque limit and
reward) whose episode ends in success the first time the pendulum arrives at the top slowly
(within ``reach_angle_rad`` of upright and under ``reach_speed_rad_s``), instead of being judged on
its return at the end. It is a reach task, as the RTC paper's Kinetix levels are (an episode
succeeds when an object touches its goal), rather than a balance task: holding an unstable
equilibrium needs fresh feedback every tick, which no way of joining chunks can give back under an
inference delay, while arriving at a goal can be done on plans that are a few ticks old.
"""

from __future__ import annotations

from typing import Any

import gymnasium
import numpy as np

ENV_ID = "GymControl/PendulumReach-v1"


class PendulumReach(gymnasium.Wrapper):
    """``Pendulum-v1`` that terminates with ``info["is_success"] = True`` on reaching the top slowly;
    ``info["is_success"]`` is False on every other step (so ``robot.success=auto`` reads it)."""

    def __init__(self, reach_angle_rad: float = 0.3, reach_speed_rad_s: float = 2.0, **pendulum_kwargs: Any) -> None:
        if not 0.0 < reach_angle_rad < np.pi:
            raise ValueError(f"reach_angle_rad={reach_angle_rad} must be in (0, pi)")
        if reach_speed_rad_s <= 0.0:
            raise ValueError(f"reach_speed_rad_s={reach_speed_rad_s} must be > 0")
        super().__init__(gymnasium.make("Pendulum-v1", **pendulum_kwargs).unwrapped)
        self.reach_cos = float(np.cos(reach_angle_rad))
        self.reach_speed_rad_s = float(reach_speed_rad_s)

    def reached(self, obs: np.ndarray) -> bool:
        cos_th, _sin_th, th_dot = (float(v) for v in obs)
        return cos_th >= self.reach_cos and abs(th_dot) < self.reach_speed_rad_s

    def reset(self, **kwargs: Any):
        """Start hanging down, nearly at rest (a swing-up from below every episode, where
        ``Pendulum-v1`` starts anywhere): angle pi +- 0.1 rad, speed +- 0.1 rad/s, from the env's
        seeded generator."""
        _obs, info = self.env.reset(**kwargs)
        pendulum = self.env.unwrapped
        pendulum.state = np.array([np.pi, 0.0]) + pendulum.np_random.uniform(-0.1, 0.1, size=2)
        return pendulum._get_obs(), {**info, "is_success": False}

    def step(self, action: Any):
        obs, reward, terminated, truncated, info = self.env.step(action)
        success = self.reached(obs)
        return obs, reward, bool(terminated or success), truncated, {**info, "is_success": success}


if ENV_ID not in gymnasium.registry:
    gymnasium.register(id=ENV_ID, entry_point=PendulumReach, max_episode_steps=200)
