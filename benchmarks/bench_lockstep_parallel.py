"""Episodes per second of one lockstep cell, one episode at a time vs P side by side (one batched call).

    .venv/bin/python benchmarks/bench_lockstep_parallel.py --parallel 1,8,16,32 --episodes 32 --max-steps 100

Runs the same cell (``--method`` at delay ``--delay`` with execute horizon ``--horizon``) with
``algorithm.parallel_episodes`` = each P in turn, in this one process (the same window on the same
machine), timing the cell alone (the evaluator's cell loop: not the policy build or the telemetry
start, which every P pays once). Checks on the way that every P scored the same episodes the same
(success per cell; the mean jump from plan to float tolerance) and writes
``benchmarks/results/<name>.md`` with the command. The default cell is the RTC paper's protocol on a
state-only Gymnasium task (``robot=gym`` Pendulum-v1 with action noise, the ``gym_pendulum`` flow
checkpoint, H = 8, d = 1, s = 1: an inference every tick; success = an episode return of at least
-500, the task's threshold in ``tasks/gym_control``).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")

RESULTS = ROOT / "benchmarks" / "results"
PENDULUM = [
    "robot=gym",
    "robot.env_id=Pendulum-v1",
    "robot.realtime=false",
    "robot.action_noise_std=0.4",
    "robot.success_return=-500.0",
    "policy=flow",
    "policy.checkpoint=policies/flow/checkpoints/gym_pendulum",
    "policy.normalizer.path=policies/flow/checkpoints/gym_pendulum/stats.json",
    "policy.chunk_size=8",
    "policy.action_dim=1",
    "policy.state_dim=3",
    "policy.camera_names=[]",
    "policy.image_size=[0,0]",
    "algorithm.max_chunk_jump=null",
]


def time_cell(overrides: list[str]) -> tuple[dict, float]:
    """The cell's row and the seconds its episodes took (``LockstepEvaluator._cells``)."""
    from algorithms.lockstep_eval import LockstepEvaluator
    from inference.app import compose_run

    spent: list[float] = []
    original = LockstepEvaluator._cells

    def timed(self, *args):
        t0 = time.perf_counter()
        try:
            return original(self, *args)
        finally:
            spent.append(time.perf_counter() - t0)

    LockstepEvaluator._cells = timed
    try:
        summary = compose_run(overrides, run_dir=Path(tempfile.mkdtemp(prefix="bench-parallel-"))).execute()
    finally:
        LockstepEvaluator._cells = original
    (row,) = summary["table"]
    return row, spent[0]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--parallel", default="1,8,16,32", help="the P values, in this order (the first is the baseline)")
    ap.add_argument("--episodes", type=int, default=32)
    ap.add_argument("--max-steps", type=int, default=100)
    ap.add_argument("--method", default="rtc")
    ap.add_argument("--delay", type=int, default=1)
    ap.add_argument("--horizon", type=int, default=1)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--name", default="lockstep_parallel")
    ap.add_argument("--extra", nargs="*", default=None, help="Hydra overrides for the task (default: the pendulum)")
    args = ap.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    task = PENDULUM if args.extra is None else args.extra
    base = [
        "algorithm=lockstep_eval",
        *task,
        f"episodes={args.episodes}",
        f"max_steps={args.max_steps}",
        "logger=none",
        "report=false",
        f"algorithm.methods=[{args.method}]",
        f"algorithm.delays_ticks=[{args.delay}]",
        f"algorithm.execute_horizon={args.horizon}",
        f"algorithm.execute_horizons=[{args.horizon}]",
    ]
    results = []
    for p in [int(x) for x in args.parallel.split(",")]:
        row, seconds = time_cell([*base, f"algorithm.parallel_episodes={p}"])
        results.append((p, row, seconds))
        print(
            f"P={p}: {seconds:.1f} s, {args.episodes / seconds:.3f} episodes/s, success {row['success_rate']:.3f}, "
            f"{row['ticks']} ticks, {row['inferences']} inferences",
            flush=True,
        )
    base_p, base_row, base_s = results[0]
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Lockstep cell: episodes one at a time vs side by side (one batched policy call)",
        "",
        f"Command: `{command}`",
        "",
        f"Cell: method `{args.method}`, d = {args.delay}, s = {args.horizon}, {args.episodes} episodes (seeds 0..."
        f"{args.episodes - 1}), max {args.max_steps} ticks; overrides `{' '.join(base)}`. Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} "
        f"on this machine ({os.cpu_count()} CPUs, shared with other jobs: the load varies between rows), each P "
        "in turn in one process; the time is the cell's episodes alone (policy build and telemetry start excluded).",
        "",
        "| P (episodes side by side) | cell wall (s) | episodes/s | speed-up vs P = "
        + str(base_p)
        + " | success | ticks "
        "| inferences | jump from plan mean | same per-episode numbers as P = " + str(base_p) + " |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for p, row, seconds in results:
        same = (
            row["success_rate"] == base_row["success_rate"]
            and row["ticks"] == base_row["ticks"]
            and row["inferences"] == base_row["inferences"]
            and (
                math.isclose(row["plan_jump_mean"], base_row["plan_jump_mean"], abs_tol=1e-4)
                or (math.isnan(row["plan_jump_mean"]) and math.isnan(base_row["plan_jump_mean"]))
            )
        )
        lines.append(
            f"| {p} | {seconds:.1f} | {args.episodes / seconds:.3f} | {base_s / seconds:.2f}x | "
            f"{row['success_rate']:.3f} | {row['ticks']} | {row['inferences']} | {row['plan_jump_mean']:.5f} | "
            f"{'yes' if same else '**no**'} |"
        )
    out = RESULTS / f"{args.name}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
