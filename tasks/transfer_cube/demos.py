"""Demonstrations for the flow policy: the scripted expert driving the lockstep sim.

Per recorded tick the sample is exactly what the policy will see at run time — the 14-dim state
after the tick, the three camera images (uint8, CHW, 96x128) — and the label is the expert's chunk
for that tick (``plan[step : step + H]``, robot units). The executed command is the expert's first
action plus temporally correlated (Ornstein-Uhlenbeck) noise on the arm joints, so the arms drift
off the nominal path and the data shows how to come back (the labels stay the clean plan).
Failed episodes (the noise can spoil a grasp) are dropped unless ``keep_failed``.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from policies.base import PolicyInput

logger = logging.getLogger(__name__)

DEFAULT_CAMERAS: dict[str, str] = {"head": "top", "left": "left_wrist", "right": "right_wrist"}


@dataclass
class Demos:
    """Recorded samples. states (N, 14) float32; images (N, cams, 3, H, W) uint8;
    actions (N, chunk, 14) float32 robot units; episode (N,) int32 episode index; cube_xy (N, 2)
    float32 the cube's position (m, world x/y) at each sample (None in caches recorded before it);
    step (N,) int32 the control tick of each sample within its episode (None in older caches:
    :func:`sample_steps` rebuilds it)."""

    states: np.ndarray
    images: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    camera_names: tuple[str, ...]
    successes: int
    attempts: int
    cube_xy: np.ndarray | None = None
    step: np.ndarray | None = None

    def save(self, path: str | Path) -> None:
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez(
            path,
            states=self.states,
            images=self.images,
            actions=self.actions,
            episode=self.episode,
            camera_names=np.array(self.camera_names),
            counts=np.array([self.successes, self.attempts]),
            **({} if self.cube_xy is None else {"cube_xy": self.cube_xy}),
            **({} if self.step is None else {"step": self.step}),
        )

    @classmethod
    def load(cls, path: str | Path) -> Demos:
        with np.load(path) as z:
            return cls(
                states=z["states"],
                images=z["images"],
                actions=z["actions"],
                episode=z["episode"],
                camera_names=tuple(str(c) for c in z["camera_names"]),
                successes=int(z["counts"][0]),
                attempts=int(z["counts"][1]),
                cube_xy=z["cube_xy"] if "cube_xy" in z.files else None,
                step=z["step"] if "step" in z.files else None,
            )


def make_sim_robot(
    hz: float = 20.0,
    width: int = 128,
    height: int = 96,
    cameras: dict[str, str] | None = None,
    render: bool = True,
    task: str = "transfer_cube",
):
    """A lockstep SimRobot of ``task`` with the run-time camera set (name -> MuJoCo camera)."""
    from robots.cameras.base import FrameSpec
    from robots.sim import SimCamera, SimRobot

    cams = cameras or DEFAULT_CAMERAS
    factories = (
        {
            name: functools.partial(SimCamera, frames=FrameSpec(name, width, height, 1.0), source=source)
            for name, source in cams.items()
        }
        if render
        else {}
    )
    return SimRobot(cameras=factories, hz=hz, realtime=False, render_in_lockstep=False, seed=0, task=task)


def record_demos(
    episodes: int,
    seed_offset: int = 10_000,
    chunk_size: int = 50,
    max_steps: int = 200,
    sample_every: int = 2,
    action_noise_std: float = 0.02,
    noise_corr_ticks: float = 10.0,
    ticks_after_success: int = 10,
    keep_failed: bool = False,
    hz: float = 20.0,
    width: int = 128,
    height: int = 96,
    cameras: dict[str, str] | None = None,
    task: str = "transfer_cube",
    expert: dict | None = None,
    reaction_lag_max_ticks: int = 0,
) -> Demos:
    """Record ``episodes`` expert episodes (seeds ``seed_offset + e``, disjoint from evaluation).

    ``action_noise_std`` is the stationary std (rad) of the OU noise on arm joints;
    ``noise_corr_ticks`` its correlation time in ticks. Images are rendered only on recorded
    ticks (every ``sample_every``-th, random phase per episode) since rendering dominates the cost.
    ``task`` the sim task (``robot.task``); ``expert`` keyword arguments of the scripted expert
    (e.g. its ``approach_offsets_m`` strategies). ``reaction_lag_max_ticks`` > 0 (a task with a
    cube shift): the executed commands keep following the pre-shift plan for 0..N ticks after the
    shift (drawn per episode), while the labels are the replanned chunk from the shift on, so the
    data shows how to recover from reacting late, as a policy acting on a delayed chunk does.
    """
    from tasks.transfer_cube.expert import ScriptedTransferCube

    cams = cameras or DEFAULT_CAMERAS
    robot = make_sim_robot(hz, width, height, cams, task=task)
    expert_policy = ScriptedTransferCube(chunk_size=chunk_size, hz=hz, **(expert or {}))
    names = tuple(cams)
    states, images, actions, ep_idx, cube_xy, steps = [], [], [], [], [], []
    successes = 0
    t0 = time.monotonic()
    arm = np.ones(14, bool)
    arm[[6, 13]] = False
    theta = 1.0 / max(noise_corr_ticks, 1.0)
    try:
        for e in range(episodes):
            seed = seed_offset + e
            rng = np.random.default_rng(seed)
            robot.home(seed)
            ep_states, ep_images, ep_actions, ep_cube, ep_steps = [], [], [], [], []
            noise = np.zeros(14)
            phase = int(rng.integers(sample_every))
            lag = int(rng.integers(reaction_lag_max_ticks + 1)) if reaction_lag_max_ticks > 0 else 0
            success_at = None
            obs = robot.read()
            for t in range(max_steps):
                chunk = expert_policy.predict(PolicyInput(state=obs.state[None], info=obs.info))
                if t % sample_every == phase:
                    snap = robot.latest_snapshot()
                    ep_states.append(obs.state.astype(np.float32))
                    ep_images.append(np.stack([robot.cameras[n].render_snapshot(snap).image for n in names]))
                    ep_actions.append(chunk.astype(np.float32))
                    ep_cube.append(np.asarray(obs.info["cube_pose"][:2], np.float32))
                    ep_steps.append(int(obs.info["step"]))
                executed = chunk
                shift_tick = int(obs.info.get("shift_tick", -1))
                if lag and 0 <= shift_tick <= obs.info["step"] < shift_tick + lag:
                    unaware = dict(obs.info, shift_tick=-1)  # still acting on the pre-shift plan
                    executed = expert_policy.predict(PolicyInput(state=obs.state[None], info=unaware))
                noise = noise + theta * (-noise) + action_noise_std * np.sqrt(2 * theta) * rng.normal(size=14)
                cmd = executed[0] + np.where(arm, noise, 0.0)
                cmd = np.clip(cmd, robot.spec.lower, robot.spec.upper)
                robot.send(cmd)
                obs = robot.read()
                if obs.info["success"] and success_at is None:
                    success_at = t
                if success_at is not None and t - success_at >= ticks_after_success:
                    break
            ok = success_at is not None
            successes += ok
            if ok or keep_failed:
                states += ep_states
                images += ep_images
                actions += ep_actions
                cube_xy += ep_cube
                steps += ep_steps
                ep_idx += [e] * len(ep_states)
            logger.info(
                "demo %d/%d seed %d: %s, %d samples (%.0f s)",
                e + 1,
                episodes,
                seed,
                "success" if ok else "FAILED",
                len(ep_states),
                time.monotonic() - t0,
            )
    finally:
        robot.stop()
    if not states:
        raise RuntimeError("no successful demonstrations were recorded")
    return Demos(
        states=np.stack(states),
        images=np.stack(images),
        actions=np.stack(actions),
        episode=np.asarray(ep_idx, np.int32),
        camera_names=names,
        successes=successes,
        attempts=episodes,
        cube_xy=np.stack(cube_xy),
        step=np.asarray(steps, np.int32),
    )


def sample_steps(demos: Demos, sample_every: int) -> np.ndarray:
    """Each sample's control tick within its episode, (N,) int. Caches without ``Demos.step`` were
    recorded one tick in ``sample_every`` from a per-episode phase until the episode ended, so
    consecutive samples of an episode are ``sample_every`` ticks apart (the phase is unknown and
    taken as 0: only differences within an episode are used)."""
    if demos.step is not None:
        return np.asarray(demos.step, np.int64)
    episode = np.asarray(demos.episode)
    starts = np.r_[0, np.flatnonzero(np.diff(episode)) + 1]
    first = np.repeat(starts, np.diff(np.r_[starts, len(episode)]))
    return (np.arange(len(episode)) - first) * int(sample_every)


def earlier_counts(episode: np.ndarray, steps: np.ndarray, max_ticks: int) -> np.ndarray:
    """For each sample, how many samples just before it (same episode, recorded in order) lie
    1..``max_ticks`` ticks earlier: the chunks whose continuation a stale prefix can come from."""
    episode, steps = np.asarray(episode), np.asarray(steps, np.int64)
    n = len(episode)
    counts = np.zeros(n, np.int64)
    for k in range(1, max(0, int(max_ticks)) + 1):  # sample i - k is earlier in the same episode?
        if k >= n:
            break
        same = episode[k:] == episode[:-k]
        gap = steps[k:] - steps[:-k]
        ok = same & (gap >= 1) & (gap <= max_ticks) & (counts[k:] == k - 1)
        counts[k:] += ok
    return counts


def stale_prefixes(
    actions: np.ndarray, steps: np.ndarray, counts: np.ndarray, idx: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Prefix sources for the samples ``idx``: each one's chunk continued from an earlier sample of
    its episode, drawn uniformly among its ``counts`` candidates (1..``max_ticks`` ticks back): that
    chunk's actions from the current tick on, padded with its last action, (B, H, A). It is what
    a previous chunk still holds when the new one is planned; after the world changed (the shift
    task's jump) it is the stale pre-change plan. A sample with no earlier one gets its own chunk."""
    actions = np.asarray(actions)
    h = actions.shape[1]
    idx = np.asarray(idx, np.int64)
    out = actions[idx].copy()
    for b, i in enumerate(idx):
        if counts[i] <= 0:
            continue
        src = i - int(rng.integers(1, counts[i] + 1))
        j = int(steps[i] - steps[src])
        rows = np.minimum(np.arange(j, j + h), h - 1)
        out[b] = actions[src][rows]
    return out


def demo_summary(demos: Demos) -> str:
    return (
        f"{len(demos.states)} samples from {len(np.unique(demos.episode))} episodes "
        f"({demos.successes}/{demos.attempts} expert successes), cameras {list(demos.camera_names)}"
    )


__all__: Sequence[str] = (
    "Demos",
    "record_demos",
    "make_sim_robot",
    "demo_summary",
    "DEFAULT_CAMERAS",
    "sample_steps",
    "earlier_counts",
    "stale_prefixes",
)
