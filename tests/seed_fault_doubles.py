"""A sim robot and a policy whose faults are tied to an episode's seed, for the lockstep tests that
run a cell's episodes side by side (tests/algorithms/test_lockstep_parallel.py): which worker runs an
episode, and in which order the policy is called, must not change which episode faults.

Referenced from configs by ``_target_``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from robots.sim import SimRobot


class SeedTaggedSimRobot(SimRobot):
    """The sim robot, its observations tagged with the episode seed (``info["episode_seed"]``); from
    read ``nan_state_at`` of an episode whose seed is in ``nan_state_seeds`` the state holds a NaN
    (a broken encoder in that episode only)."""

    def __init__(self, *, nan_state_seeds: list[int] = (), nan_state_at: int = 3, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.nan_state_seeds = {int(s) for s in nan_state_seeds}
        self.nan_state_at = int(nan_state_at)
        self.seed_now: int | None = None
        self.reads = 0

    def home(self, seed: int | None = None) -> None:
        self.seed_now, self.reads = seed, 0
        super().home(seed=seed)

    def read(self):
        self.reads += 1
        obs = super().read()
        obs.info = {**obs.info, "episode_seed": self.seed_now}
        if self.seed_now in self.nan_state_seeds and self.reads >= self.nan_state_at:
            obs.state = np.array(obs.state, copy=True)
            obs.state[2] = np.nan
        return obs


class SeedFaultPolicy:
    """Moves every joint ``step_rad`` per chunk index from the measured pose (a chunk depends only on
    the observation); in an episode whose seed is in ``nan_seeds`` every chunk holds a NaN, so it is
    rejected and the episode ends in a ``chunks_rejected`` fault; in one whose seed is in
    ``raise_seeds`` every call raises (an ``inference_error``). ``hold_action``: the hold policy's
    config key, accepted and unused (the tests compose from ``policy=hold``)."""

    def __init__(
        self,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: Any = (),
        nan_seeds: list[int] = (),
        raise_seeds: list[int] = (),
        step_rad: float = 0.01,
        hold_action: Any = None,
    ) -> None:
        self.metadata = PolicyMetadata(
            chunk_size=chunk_size, action_dim=action_dim, state_dim=state_dim, camera_names=tuple(camera_names)
        )
        self.nan_seeds = {int(s) for s in nan_seeds}
        self.raise_seeds = {int(s) for s in raise_seeds}
        self.step_rad = float(step_rad)

    def predict(self, obs: PolicyInput) -> np.ndarray:
        seed = obs.info.get("episode_seed")
        if seed in self.raise_seeds:
            raise RuntimeError(f"SeedFaultPolicy raised in the episode of seed {seed}")
        current = np.asarray(obs.state[-1][: self.metadata.action_dim], dtype=np.float32)
        steps = self.step_rad * np.arange(1, self.metadata.chunk_size + 1, dtype=np.float32)[:, None]
        chunk = current[None] + steps * np.ones_like(current)[None]
        if obs.info.get("episode_seed") in self.nan_seeds:
            chunk[self.metadata.chunk_size // 2, 0] = np.nan
        return chunk

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        return self.predict(obs)

    def warmup(self) -> None:
        pass

    def freeze(self) -> None:
        pass
