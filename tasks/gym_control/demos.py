"""Demonstrations from a gym control task's expert, in the flow trainer's format.

Per tick the sample is the state the policy will see and the label is the expert's clean planned
chunk from it (``SwingUpExpert.chunk``); the executed action is the chunk's first action plus the
task's Gaussian action noise, so the states drift off the nominal path and the data shows how to
come back. Episode ``e`` runs with seed ``seed_offset + e`` (disjoint from the evaluation seeds
0..N-1). Every episode is kept (a failed one is counted, and none failed in the recorded sets).
"""

from __future__ import annotations

import logging
import time

import numpy as np

from tasks.gym_control.experts import make_expert
from tasks.gym_control.rollout import run_episode
from tasks.gym_control.tasks import get_task, make_env
from tasks.transfer_cube.demos import Demos

logger = logging.getLogger(__name__)


def record_demos(
    task_name: str, episodes: int, seed_offset: int = 10_000, chunk_size: int = 8, noise_std: float | None = None
) -> Demos:
    """Record ``episodes`` expert episodes; a state-only ``Demos`` (no cameras, empty images)."""
    task = get_task(task_name)
    expert = make_expert(task_name, chunk_size)
    env = make_env(task)
    states, actions, ep_idx, steps = [], [], [], []
    successes, t0 = 0, time.monotonic()
    try:
        for e in range(episodes):
            seed = seed_offset + e
            expert.reset(seed)
            ep = run_episode(task, expert.chunk, seed, env=env, noise_std=noise_std, keep=True)
            successes += ep.success
            states += ep.states
            actions += ep.chunks
            steps += ep.steps
            ep_idx += [e] * len(ep.states)
            logger.info(
                "demo %d/%d seed %d: return %.1f %s (%.0f s)",
                e + 1,
                episodes,
                seed,
                ep.episode_return,
                "success" if ep.success else "FAILED",
                time.monotonic() - t0,
            )
    finally:
        env.close()
    n = len(states)
    return Demos(
        states=np.stack(states).astype(np.float32),
        images=np.zeros((n, 0, 3, 0, 0), np.uint8),
        actions=np.stack(actions).astype(np.float32),
        episode=np.asarray(ep_idx, np.int32),
        camera_names=(),
        successes=successes,
        attempts=episodes,
        step=np.asarray(steps, np.int32),
    )
