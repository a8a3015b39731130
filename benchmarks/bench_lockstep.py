"""Lockstep RTC table: success and chunk-boundary discontinuity vs simulated delay d.

    .venv/bin/python benchmarks/bench_lockstep.py --policy scripted --episodes 10
    .venv/bin/python benchmarks/bench_lockstep.py --policy flow --episodes 5 --cameras sim
    .venv/bin/python benchmarks/bench_lockstep.py --experiment rtc_study --jobs 2   # rtc_study.{md,csv,png}

Runs the app's ``algorithm=lockstep_eval`` (algorithms/rtc/lockstep.py) in-process for methods
sync / naive / blend / rtc / rtc_hard and d in {0, 1, 2, 4, 8} on the lockstep sim robot, and
writes benchmarks/results/lockstep_<policy>.md (+ .csv) with the exact command. The scripted
expert replays one fixed plan indexed by the sim step, so its chunks agree with each other by
construction: with it the table checks the bookkeeping (no skipped/repeated actions, same success
at every d, no underrun while s + d <= H), not the guidance; the learned flow policy is what
separates the methods. ``--experiment rtc_study`` runs ``python -m inference +experiment=rtc_study``
(the delay-sensitive task and its checkpoint; every knob from the experiment unless given here)
and checks the study's three targets on the table it got (``goal_lines``).
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
    if os.environ.get("BENCH_LOCKSTEP_THREADS"):  # --jobs > 1: one core per job
        import torch

        torch.set_num_threads(int(os.environ["BENCH_LOCKSTEP_THREADS"]))
    summary = run.execute()
    meta = run.policy_metadata
    cfg = run.cfg
    return summary["table"], {"chunk_size": meta.chunk_size, "hz": run.hz, "seed": run.seed,
                              "checkpoint": cfg.policy.get("checkpoint"), "episodes": run.episodes,
                              "max_steps": int(cfg.max_steps), "execute_horizon": int(cfg.algorithm.execute_horizon),
                              "policy": str(cfg.policy.get("type")), "task": str(cfg.robot.get("task", "transfer_cube")),
                              "cameras": "none" if not cfg.robot.get("render_in_lockstep", True) else "sim"}


def _configured_methods(overrides: list[str]) -> list[str]:
    """The methods the composed config (e.g. an experiment) asks for, to split them between jobs."""
    from hydra import compose, initialize_config_dir

    from inference.app import CONF_DIR

    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    return [str(m) for m in cfg.algorithm.methods]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--experiment", default=None, help="a conf/experiment/ file: every knob from it unless given")
    ap.add_argument("--name", default=None, help="results file stem (default lockstep_<policy> or the experiment)")
    ap.add_argument("--policy", default=None, help="default scripted (not with --experiment)")
    ap.add_argument("--cameras", default=None, help="default none")
    ap.add_argument("--episodes", type=int, default=None, help="default 10")
    ap.add_argument("--max-steps", type=int, default=None, help="default 300")
    ap.add_argument("--methods", default=None, help="default sync,naive,blend,rtc,rtc_hard")
    ap.add_argument("--delays", default=None, help="default 0,1,2,4,8")
    ap.add_argument("--execute-horizon", type=int, default=None, help="default 25")
    ap.add_argument("--jobs", type=int, default=1, help="processes; methods are split between them")
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    args = ap.parse_args()
    if args.experiment is None:  # the plain table's defaults
        for key, value in (("policy", "scripted"), ("cameras", "none"), ("episodes", 10), ("max_steps", 300),
                           ("methods", "sync,naive,blend,rtc,rtc_hard"), ("delays", "0,1,2,4,8"),
                           ("execute_horizon", 25)):
            if getattr(args, key) is None:
                setattr(args, key, value)
    name = args.name or args.experiment or f"lockstep_{args.policy}"

    def overrides_for(methods: list[str] | None) -> list[str]:
        given = [
            (args.policy, f"policy={args.policy}"), (args.cameras, f"cameras={args.cameras}"),
            (args.episodes, f"episodes={args.episodes}"), (args.max_steps, f"max_steps={args.max_steps}"),
            (methods, f"algorithm.methods=[{','.join(methods or [])}]"),
            (args.delays, f"algorithm.delays_ticks=[{args.delays}]"),
            (args.execute_horizon, f"algorithm.execute_horizon={args.execute_horizon}"),
        ]
        return [
            f"+experiment={args.experiment}" if args.experiment else "algorithm=lockstep_eval",
            *(o for value, o in given if value is not None), "logger=none",
            *(["robot.render_in_lockstep=false"] if args.cameras == "none" else []),
            *args.extra,
        ]

    methods = args.methods.split(",") if args.methods else _configured_methods(overrides_for(None))
    overrides = overrides_for(methods)
    t0 = time.monotonic()
    if args.jobs <= 1:
        rows, info = _run_cells(overrides)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        groups = [methods[i :: args.jobs] for i in range(args.jobs) if methods[i :: args.jobs]]
        os.environ["BENCH_LOCKSTEP_THREADS"] = str(max(1, (os.cpu_count() or 1) // len(groups)))
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
        f"# Lockstep RTC evaluation: policy `{info['policy']}` on `{info['task']}`", "",
        f"Command: `{command}`", "",
        f"Equivalent app call: `python -m inference {' '.join(overrides)}`", "",
        f"Policy: `{info['policy']}` (chunk H={info['chunk_size']}"
        + (f", checkpoint `{info['checkpoint']}`" if info.get("checkpoint") else "")
        + f"), cameras `{info['cameras']}`, robot sim task `{info['task']}` (lockstep, {info['hz']:g} Hz), "
        f"{info['episodes']} episodes per cell (seeds {info['seed']}..{info['seed'] + info['episodes'] - 1}, the "
        f"same for every cell), max {info['max_steps']} ticks, execute_horizon s={info['execute_horizon']}, "
        f"{elapsed:.0f} s wall ({args.jobs} job(s)).", "",
        "time to success = mean over the successful episodes (s; sync's pauses included). discontinuity = max "
        "over dims |last executed old action - first new action| at each chunk boundary "
        "(robot units: rad / gripper 0..1, before the safety filter), mean and max over all boundaries; jerk = "
        "third difference of the commands sent (after the safety filter) / dt^3, max and RMS over ticks and "
        "dimensions (the max saturates at the slew limit: 4 * max_delta / dt^3).", "",
        "| method | d | episodes | success | time to success (s) | discontinuity mean | discontinuity max | max jerk "
        "| RMS jerk | underruns | rejected | paused ticks |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['method']} | {r['delay_ticks']} | {r['episodes']} | {r['success_rate']:.2f} | "
            f"{r['time_to_success_s']:.2f} | {r['discontinuity_mean']:.4f} | "
            f"{r['discontinuity_max']:.4f} | {r['max_jerk']:.1f} | {r['rms_jerk']:.1f} | {r['underruns']} | "
            f"{r['rejected_chunks']} | {r['paused_ticks']} |"
        )
    goals = goal_lines(rows)
    if goals:
        lines += ["", "## The study's targets, checked on this table", "", *goals]
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    with out.with_suffix(".csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    plot_paper_figure(rows, out.with_suffix(".png"),
                      title=f"{info['policy']} on {info['task']}, s={info['execute_horizon']}, {info['episodes']} eps/cell")
    print("\n".join(lines))
    print(f"plot: {out.with_suffix('.png')}")


def goal_lines(rows: list[dict]) -> list[str]:
    """The delay-sensitive study's targets, computed from the table (empty when its cells are missing):
    naive at d=8 >= 20 points below naive at d=0; the better of rtc / rtc_trained at d=8 within
    5 points of sync at d=0, with a mean discontinuity <= 1/3 of naive's at d=8."""
    cell = {(r["method"], int(r["delay_ticks"])): r for r in rows}
    need = [("naive", 0), ("naive", 8), ("sync", 0)]
    candidates = [m for m in ("rtc", "rtc_trained") if (m, 8) in cell]
    if any(k not in cell for k in need) or not candidates:
        return []
    mark = lambda ok: "**met**" if ok else "**missed**"  # noqa: E731
    naive0, naive8, sync0 = (float(cell[k]["success_rate"]) for k in need)
    drop = naive0 - naive8
    best = max(candidates, key=lambda m: (float(cell[(m, 8)]["success_rate"]), -float(cell[(m, 8)]["discontinuity_mean"])))
    best_s, best_disc = float(cell[(best, 8)]["success_rate"]), float(cell[(best, 8)]["discontinuity_mean"])
    naive_disc = float(cell[("naive", 8)]["discontinuity_mean"])
    return [
        f"- Delay-sensitive (naive d=8 >= 20 points below naive d=0): naive {naive0:.2f} at d=0, {naive8:.2f} at d=8, "
        f"{100 * drop:+.0f} points: {mark(drop >= 0.20 - 1e-9)}.",
        f"- Best of rtc / rtc_trained at d=8 within 5 points of sync at d=0: {best} {best_s:.2f} vs sync {sync0:.2f}: "
        f"{mark(best_s >= sync0 - 0.05 - 1e-9)}.",
        f"- Its mean discontinuity <= 1/3 of naive's at d=8: {best_disc:.4f} vs naive {naive_disc:.4f} "
        f"({best_disc / naive_disc:.2f}x): {mark(best_disc <= naive_disc / 3 + 1e-12)}.",
    ]


