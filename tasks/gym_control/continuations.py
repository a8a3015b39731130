"""Exact continuation labels for training-time RTC on the gym control tasks.

At inference under a delay ``d``, a new chunk's first ``d`` actions are already committed: the
previous chunk's, planned a few ticks earlier from a state the action noise has since moved away
from. What the policy should plan after them is what the expert would do from the state those
actions lead to. The demonstrations' own labels never show that (the expert always continued its
own plan), and a blend back onto the plain label (the stale-prefix recipe) is only a guess; here the
expert answers it exactly (``SwingUpExpert.chunk_after``, its plan rolled through the task's
dynamics after the committed actions).

For each sample at tick ``t`` and each prefix length ``d`` in ``1..max_prefix``, the committed
actions come from the expert's chunk planned ``k`` ticks earlier in the same episode (``k`` drawn
uniformly in ``1..max_stale_ticks``, with ``k + d <= H``): that chunk's actions for ticks
``t..t+d-1``, what a previous chunk holds when the next one is planned.
"""

from __future__ import annotations

import logging
import time

import numpy as np

from tasks.gym_control.experts import KickPhase, episode_direction, make_expert
from tasks.transfer_cube.demos import Demos

logger = logging.getLogger(__name__)


def continuation_labels(
    demos: Demos, task_name: str, max_prefix: int, seed_offset: int, max_stale_ticks: int = 4, seed: int = 0
) -> np.ndarray:
    """(N, max_prefix + 1, H, A) float32: entry 0 the sample's own label, entry ``d`` the exact chunk
    after ``d`` committed actions from an earlier chunk (the own label where no earlier chunk exists:
    the episode's first tick)."""
    actions = np.asarray(demos.actions, np.float32)
    n, h, a = actions.shape
    if not 1 <= max_prefix < h:
        raise ValueError(f"max_prefix={max_prefix} must be in [1, H - 1 = {h - 1}]")
    if demos.step is None:
        raise ValueError("continuation labels need each sample's tick (Demos.step)")
    steps = np.asarray(demos.step, np.int64)
    episode = np.asarray(demos.episode, np.int64)
    rng = np.random.default_rng(seed)
    expert = make_expert(task_name, h)
    out = np.repeat(actions[:, None], max_prefix + 1, axis=1)
    t0 = time.monotonic()
    for i in range(n):
        t = int(steps[i])
        expert.direction = episode_direction(seed_offset + int(episode[i]))
        for d in range(1, max_prefix + 1):
            k_max = min(max_stale_ticks, h - d, t)
            if k_max < 1 or i - k_max < 0:
                continue
            k = int(rng.integers(1, k_max + 1))
            if episode[i - k] != episode[i] or steps[i - k] != t - k:
                continue  # samples are every tick of an episode, in order; anything else keeps the own label
            expert.phase = KickPhase(min(t, expert.kick_max_ticks), t >= expert.kick_max_ticks)
            out[i, d] = expert.chunk_after(demos.states[i], actions[i - k, k : k + d])
    logger.info("continuation labels: %d samples x %d prefix lengths in %.0f s", n, max_prefix, time.monotonic() - t0)
    return out
