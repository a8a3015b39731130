"""Episodes of a gym control task with synchronous chunk execution (no inference delay).

Every ``execute_horizon`` ticks the chunk source is asked for chunks from the current states and the
first ``execute_horizon`` actions run open loop, each with the task's Gaussian action noise added
(drawn from a generator seeded by the episode seed, as ``robot=gym`` does) and clipped to the action
bounds. Several episodes run side by side, one env each, so a learned policy answers them with one
batched call per planning tick. The demonstrations and the quick closed-loop checks of the trained
policies both use it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from tasks.gym_control.tasks import GymTask, flatten_observation, make_env

# states (B, S) of the running episodes, their indices in the batch -> chunks (B, H, A), action units
BatchSource = Callable[[np.ndarray, np.ndarray], np.ndarray]
ChunkSource = Callable[[np.ndarray], np.ndarray]  # one state (S,) -> one chunk (H, A)


@dataclass
class Episode:
    """What an episode did: its return and success, and per planning tick the state and the chunk
    the source returned (its clean plan: the executed actions carry the noise)."""

    seed: int
    episode_return: float = 0.0
    success: bool = False
    ticks: int = 0
    states: list[np.ndarray] = field(default_factory=list)
    chunks: list[np.ndarray] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)


def run_episodes(
    task: GymTask,
    source: BatchSource,
    seeds: Sequence[int],
    *,
    envs: Sequence | None = None,
    noise_std: float | None = None,
    execute_horizon: int = 1,
    keep: bool = False,
) -> list[Episode]:
    """Run one episode per seed side by side (``env.reset(seed=seed)``); ``noise_std`` defaults to
    the task's. ``envs``: one env per seed to reuse (made and closed here when None). ``keep``:
    record each planning tick's state and chunk. A non-finite chunk is an error."""
    own = envs is None
    envs = [make_env(task) for _ in seeds] if own else list(envs)
    try:
        noise_std = task.action_noise_std if noise_std is None else float(noise_std)
        space = envs[0].action_space
        low, high = space.low.astype(np.float64), space.high.astype(np.float64)
        rngs = [np.random.default_rng(int(s)) for s in seeds]
        eps = [Episode(int(s)) for s in seeds]
        states = [flatten_observation(env.reset(seed=int(s))[0], env.observation_space) for env, s in zip(envs, seeds)]
        running = list(range(len(seeds)))
        t = 0
        while running:
            chunks = np.asarray(source(np.stack([states[i] for i in running]), np.asarray(running)), np.float64)
            if not np.all(np.isfinite(chunks)):
                raise ValueError(f"chunk source returned a non-finite chunk at tick {t}")
            for row, i in enumerate(running):
                if keep:
                    eps[i].states.append(states[i].copy())
                    eps[i].chunks.append(chunks[row].astype(np.float32))
                    eps[i].steps.append(t)
            ended = set()
            for row, i in enumerate(running):
                for action in chunks[row][: max(1, int(execute_horizon))]:
                    noisy = np.clip(action + noise_std * rngs[i].standard_normal(action.shape), low, high)
                    obs, reward, terminated, truncated, _ = envs[i].step(noisy.astype(space.dtype))
                    states[i] = flatten_observation(obs, envs[i].observation_space)
                    eps[i].episode_return += float(reward)
                    eps[i].ticks += 1
                    if terminated or truncated:
                        ended.add(i)
                        break
            t += max(1, int(execute_horizon))
            running = [i for i in running if i not in ended]
        for ep in eps:
            ep.success = ep.episode_return >= task.success_return
        return eps
    finally:
        if own:
            for env in envs:
                env.close()


def run_episode(
    task: GymTask,
    source: ChunkSource,
    seed: int,
    *,
    env=None,
    noise_std: float | None = None,
    execute_horizon: int = 1,
    keep: bool = False,
) -> Episode:
    """One episode with a one-state chunk source (an expert)."""
    return run_episodes(
        task,
        lambda states, _: source(states[0])[None],
        [seed],
        envs=None if env is None else [env],
        noise_std=noise_std,
        execute_horizon=execute_horizon,
        keep=keep,
    )[0]