def plot_paper_figure(rows: list[dict], path: Path, title: str = "") -> None:
    """The RTC paper's simulated-study figure, ours: success and discontinuity vs delay d per method."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with_time = all("time_to_success_s" in r for r in rows)
    fig, axes = plt.subplots(1, 3 if with_time else 2, figsize=(16 if with_time else 11, 4))
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = sorted((r for r in rows if r["method"] == method), key=lambda r: int(r["delay_ticks"]))
        d = [int(r["delay_ticks"]) for r in sel]
        axes[0].plot(d, [float(r["success_rate"]) for r in sel], marker="o", label=method)
        axes[1].plot(d, [float(r["discontinuity_mean"]) for r in sel], marker="o", label=method)
        if with_time:
            axes[2].plot(d, [float(r["time_to_success_s"]) for r in sel], marker="o", label=method)
    axes[0].set(xlabel="inference delay d (ticks)", ylabel="success rate", ylim=(-0.05, 1.05))
    axes[1].set(xlabel="inference delay d (ticks)", ylabel="mean chunk-boundary discontinuity")
    if with_time:
        axes[2].set(xlabel="inference delay d (ticks)", ylabel="time to success (s, successful episodes)")
    axes[1].legend()
    fig.suptitle(f"Lockstep RTC study ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
