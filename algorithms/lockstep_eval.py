"""Lockstep evaluation of chunk-execution methods under a simulated inference delay.

No real time: a lockstep robot (``realtime=false``) advances one control period per ``send``, the
policy runs in this process, and its result is *held back* for ``d`` ticks (constant, or drawn
per inference), exactly as if inference had taken ``d`` periods. The same ``RTCPlanner`` as the
real-time runtimes (trigger, snapshot, delay estimate, merge) and the same ``PolicyRunner`` decide
which action runs each tick, so what this measures is what RTC does on the robot, minus the wall
clock. Methods (the RTC paper's comparison):

* ``sync``: the robot pauses while the model thinks (no ticks pass, the pause is counted), then
  runs the new chunk from index 0; the upper bound that real time cannot have.
* ``naive``: asynchronous, no guidance: the new chunk is swapped in at ``d`` as is.
* ``blend``: ``W * prev + (1 - W) * new`` (the seed system's openpi inpainting).
* ``rtc``: real VJP guidance with the soft mask (``schedule``, default ``exp``).
* ``rtc_hard``: VJP guidance with hard masking (schedule ``zeros``).
* ``rtc_trained``: training-time RTC (``guidance: trained``): the ``d`` actions that still execute
  are given to the model as a clean prefix; needs a policy trained so (a config error otherwise).
* ``custom``: the configured ``guidance`` + ``schedule`` (for Hydra sweeps over them).

Every cell runs the same episodes (seeds ``seed + e``) and re-seeds a sampling policy's noise
with the episode seed, so methods are compared on the same draws (at d = 0, naive and
rtc_trained, which then has no prefix, give the same chunks). Per method and delay it reports success rate, time to success (mean over the successful episodes,
seconds, a sync method's pauses included: they are wall time on a robot), chunk-boundary
discontinuity (max |last executed old action - first new action|, robot units) and max jerk of
the sent commands (units/s^3).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.common import ControlStep
from algorithms.rtc.chunk_logic import ChunkRejected, boundary_metrics
from algorithms.rtc.config import RTCConfig
from algorithms.rtc.planner import RTCPlanner
from policies.base import Guidance, Schedule
from policies.runner import ChunkResult, PolicyRunner
from services.clock import VirtualClock

log = logging.getLogger(__name__)

METHODS: dict[str, tuple[Guidance | None, Schedule | None]] = {
    "sync": (Guidance.NONE, None),
    "naive": (Guidance.NONE, None),
    "blend": (Guidance.BLEND, None),
    "rtc": (Guidance.VJP, None),
    "rtc_hard": (Guidance.VJP, Schedule.ZEROS),
    "rtc_trained": (Guidance.TRAINED, None),
    "custom": (None, None),
}
DISTRIBUTIONS = ("constant", "uniform")


@dataclass
class _Held:
    """A result held back until ``due_tick``, as if inference had taken that long."""

    due_tick: int
    seq: int
    result: ChunkResult


@dataclass(kw_only=True)
class LockstepEvaluator(RTCConfig):
    """``algorithm=lockstep_eval``: one table of methods x delays per run (Hydra multirun sweeps
    the knobs). ``delays_ticks`` are the (mean) simulated delays; ``delay_distribution=uniform``
    draws each delay from ``[d - delay_spread_ticks, d + delay_spread_ticks]``.
    ``initial_delay_ticks`` null: the cell's delay (a calibrated estimator). ``guidance``/``schedule``
    are those of method ``custom`` (the others fix theirs, except that ``rtc`` and ``blend`` use the
    configured schedule)."""

    run: Any
    methods: list[str] | tuple[str, ...] = ("sync", "naive", "blend", "rtc", "rtc_hard")
    delays_ticks: list[int] | tuple[int, ...] = (0, 1, 2, 4, 8)
    delay_distribution: str = "constant"
    delay_spread_ticks: int = 0
    initial_delay_ticks: int | None = None
    warmup_inferences_excluded: int = 0
    stop_on_success: bool = True
    results_name: str = "lockstep"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_chunk_size(self.run.policy_metadata.chunk_size)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"algorithm.methods: unknown {unknown}; expected some of {list(METHODS)}")
        if self.delay_distribution not in DISTRIBUTIONS:
            raise ValueError(f"algorithm.delay_distribution={self.delay_distribution!r}; expected {DISTRIBUTIONS}")
        if any(int(d) < 0 for d in self.delays_ticks) or self.delay_spread_ticks < 0:
            raise ValueError(f"algorithm.delays_ticks={list(self.delays_ticks)} and delay_spread_ticks="
                             f"{self.delay_spread_ticks} must be >= 0")
        self.methods = [str(m) for m in self.methods]
        self.delays_ticks = [int(d) for d in self.delays_ticks]
        self.run_obj = self.run

    def method_guidance(self, method: str) -> tuple[Guidance, Schedule]:
        guidance, schedule = METHODS[method]
        return (guidance or self.guidance), (schedule or self.schedule)

    def method_config(self, method: str) -> RTCConfig:
        guidance, schedule = self.method_guidance(method)
        return dataclasses.replace(self.rtc_config(), guidance=guidance, schedule=schedule)

    # ------------------------------------------------------------------ run
    def execute(self) -> dict[str, Any]:
        run = self.run_obj
        telemetry = run.make_telemetry()
        robot = run.make_robot()
        rows: list[dict[str, Any]] = []
        summary: dict[str, Any] = {}
        try:
            if robot.realtime:
                raise ValueError("lockstep_eval needs a lockstep robot (robot.realtime=false)")
            runner = PolicyRunner.from_run(run)
            robot.start()
            step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), telemetry)
            meta = run.policy_metadata
            for method in self.methods:
                for delay in self.delays_ticks:
                    row = self._evaluate(method, delay, step, runner, meta, telemetry)
                    rows.append(row)
                    log.info(
                        "lockstep %-8s d=%d: success %.2f, discontinuity mean %.4f max %.4f, max jerk %.1f, underruns %d",
                        method, delay, row["success_rate"], row["discontinuity_mean"],
                        row["discontinuity_max"], row["max_jerk"], row["underruns"],
                    )
            self._write(rows)
            summary = {"table": rows, **aggregate_cells(rows)}
        finally:
            robot.stop()
            summary = telemetry.close(
                algorithm="lockstep_eval", policy=str(run.cfg.policy.get("type", run.cfg.policy.get("_target_"))),
                execute_horizon=self.execute_horizon, s_min=self.trigger_ticks, delay_distribution=self.delay_distribution,
                schedule=str(self.schedule), max_guidance_weight=self.max_guidance_weight, **summary,
            )
        return summary

    def _write(self, rows: list[dict[str, Any]]) -> None:
        run_dir = self.run_obj.run_dir
        (run_dir / f"{self.results_name}.json").write_text(json.dumps(rows, indent=1))
        if rows:
            with (run_dir / f"{self.results_name}.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    # ------------------------------------------------------------------ one (method, delay) cell
    def _evaluate(self, method, delay, step, runner, meta, telemetry) -> dict[str, Any]:
        run = self.run_obj
        guidance, schedule = self.method_guidance(method)
        successes, discs, jerks, rms_jerks, max_steps_pre, success_s = [], [], [], [], [], []
        underruns = paused = inferences = rejected = ticks_total = 0
        for episode in range(run.episodes):
            seed = run.seed + episode
            rng = np.random.default_rng([seed, delay, 7])
            ep = self._episode(method, delay, seed, rng, step, runner, meta, telemetry)
            successes.append(ep["success"])
            if ep["success"]:
                success_s.append((ep["ticks"] + ep["paused_ticks"]) / run.hz)
            discs += ep["discontinuities"]
            jerks.append(ep["max_jerk"])
            rms_jerks.append(ep["rms_jerk"])
            max_steps_pre.append(ep["max_step_planned"])
            underruns += ep["underruns"]
            paused += ep["paused_ticks"]
            inferences += ep["inferences"]
            rejected += ep["rejected"]
            ticks_total += ep["ticks"]
        finite = [d for d in discs if np.isfinite(d)]
        jerks = [j for j in jerks if np.isfinite(j)]
        return {
            "method": method, "delay_ticks": delay, "guidance": str(guidance),
            "schedule": str(schedule) if guidance in (Guidance.VJP, Guidance.BLEND) else "",
            "episodes": run.episodes, "success_rate": float(np.mean(successes)) if successes else 0.0,
            "time_to_success_s": float(np.mean(success_s)) if success_s else float("nan"),
            "discontinuity_mean": float(np.mean(finite)) if finite else float("nan"),
            "discontinuity_max": float(np.max(finite)) if finite else float("nan"),
            "max_jerk": float(np.max(jerks)) if jerks else float("nan"),
            "rms_jerk": float(np.nanmean(rms_jerks)) if rms_jerks else float("nan"),
            "max_step_planned": float(np.nanmax(max_steps_pre)) if max_steps_pre else float("nan"),
            "underruns": underruns, "paused_ticks": paused, "inferences": inferences,
            "rejected_chunks": rejected, "ticks": ticks_total,
        }

    def _draw_delay(self, delay: int, rng: np.random.Generator) -> int:
        if self.delay_distribution == "constant" or self.delay_spread_ticks == 0:
            return delay
        lo, hi = max(0, delay - self.delay_spread_ticks), delay + self.delay_spread_ticks
        return int(rng.integers(lo, hi + 1))

    def _episode(self, method, delay, seed, rng, step, runner, meta, telemetry):
        run = self.run_obj
        initial = delay if self.initial_delay_ticks is None else int(self.initial_delay_ticks)
        planner = RTCPlanner(self.method_config(method), meta.chunk_size, meta.action_dim, initial_delay_ticks=initial)
        sched = planner.scheduler
        step.begin_episode(seed - run.seed, seed=seed)
        planner.begin_episode(seed - run.seed)
        # Common random numbers: episode e samples the same policy noise in every cell, whatever
        # cells ran before it in this process (so the table does not depend on how it was split).
        runner.reset_noise(seed)
        clock = VirtualClock(1.0 / run.hz)
        clock.start()
        sync = method == "sync"
        out = {"success": False, "discontinuities": [], "underruns": 0, "paused_ticks": 0,
               "inferences": 0, "rejected": 0, "ticks": 0}
        sent, planned_seq = [], []
        held: _Held | None = None

        def infer(req) -> ChunkResult:
            out["inferences"] += 1
            return runner.infer_history(step.history, req.guide)

        def record(chunk_id, s, d_est, d_actual, disc, tick):
            telemetry.inference({
                "episode": seed - run.seed, "chunk_id": chunk_id, "t_start": clock.now(), "t_end": clock.now(),
                "latency_ms": d_actual * clock.period_s * 1e3, "d_estimate": d_est, "d_actual": d_actual,
                "s": s, "guidance": f"{method}:{planner.cfg.guidance}", "discontinuity": disc, "tick": tick,
                "method": method, "delay_ticks": delay,
            })

        def try_merge(tick: int) -> None:
            nonlocal held
            if held is None or held.due_tick > tick:
                return
            h, held = held, None
            req = planner.pending
            try:
                m = planner.accept(h.seq, h.result.robot, h.result.model)
            except ChunkRejected as exc:
                out["rejected"] += 1
                log.warning("lockstep: rejected chunk: %s", exc)
                return
            out["discontinuities"].append(m.discontinuity)
            record(m.chunk_id, req.s, req.d, m.d_actual, m.discontinuity, tick)

        first = planner.request(0)
        result = infer(first)
        planner.accept(first.seq, result.robot, result.model)
        record(sched.chunk_id, 0, 0, 0, None, 0)
        for tick in range(run.max_steps):
            clock.wait(tick)
            try_merge(tick)
            if planner.wants_inference():
                req = planner.plain_request(tick) if sync else planner.request(tick)
                result = infer(req)
                latency = self._draw_delay(delay, rng)
                if sync:
                    # the robot pauses `latency` ticks (no time passes in lockstep), then the new
                    # chunk runs from index 0
                    out["paused_ticks"] += latency
                    last = sched.last_action
                    try:
                        planner.accept(req.seq, result.robot, result.model)
                        disc = float(np.max(np.abs(result.robot[0] - last))) if last is not None else float("nan")
                        out["discontinuities"].append(disc)
                        record(sched.chunk_id, req.s, 0, 0, disc, tick)
                    except ChunkRejected as exc:
                        out["rejected"] += 1
                        log.warning("lockstep: rejected chunk: %s", exc)
                else:
                    held = _Held(tick + latency, req.seq, result)
                    try_merge(tick)
            planned = planner.step()
            command, _, _, _ = step.act(planned.action)
            sent.append(command)
            if planned.action is not None:
                planned_seq.append(planned.action)
            obs, _ = step.observe()
            out["ticks"] = tick + 1
            if bool(obs.info.get("success", False)):
                out["success"] = True
                if self.stop_on_success:
                    break
        out["underruns"] = sched.underruns
        metrics = boundary_metrics(np.asarray(sent), clock.period_s)
        out["max_jerk"] = metrics["max_jerk"]
        out["rms_jerk"] = metrics["rms_jerk"]
        out["max_step_planned"] = boundary_metrics(np.asarray(planned_seq), clock.period_s)["max_step"]
        return out


def aggregate_cells(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Run-level numbers over every (method, delay) cell, so a lockstep job ranks in a sweep and
    serves as a sweep objective like a real-time run: success and jerk over all episodes of all
    cells (with one cell, exactly that cell's)."""
    if not rows:
        return {}
    episodes = sum(r["episodes"] for r in rows)
    jerks = [r["max_jerk"] for r in rows if np.isfinite(r["max_jerk"])]
    return {
        "success_rate": float(sum(r["success_rate"] * r["episodes"] for r in rows) / episodes) if episodes else 0.0,
        "max_jerk": float(max(jerks)) if jerks else float("nan"),
        "ticks": int(sum(r["ticks"] for r in rows)),
        "cells": len(rows),
    }
