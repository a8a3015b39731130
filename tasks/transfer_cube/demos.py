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
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from policies.base import PolicyInput

logger = logging.getLogger(__name__)

DEFAULT_CAMERAS: dict[str, str] = {"head": "top", "left": "left_wrist", "right": "right_wrist"}


@dataclass
class Demos:
    """Recorded samples. states (N, 14) float32; images (N, cams, 3, H, W) uint8;
    actions (N, chunk, 14) float32 robot units; episode (N,) int32 episode index; cube_xy (N, 2)
    float32 the cube's position (m, world x/y) at each sample (None in caches recorded before it)."""

    states: np.ndarray
    images: np.ndarray
    actions: np.ndarray
    episode: np.ndarray
    camera_names: tuple[str, ...]
    successes: int
    attempts: int
    cube_xy: np.ndarray | None = None

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
        )

    @classmethod
    def load(cls, path: str | Path) -> "Demos":
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
    factories = {
        name: functools.partial(
            SimCamera, frames=FrameSpec(name, width, height, 1.0), source=source
        )
        for name, source in cams.items()
    } if render else {}
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
    states, images, actions, ep_idx, cube_xy = [], [], [], [], []
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
            ep_states, ep_images, ep_actions, ep_cube = [], [], [], []
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
                ep_idx += [e] * len(ep_states)
            logger.info(
                "demo %d/%d seed %d: %s, %d samples (%.0f s)",
                e + 1, episodes, seed, "success" if ok else "FAILED", len(ep_states), time.monotonic() - t0,
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
    )


def demo_summary(demos: Demos) -> str:
    return (
        f"{len(demos.states)} samples from {len(np.unique(demos.episode))} episodes "
        f"({demos.successes}/{demos.attempts} expert successes), cameras {list(demos.camera_names)}"
    )


__all__: Sequence[str] = ("Demos", "record_demos", "make_sim_robot", "demo_summary", "DEFAULT_CAMERAS")
