"""Lockstep evaluation of chunk-execution methods under a simulated inference delay.

No real time: a lockstep robot (``realtime=false``) advances one control period per ``send``, the
policy runs in this process, and its result is *held back* for ``d`` ticks (constant, or drawn
per inference), exactly as if inference had taken ``d`` periods. It runs the one control loop of the
robot (``algorithms/loop.py``: planner, rejection rules, faults) with the simulated-delay transport
(``algorithms/inprocess.py``) on the virtual clock, so what this measures is what RTC does on the
robot, minus the wall clock. Methods (the RTC paper's comparison):

* ``sync``: the robot pauses while the model thinks (no ticks pass, the pause is counted), then
  runs the new chunk from index 0; the upper bound that real time cannot have.
* ``naive``: asynchronous, no guidance: the new chunk is swapped in at ``d`` as is.
* ``blend``: ``W * prev + (1 - W) * new`` (blend inpainting, as openpi clients do it).
* ``rtc``: real VJP guidance with the soft mask (``schedule``, default ``exp``).
* ``rtc_hard``: VJP guidance with hard masking (schedule ``zeros``).
* ``rtc_trained``: training-time RTC (``guidance: trained``): the ``d`` actions that still execute
  are given to the model as a clean prefix; needs a policy trained so (a config error otherwise).
* ``rtc_identity``: RTC guidance whose correction skips the model's Jacobian (``guidance:
  identity``, what LeRobot 0.6's RTC computes): no reverse pass; needs ``supports_identity``.
* ``rtc_capped``: ``rtc`` with its soft-guided region ending ``guided_cap_ticks`` actions past the
  delay instead of at ``H - s`` (the knob must be set; the other methods ignore it).
* ``select``: no guidance in the sampler: ``select_samples`` (K) chunks sampled for the observation,
  the one closest to the previous chunk's rest under the soft mask kept (``guidance: select``, the
  backward-coherence criterion of bidirectional decoding); needs ``supports_select``.
* ``select_hard``: ``select`` scored on the hard mask (schedule ``zeros``): only the ``d`` actions
  that execute from the previous chunk while the model thinks count, so the kept candidate joins the
  committed actions without being pulled toward the rest of a plan that may be stale. At d = 0 no
  action counts: it keeps its first candidate, an unselected sample like naive's.
* ``bid``: bidirectional decoding (Liu et al. 2024; ``guidance: bid``), the RTC paper's baseline:
  ``bid_samples`` (N) chunks from the policy and N from its weak checkpoint, the kept one closest
  to the previous chunk's rest under the soft mask plus closest to the other strong samples and
  farthest from the weak ones; needs ``supports_bid`` (``policy.bid_weak_checkpoint``).
* ``custom``: the configured ``guidance`` + ``schedule`` + ``guided_cap_ticks`` (for Hydra sweeps).

A cell is (method, delay d, execute horizon s): every cell runs ``execute_horizon`` unless
``execute_horizons`` pairs one s with each delay (the RTC paper's d = 0..4 at s = max(d, 1), and an s
sweep at d = 1); rows record their s. ``parallel_episodes`` > 1 runs a cell's episodes side by side,
each the one ``ControlLoop`` with its own robot, their requests answered by one batched call
(``algorithms/lockstep_parallel.py``); the rows are the ones one episode at a time gives.

Every cell runs the same episodes (seeds ``seed + e``) and re-seeds a sampling policy's noise
with the episode seed, so methods are compared on the same draws (at d = 0, naive and
rtc_trained, which then has no prefix, give the same chunks). Per method and delay it reports success rate, time to success (mean over the successful episodes,
seconds, a sync method's pauses included: they are wall time on a robot), chunk-boundary
discontinuity (max |last executed old action - first new action|, robot units), the jump from plan
at the same boundaries (max |first new action - the old chunk's action for that tick|: the
discontinuity less the arm's ordinary motion over the tick) and max jerk of the sent commands
(units/s^3).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from algorithms.chunking.chunk_logic import boundary_metrics, check_execute_horizon
from algorithms.chunking.config import RTCConfig
from algorithms.chunking.planner import RTCPlanner
from algorithms.inprocess import SimulatedDelayTransport
from algorithms.lockstep_parallel import CellJob, EpisodeOutcome, EpisodeWorkers, cut_outcomes
from algorithms.loop import ControlLoop, LoopConfig
from algorithms.settings import build_groups, check_ranges, knob_groups
from policies.base import Guidance, Schedule
from services.errors import AlgorithmFault, FaultKind
from services.knobs import NonNegativeInt, PositiveInt

log = logging.getLogger(__name__)

METHODS: dict[str, tuple[Guidance | None, Schedule | None]] = {
    "sync": (Guidance.NONE, None),
    "naive": (Guidance.NONE, None),
    "blend": (Guidance.BLEND, None),
    "rtc": (Guidance.VJP, None),
    "rtc_hard": (Guidance.VJP, Schedule.ZEROS),
    "rtc_trained": (Guidance.TRAINED, None),
    "rtc_identity": (Guidance.IDENTITY, None),
    "rtc_capped": (Guidance.VJP, None),
    "select": (Guidance.SELECT, None),
    "select_hard": (Guidance.SELECT, Schedule.ZEROS),
    "bid": (Guidance.BID, None),
    "custom": (None, None),
}
DISTRIBUTIONS = ("constant", "uniform")


@dataclass(kw_only=True)
class StudyConfig:
    """The evaluation's own knobs: ``methods`` x ``delays_ticks`` cells (the (mean) simulated delays);
    ``delay_distribution=uniform`` draws each delay from ``[d - delay_spread_ticks, d + delay_spread_ticks]``;
    the table is written to ``<results_name>.csv`` / ``.json``. The chunking knob ``initial_delay_ticks``
    null means the cell's delay here (a calibrated estimator). ``fault_ends_cell``: a fault (say
    ``chunks_rejected``) ends its cell and the run, as in every mode; false: the faulted episode counts
    as failed (the robot held, as the fault handling does), the next one starts from home and the row
    counts them (``faulted_episodes``), so that every cell of a study runs the same seeds.

    ``execute_horizons``: null, every cell executes ``execute_horizon`` actions per chunk; else a list
    paired with ``delays_ticks`` (same length): cell i is (``delays_ticks[i]``, ``execute_horizons[i]``),
    the RTC paper's protocol being ``delays_ticks=[0,1,2,3,4]`` with ``execute_horizons=[1,1,2,3,4]``
    (s = max(d, 1)) and a sweep of s at d = 1 as ``delays_ticks=[1,1,1,1]``, ``execute_horizons=[1,2,3,4]``
    (s is the paper's: see docs/rtc.md). ``parallel_episodes`` (P): a cell's episodes run P at a time,
    each its own control loop and robot, their requests answered by one batched call; 1 runs them one
    after the other. Either way an episode gets the same noise and so the same chunks (to float
    tolerance)."""

    methods: list[str] = field(default_factory=lambda: ["sync", "naive", "blend", "rtc", "rtc_hard"])
    delays_ticks: list[NonNegativeInt] = field(default_factory=lambda: [0, 1, 2, 4, 8])
    delay_distribution: Literal["constant", "uniform"] = "constant"
    delay_spread_ticks: NonNegativeInt = 0
    results_name: str = "lockstep"
    fault_ends_cell: bool = True
    execute_horizons: list[PositiveInt] | None = None
    parallel_episodes: PositiveInt = 1

    def __post_init__(self) -> None:
        check_ranges(self)
        unknown = [m for m in self.methods if m not in METHODS]
        if unknown:
            raise ValueError(f"algorithm.methods: unknown {unknown}; expected some of {list(METHODS)}")
        if not self.methods or not self.delays_ticks:  # an empty table: a run that evaluates nothing
            raise ValueError(f"algorithm.{'methods' if not self.methods else 'delays_ticks'}: empty; name at least one")
        if self.delay_distribution not in DISTRIBUTIONS:
            raise ValueError(f"algorithm.delay_distribution={self.delay_distribution!r}; expected {DISTRIBUTIONS}")
        if any(int(d) < 0 for d in self.delays_ticks):
            raise ValueError(f"algorithm.delays_ticks={list(self.delays_ticks)} must be >= 0")
        self.methods = [str(m) for m in self.methods]
        self.delays_ticks = [int(d) for d in self.delays_ticks]
        if self.execute_horizons is not None:
            self.execute_horizons = [int(s) for s in self.execute_horizons]
            if len(self.execute_horizons) != len(self.delays_ticks):
                raise ValueError(
                    f"algorithm.execute_horizons={self.execute_horizons}: one per delay in "
                    f"algorithm.delays_ticks={self.delays_ticks} (cell i is (delays_ticks[i], "
                    "execute_horizons[i]))"
                )

    def cells(self, execute_horizon: int) -> list[tuple[int, int]]:
        """The (delay, execute horizon) cells each method runs, in order."""
        horizons = self.execute_horizons or [int(execute_horizon)] * len(self.delays_ticks)
        return list(zip(self.delays_ticks, horizons))


@knob_groups(rtc=RTCConfig, limits=LoopConfig, study=StudyConfig)
class LockstepEvaluator:
    """``algorithm=lockstep_eval``: one table of methods x delays per run (Hydra multirun sweeps
    the knobs). ``guidance``/``schedule`` are those of method ``custom`` (the others fix theirs, except
    that ``rtc`` and ``blend`` use the configured schedule)."""

    def __init__(self, run: Any, **knobs: Any) -> None:
        groups = build_groups(self.knob_groups, knobs)
        self.run = run
        self.rtc: RTCConfig = groups["rtc"]
        self.limits: LoopConfig = groups["limits"]
        self.study: StudyConfig = groups["study"]
        self.rtc.check_chunk_size(run.policy_metadata.chunk_size)
        if self.study.execute_horizons is not None:
            for _delay, horizon in self.study.cells(self.rtc.execute_horizon):
                check_execute_horizon(horizon, run.policy_metadata.chunk_size, "algorithm.execute_horizons")
        if "rtc_capped" in self.study.methods and self.rtc.guided_cap_ticks is None:
            raise ValueError(
                f"algorithm.methods={self.study.methods}: rtc_capped needs algorithm.guided_cap_ticks "
                "(actions past the delay that stay soft-guided)"
            )

    def method_guidance(self, method: str) -> tuple[Guidance, Schedule]:
        guidance, schedule = METHODS[method]
        return (guidance or self.rtc.guidance), (schedule or self.rtc.schedule)

    def method_config(self, method: str, delay: int, execute_horizon: int | None = None) -> RTCConfig:
        guidance, schedule = self.method_guidance(method)
        initial = delay if self.rtc.initial_delay_ticks is None else self.rtc.initial_delay_ticks
        cap = self.rtc.guided_cap_ticks if method in ("rtc_capped", "custom") else None
        horizon = self.rtc.execute_horizon if execute_horizon is None else int(execute_horizon)
        return dataclasses.replace(
            self.rtc,
            guidance=guidance,
            schedule=schedule,
            initial_delay_ticks=initial,
            guided_cap_ticks=cap,
            execute_horizon=horizon,
        )

    # ------------------------------------------------------------------ run
    def execute(self) -> dict[str, Any]:
        run, study = self.run, self.study
        transport = SimulatedDelayTransport(1.0 / run.hz)
        loop = ControlLoop(run, self.rtc, self.limits, transport, name="lockstep_eval")

        def cells(loop: ControlLoop) -> dict[str, Any]:
            workers = None
            if study.parallel_episodes > 1:  # the episodes side by side, one batched call for their requests
                try:
                    workers = EpisodeWorkers(
                        run,
                        transport.runner,
                        self.rtc,
                        self.limits,
                        loop.telemetry,
                        min(study.parallel_episodes, run.episodes),
                        loop.name,
                    )
                except ValueError as exc:  # a policy whose noise cannot be kept per episode
                    raise AlgorithmFault(str(exc), FaultKind.STARTUP) from None
            try:
                return self._cells(loop, transport, workers)
            finally:
                if workers is not None:
                    workers.close()

        return loop.execute(
            cells,
            record=False,
            summary_fields=lambda: dict(
                policy=str(run.cfg.policy.get("type", run.cfg.policy.get("_target_"))),
                delay_distribution=study.delay_distribution,
                max_guidance_weight=self.rtc.max_guidance_weight,
            ),
        )

    def _cells(
        self, loop: ControlLoop, transport: SimulatedDelayTransport, workers: EpisodeWorkers | None
    ) -> dict[str, Any]:
        rows = []
        for method in self.study.methods:
            for delay, horizon in self.study.cells(self.rtc.execute_horizon):
                row = self._evaluate(loop, transport, method, delay, horizon, workers)
                rows.append(row)
                log.info(
                    "lockstep %-8s d=%d s=%d: success %.2f, discontinuity mean %.4f max %.4f, max jerk %.1f, underruns %d",
                    method,
                    delay,
                    horizon,
                    row["success_rate"],
                    row["discontinuity_mean"],
                    row["discontinuity_max"],
                    row["max_jerk"],
                    row["underruns"],
                )
                if loop.fault is not None:  # only where study.fault_ends_cell
                    self._write(rows)
                    return {"table": rows}
        self._write(rows)
        return {"table": rows, **aggregate_cells(rows)}

    def _write(self, rows: list[dict[str, Any]]) -> None:
        run_dir = self.run.run_dir
        (run_dir / f"{self.study.results_name}.json").write_text(json.dumps(rows, indent=1))
        if rows:
            with (run_dir / f"{self.study.results_name}.csv").open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=list(rows[0]))
                writer.writeheader()
                writer.writerows(rows)

    # ------------------------------------------------------------------ one (method, delay, horizon) cell
    def _episodes(self, loop: ControlLoop, transport: SimulatedDelayTransport, cfg: RTCConfig) -> list[EpisodeOutcome]:
        """The cell's episodes one after the other on the run's loop (``parallel_episodes`` = 1)."""
        run, meta = self.run, self.run.policy_metadata
        outcomes = []
        for episode in range(run.episodes):
            loop.planner = RTCPlanner(cfg, meta.chunk_size, meta.action_dim)
            ep = loop.episode(episode, run.seed + episode)
            outcomes.append(EpisodeOutcome(episode, ep, transport.paused_ticks, loop.fault))
            if loop.fault is not None:
                if self.study.fault_ends_cell:
                    break
                loop.fault = None  # the episode failed and the robot held; the next one starts from home
        return outcomes

    def _evaluate(
        self,
        loop: ControlLoop,
        transport: SimulatedDelayTransport,
        method: str,
        delay: int,
        horizon: int | None = None,
        workers: EpisodeWorkers | None = None,
    ) -> dict[str, Any]:
        run = self.run
        horizon = self.rtc.execute_horizon if horizon is None else int(horizon)
        guidance, schedule = self.method_guidance(method)
        cfg = self.method_config(method, delay, horizon)
        spread = self.study.delay_spread_ticks if self.study.delay_distribution == "uniform" else 0
        record_fields = {"method": method, "delay_ticks": delay, "guidance": f"{method}:{cfg.guidance}"}
        if workers is None:
            transport.configure(delay, spread, sync=method == "sync")
            loop.sync = method == "sync"
            loop.record_fields = record_fields
            outcomes = self._episodes(loop, transport, cfg)
        else:
            job = CellJob(
                [(e, run.seed + e) for e in range(run.episodes)],
                cfg,
                delay,
                spread,
                method == "sync",
                record_fields,
                stop_on_fault=self.study.fault_ends_cell,
            )
            try:
                outcomes = cut_outcomes(workers.run_cell(job), self.study.fault_ends_cell)
            finally:
                workers.collect_counters(loop)
            if outcomes and outcomes[-1].fault is not None and self.study.fault_ends_cell:
                loop.fault = outcomes[-1].fault  # the cell and the run end with it, as one at a time
        successes, discs, plan_jumps, jerks, rms_jerks, max_steps_pre, success_s, gate = [], [], [], [], [], [], [], []
        ended_s: list[float] = []  # every episode: time to success, or until it ended without
        underruns = paused = inferences = rejected = ticks_total = 0
        faulted: list[str] = []
        for outcome in outcomes:
            ep = outcome.result
            successes.append(ep.success)
            ended_s.append((ep.ticks + outcome.paused_ticks) / run.hz)
            if ep.success:
                success_s.append(ended_s[-1])
            discs += ep.discontinuities
            plan_jumps += ep.plan_jumps
            gate += [f["select_stale"] for f in ep.inference_fields if "select_stale" in f]
            period_s = 1.0 / run.hz
            metrics = boundary_metrics(np.asarray(ep.sent), period_s)
            jerks.append(metrics["max_jerk"])
            rms_jerks.append(metrics["rms_jerk"])
            max_steps_pre.append(boundary_metrics(np.asarray(ep.planned), period_s)["max_step"])
            underruns += ep.underruns
            paused += outcome.paused_ticks
            inferences += ep.inferences
            rejected += ep.rejected
            ticks_total += ep.ticks
            if outcome.fault is not None and not self.study.fault_ends_cell:
                faulted.append(str(outcome.fault.kind))
        finite = [d for d in discs if np.isfinite(d)]
        finite_jumps = [j for j in plan_jumps if np.isfinite(j)]
        jerks = [j for j in jerks if np.isfinite(j)]
        return {
            "method": method,
            "delay_ticks": delay,
            "execute_horizon": horizon,
            "guidance": str(guidance),
            "schedule": str(schedule) if guidance not in (Guidance.NONE, Guidance.TRAINED) else "",
            # Episodes actually run: a fault ends the run (as in every mode), so a faulted cell has fewer.
            "episodes": len(successes),
            "success_rate": float(np.mean(successes)) if successes else 0.0,
            "time_to_success_s": float(np.mean(success_s)) if success_s else float("nan"),
            # over every episode, a failure counted at the tick it ended (the episode limit on a reach task
            # that ends at success): unlike the mean over successes, it cannot improve by failing more
            "time_to_end_s": float(np.mean(ended_s)) if ended_s else float("nan"),
            "time_to_end_ci95_s": mean_ci95_half_width(ended_s),
            "discontinuity_mean": float(np.mean(finite)) if finite else float("nan"),
            "discontinuity_max": float(np.max(finite)) if finite else float("nan"),
            # the same boundaries measured against the old chunk's plan for that tick (per-tick motion excluded)
            "plan_jump_mean": float(np.mean(finite_jumps)) if finite_jumps else float("nan"),
            "plan_jump_max": float(np.max(finite_jumps)) if finite_jumps else float("nan"),
            "max_jerk": float(np.max(jerks)) if jerks else float("nan"),
            "rms_jerk": float(np.nanmean(rms_jerks)) if rms_jerks else float("nan"),
            "max_step_planned": float(np.nanmax(max_steps_pre)) if max_steps_pre else float("nan"),
            "underruns": underruns,
            "paused_ticks": paused,
            "inferences": inferences,
            "rejected_chunks": rejected,
            "ticks": ticks_total,
            "faulted_episodes": len(faulted),
            # share of the cell's executed chunks whose previous chunk select's stale gate called stale
            # (policy.select_stale_gate; NaN where no inference reported it)
            "select_stale_rate": float(np.mean(gate)) if gate else float("nan"),
            "fault": str(loop.fault.kind)
            if loop.fault is not None
            else (f"{', '.join(sorted(set(faulted)))} in {len(faulted)} episode(s)" if faulted else ""),
        }


def mean_ci95_half_width(values: list[float]) -> float:
    """Half-width of the normal-approximation 95% interval of the mean (1.96 standard errors);
    NaN with fewer than two values."""
    if len(values) < 2:
        return float("nan")
    return float(1.96 * np.std(values, ddof=1) / np.sqrt(len(values)))


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
