"""Lockstep RTC table: success and chunk-boundary discontinuity vs simulated delay d.

    .venv/bin/python benchmarks/bench_lockstep.py --policy scripted --episodes 10
    .venv/bin/python benchmarks/bench_lockstep.py --policy flow --episodes 5 --cameras sim

Runs the app's ``algorithm=lockstep_eval`` (algorithms/rtc/lockstep.py) in-process for methods
sync / naive / blend / rtc / rtc_hard and d in {0, 1, 2, 4, 8} on the lockstep sim robot, and
writes benchmarks/results/lockstep_<policy>.md (+ .csv) with the exact command. The scripted
expert replays one fixed plan indexed by the sim step, so its chunks agree with each other by
construction: with it the table checks the bookkeeping (no skipped/repeated actions, same success
at every d, no underrun while s + d <= H), not the guidance; the learned flow policy is what
separates the methods.
"""

from __future__ import annotations

import argparse
import csv
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("WANDB_MODE", "offline")

RESULTS = ROOT / "benchmarks" / "results"


def _run_cells(overrides: list[str]) -> tuple[list[dict], dict]:
    """One lockstep_eval run (in its own process when --jobs > 1)."""
    from inference.app import compose_run

    run = compose_run(overrides, run_dir=Path(tempfile.mkdtemp(prefix="bench-lockstep-")))
    summary = run.execute()
    meta = run.policy_metadata
    return summary["table"], {"chunk_size": meta.chunk_size, "hz": run.hz, "seed": run.seed,
                              "checkpoint": run.cfg.policy.get("checkpoint")}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--policy", default="scripted")
    ap.add_argument("--cameras", default="none")
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--max-steps", type=int, default=300)
    ap.add_argument("--methods", default="sync,naive,blend,rtc,rtc_hard")
    ap.add_argument("--delays", default="0,1,2,4,8")
    ap.add_argument("--execute-horizon", type=int, default=25)
    ap.add_argument("--jobs", type=int, default=1, help="processes; methods are split between them")
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    args = ap.parse_args()

    def overrides_for(methods: list[str]) -> list[str]:
        return [
            "algorithm=lockstep_eval", f"policy={args.policy}", f"cameras={args.cameras}",
            f"episodes={args.episodes}", f"max_steps={args.max_steps}",
            f"algorithm.methods=[{','.join(methods)}]", f"algorithm.delays_ticks=[{args.delays}]",
            f"algorithm.execute_horizon={args.execute_horizon}", "logger=none",
            *(["robot.render_in_lockstep=false"] if args.cameras == "none" else []),
            *args.extra,
        ]

    methods = args.methods.split(",")
    overrides = overrides_for(methods)
    t0 = time.monotonic()
    if args.jobs <= 1:
        rows, info = _run_cells(overrides)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        groups = [methods[i :: args.jobs] for i in range(args.jobs) if methods[i :: args.jobs]]
        with ProcessPoolExecutor(len(groups), mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_run_cells, [overrides_for(g) for g in groups]))
        by_method: dict[str, list[dict]] = {}
        for table, info in results:
            for r in table:
                by_method.setdefault(r["method"], []).append(r)
        rows = [r for m in methods for r in by_method.get(m, [])]
    elapsed = time.monotonic() - t0
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        f"# Lockstep RTC evaluation: policy `{args.policy}`", "",
        f"Command: `{command}`", "",
        f"Equivalent app call: `python -m inference {' '.join(overrides)}`", "",
        f"Policy: `{args.policy}` (chunk H={info['chunk_size']}"
        + (f", checkpoint `{info['checkpoint']}`" if info.get("checkpoint") else "") + f"), cameras `{args.cameras}`, robot sim (lockstep, "
        f"{info['hz']:g} Hz), {args.episodes} episodes per cell (seeds {info['seed']}..{info['seed'] + args.episodes - 1}, the "
        f"same for every cell), max {args.max_steps} ticks, execute_horizon s={args.execute_horizon}, "
        f"{elapsed:.0f} s wall.", "",
        "discontinuity = max over dims |last executed old action - first new action| at each chunk boundary "
        "(robot units: rad / gripper 0..1, before the safety filter), mean and max over all boundaries; jerk = "
        "third difference of the commands sent (after the safety filter) / dt^3, max and RMS over ticks and "
        "dimensions (the max saturates at the slew limit: 4 * max_delta / dt^3).", "",
        "| method | d | success | discontinuity mean | discontinuity max | max jerk | RMS jerk | underruns | paused ticks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['delay_ticks']} | {r['success_rate']:.2f} | {r['discontinuity_mean']:.4f} | "
            f"{r['discontinuity_max']:.4f} | {r['max_jerk']:.1f} | {r['rms_jerk']:.1f} | {r['underruns']} | "
            f"{r['paused_ticks']} |"
        )
    out = RESULTS / f"lockstep_{args.policy}"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_paper_figure(rows, out.with_suffix(".png"), title=f"policy {args.policy}, s={args.execute_horizon}")
    print("\n".join(lines))
    print(f"plot: {out.with_suffix('.png')}")


def plot_paper_figure(rows: list[dict], path: Path, title: str = "") -> None:
    """The RTC paper's simulated-study figure, ours: success and discontinuity vs delay d per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["delay_ticks"]))
        d = [int(r["delay_ticks"]) for r in sel]
        axes[0].plot(d, [float(r["success_rate"]) for r in sel], marker="o", label=method)
        axes[1].plot(d, [float(r["discontinuity_mean"]) for r in sel], marker="o", label=method)
    axes[0].set(xlabel="inference delay d (ticks)", ylabel="success rate", ylim=(-0.05, 1.05))
    axes[1].set(xlabel="inference delay d (ticks)", ylabel="mean chunk-boundary discontinuity")
    axes[1].legend()
    fig.suptitle(f"Lockstep RTC study ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
