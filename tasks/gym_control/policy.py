"""The gym control experts as an engine policy: ``policy=gym_expert policy.task=pendulum`` with
``robot=gym`` (the task's env id), e.g. as the upper bound in a lockstep study.

Robot space is model space (identity normalizer). It reads the state and two counters the gym robot
reports with it (``info["episode"]``, ``info["step"]``): a new episode re-draws the kick direction
(from the episode number and ``seed``) and the kick lasts the episode's first ticks, whatever the
chunk execution. Its plan continues itself (a chunk planned one tick later is the previous one shifted,
without noise); with a consistency guidance it keeps the committed actions and plans the rest from
where they lead (``guided_inference``), the perfect-model ceiling of inpainting.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from services.errors import ConfigError
from tasks.gym_control.experts import EXPERTS, episode_direction, make_expert


class GymExpertPolicy:
    """``task``: a key of ``tasks.gym_control.experts.EXPERTS``; ``seed`` offsets the per-episode
    direction draw."""

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check: the task has an expert."""
        task = str(node.get("task", "pendulum"))
        if task not in EXPERTS:
            raise ConfigError(f"{path}.task: no gym expert for {task!r}; expected one of {sorted(EXPERTS)}")

    def __init__(
        self,
        task: str = "pendulum",
        chunk_size: int = 8,
        action_dim: int = 1,
        state_dim: int | None = None,
        camera_names: Any = (),
        seed: int = 0,
        normalizer: Any = None,
    ) -> None:
        if task not in EXPERTS:
            raise ValueError(f"no gym expert for {task!r}; expected one of {sorted(EXPERTS)}")
        if action_dim != 1:
            raise ValueError(f"the gym experts command one actuator (action_dim 1, got {action_dim})")
        if camera_names:
            raise ValueError("the gym experts use no cameras; set camera_names: []")
        dims = {"pendulum": 3, "cartpole_swingup": 5}
        if state_dim is not None and state_dim != dims[task]:
            raise ValueError(f"gym expert {task}: state_dim {state_dim} != {dims[task]}")
        self.expert = make_expert(task, int(chunk_size))
        self.seed = int(seed)
        self._episode: Any = None
        self._last_step = -1
        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size),
            action_dim=1,
            state_dim=dims[task],
            camera_names=(),
            state_history=1,
            supports_vjp=False,
            needs_privileged=True,
        )

    def predict(self, obs: PolicyInput) -> np.ndarray:
        """The expert's planned chunk (H, 1), float32, action units."""
        return self.expert.chunk(self._observe(obs))

    def _observe(self, obs: PolicyInput) -> np.ndarray:
        """The episode bookkeeping (a new episode re-draws the kick direction; the kick's clock follows
        the robot's step counter) and the current state, for one planning call."""
        info = obs.info or {}
        step, episode = int(info.get("step", 0)), info.get("episode")
        if episode != self._episode or step < self._last_step:
            self.expert.reset(0)
            self.expert.direction = episode_direction(self.seed + int(episode or 0))
            self._episode = episode
        self._last_step = step
        self.expert.phase.ticks = min(step, self.expert.kick_max_ticks)
        return np.asarray(obs.state, np.float64).reshape(-1, self.metadata.state_dim)[-1]

    def guided_inference(
        self,
        obs: PolicyInput,
        prev_chunk: np.ndarray,
        delay: int = 0,
        execute_horizon: int = 1,
        guidance: Any = "none",
        schedule: Any = "exp",
        *args: Any,
        **kwargs: Any,
    ) -> np.ndarray:
        """``guidance=none``: the plan from the observed state (naive). Any consistency guidance: the
        committed actions (``prev_chunk[:delay]``, sent while this chunk is planned) kept exactly and
        the rest planned from the state they lead to through the exact dynamics (``chunk_after``):
        what inpainting with a perfect model gives, the ceiling of every consistency method."""
        if str(guidance) == "none" or prev_chunk is None or int(delay) <= 0:
            return self.predict(obs)
        committed = np.asarray(prev_chunk, np.float64).reshape(-1, 1)[: int(delay)]
        return self.expert.chunk_after(self._observe(obs), committed)

    def warmup(self) -> None:
        """Nothing to compile."""

    def freeze(self) -> None:
        """No parameters."""
