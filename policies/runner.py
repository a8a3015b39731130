"""One policy runner: the only place that builds, freezes and warms up a policy and runs one inference.

Every execution mode uses it -- the sequential loop, the RTC inference process, the Ray split actor,
the lockstep evaluator and the policy server -- so the step "normalize the observation -> predict, or
guided inference toward the previous chunk -> denormalize" exists once, with its checks. The runner
keeps no RTC state: what to continue (``Guide``) is decided by the control side's planner
and handed in.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.base import Guidance, PolicyInput, Schedule, missing_capability

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ChunkResult:
    """One inference: the chunk in model space (what guidance continues) and robot space (what is
    executed), both float32 ``(H, action_dim)``, and the time spent inside the policy call."""

    model: np.ndarray
    robot: np.ndarray
    policy_ms: float
    guided: bool


@dataclass(frozen=True)
class Guide:
    """What a guided inference continues: ``prev_model`` (the previous chunk's unexecuted rest, model
    space, zero-padded to H), ``delay_ticks`` actions of it that will execute before the new chunk
    takes over, and ``execute_horizon``, the policy's argument of that name: the actions of that chunk
    executed when it was cut, which the new chunk's tail leaves free (longer when
    ``algorithm.guided_cap_ticks`` ends the guided region early; ``capped_execute_horizon``)."""

    prev_model: np.ndarray
    delay_ticks: int
    execute_horizon: int
    guidance: Guidance = Guidance.VJP
    schedule: Schedule = Schedule.EXP
    max_guidance_weight: float = 5.0


class PolicyRunner:
    """A ready policy and its normalizer."""

    def __init__(self, policy: Any, normalizer: Any) -> None:
        self.policy = policy
        self.normalizer = normalizer
        self.startup_s = 0.0

    @classmethod
    def build(
        cls, make_policy: Callable[[], Any], make_normalizer: Callable[[], Any], threads: int | None = None
    ) -> PolicyRunner:
        """Build (in the calling process: CUDA there), freeze and warm up. ``threads`` caps torch's CPU
        threads first, so a CPU policy leaves a core to the control loop."""
        t0 = time.monotonic()
        if threads:
            import torch

            torch.set_num_threads(int(threads))
        runner = cls(make_policy(), make_normalizer())
        runner.policy.freeze()
        runner.policy.warmup()
        runner.startup_s = time.monotonic() - t0
        log.info("policy %s ready in %.2f s (process %d)", type(runner.policy).__name__, runner.startup_s, os.getpid())
        return runner

    @classmethod
    def from_run(cls, run: Any, threads: int | None = None) -> PolicyRunner:
        """``build`` from a run object's factories (``run.make_policy`` / ``run.make_normalizer``)."""
        return cls.build(run.make_policy, run.make_normalizer, threads)

    @property
    def metadata(self) -> Any:
        return getattr(self.policy, "metadata", None)

    def reset_noise(self, seed: int) -> bool:
        """Re-seed a sampling policy's noise (``reset_noise(seed)``, e.g. the flow policy), so that
        an evaluation draws the same noise for an episode whatever ran before it; False for a
        policy without noise of its own."""
        reset = getattr(self.policy, "reset_noise", None)
        if reset is None:
            return False
        reset(int(seed))
        return True

    def policy_input(self, state: np.ndarray, images: Mapping[str, np.ndarray], info: Mapping[str, Any]) -> PolicyInput:
        return self.normalizer.policy_input(state, images, info)

    def to_model(self, chunk_robot: np.ndarray) -> np.ndarray:
        """A robot-space chunk in model space (e.g. a client's previous chunk)."""
        return np.asarray(self.normalizer.action_to_model(np.asarray(chunk_robot, np.float32)), np.float32)

    def infer(self, inp: PolicyInput, guide: Guide | None = None) -> ChunkResult:
        """``predict`` (``guide`` None) or ``guided_inference`` toward ``guide.prev_model``.

        A chunk that is not 2-D is passed through unconverted in both spaces, so the caller's chunk
        check rejects it by shape instead of the normalizer failing on it.
        """
        missing = None if guide is None else missing_capability(self.policy, guide.guidance)
        if missing is not None:
            # a policy without the capability would treat the unknown mode as some other guidance
            raise ValueError(missing)
        t0 = time.perf_counter()
        if guide is None:
            out = self.policy.predict(inp)
        else:
            out = self.policy.guided_inference(
                inp,
                np.asarray(guide.prev_model, np.float32),
                int(guide.delay_ticks),
                int(guide.execute_horizon),
                guidance=guide.guidance,
                schedule=guide.schedule,
                max_guidance_weight=float(guide.max_guidance_weight),
            )
        policy_ms = (time.perf_counter() - t0) * 1e3
        model = np.asarray(out, dtype=np.float32)
        robot = np.asarray(self.normalizer.action_to_robot(model), np.float32) if model.ndim == 2 else model
        return ChunkResult(model, robot, policy_ms, guide is not None and guide.guidance != Guidance.NONE)

    def infer_observation(
        self, state: np.ndarray, images: Mapping[str, np.ndarray], info: Mapping[str, Any], guide: Guide | None = None
    ) -> ChunkResult:
        """``infer`` from a robot-space observation (state history, frames, info)."""
        return self.infer(self.policy_input(state, images, info), guide)

    def infer_history(self, history: Any, guide: Guide | None = None) -> ChunkResult:
        """``infer`` from an observation history (``snapshot()`` -> state, images; ``last.info``)."""
        snap = history.snapshot()
        info = history.last.info if history.last is not None else {}
        return self.infer_observation(snap.state, snap.images, info, guide)
