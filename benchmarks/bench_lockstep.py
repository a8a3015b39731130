"""Lockstep RTC table: success and chunk-boundary discontinuity vs simulated delay d.

    .venv/bin/python benchmarks/bench_lockstep.py --policy scripted --episodes 10
    .venv/bin/python benchmarks/bench_lockstep.py --policy flow --episodes 5 --cameras sim
    .venv/bin/python benchmarks/bench_lockstep.py --experiment rtc_study --jobs 2   # rtc_study.{md,csv,png}
    # the RTC paper's protocol: d = 0..4 at s = max(d, 1), then s = 2..5 at d = 1; 16 episodes side by side
    .venv/bin/python benchmarks/bench_lockstep.py ... --delays 0,1,2,3,4,1,1,1,1 --horizons 1,1,2,3,4,2,3,4,5 --parallel 16

Runs the app's ``algorithm=lockstep_eval`` (algorithms/lockstep_eval.py) in-process for methods
sync / naive / blend / rtc / rtc_hard and d in {0, 1, 2, 4, 8} on the lockstep sim robot, and
writes benchmarks/results/lockstep_<policy>.md (+ .csv) with the exact command. The scripted
expert replays one fixed plan indexed by the sim step, so its chunks agree with each other by
construction: with it the table checks the bookkeeping (no skipped/repeated actions, same success
at every d, no underrun while s + d <= H), not the guidance; the learned flow policy is what
separates the methods. ``--experiment rtc_study`` runs ``python -m inference +experiment=rtc_study``
(the delay-sensitive task and its checkpoint; every knob from the experiment unless given here)
and checks the study's three targets on the table it got (``goal_lines``).

A cell is (method, delay d, execute horizon s): ``--horizons`` pairs one s with each delay of
``--delays`` (``algorithm.execute_horizons``), else every cell runs ``--execute-horizon``. The figure
is shaped like the RTC paper's: success (Wilson 95% bars) vs d over the cells with s = max(d, 1) (or
every cell, when s is one value), success vs s at the delay swept over s, and the jump from plan vs
d. ``--parallel P`` runs each cell's episodes P at a time (``algorithm.parallel_episodes``: one
batched policy call for their requests; the same numbers as one at a time).
"""

from __future__ import annotations

import argparse
import csv
import json
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


def _exit_with_parent(parent_pid: int) -> None:
    """Pool worker start-up: a watcher thread ends the worker once this script is gone. A worker
    outlives a killed parent otherwise and goes on running its cell (seen: two workers kept a
    2-core machine busy for over an hour after their parent got SIGTERM)."""
    import threading

    def watch() -> None:
        while os.getppid() == parent_pid:
            time.sleep(1.0)
        os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


def _run_cells(overrides: list[str]) -> tuple[list[dict], dict]:
    """One lockstep_eval run (in its own process when --jobs > 1)."""
    from inference.app import compose_run
    from services.errors import AlgorithmFault

    run = compose_run(overrides, run_dir=Path(tempfile.mkdtemp(prefix="bench-lockstep-")))
    if os.environ.get("BENCH_LOCKSTEP_THREADS"):  # --jobs > 1: one core per job
        import torch

        torch.set_num_threads(int(os.environ["BENCH_LOCKSTEP_THREADS"]))
    try:
        table = run.execute()["table"]
    except AlgorithmFault as fault:  # the run ended in a fault: the cells it finished are in its results file
        print(f"fault in {overrides}: {fault.line()}", flush=True)
        table = json.loads((run.run_dir / f"{run.cfg.algorithm.results_name}.json").read_text())
    return table, _run_info(run)


def _run_info(run) -> dict:
    """What the table's header says about the run (policy, task, episodes, horizon)."""
    meta = run.policy_metadata
    cfg = run.cfg
    return {
        "chunk_size": meta.chunk_size,
        "hz": run.hz,
        "seed": run.seed,
        "checkpoint": cfg.policy.get("checkpoint"),
        "episodes": run.episodes,
        "max_steps": int(cfg.max_steps),
        "execute_horizon": int(cfg.algorithm.execute_horizon),
        "execute_horizons": list(cfg.algorithm.get("execute_horizons") or []) or None,
        "parallel_episodes": int(cfg.algorithm.get("parallel_episodes", 1)),
        # a registered policy's type, else the class a policy file names as its target
        "policy": str(cfg.policy.get("type") or str(cfg.policy.get("_target_")).rsplit(".", 1)[-1]),
        "task": str(cfg.robot.get("env_id") or cfg.robot.get("task") or "transfer_cube"),
        "robot": str(cfg.robot.get("name", "sim")),
        # what the policy sees (a state-only policy none, whatever the robot renders)
        "cameras": ", ".join(meta.camera_names) or "none",
    }


def _configured_cells(overrides: list[str]) -> tuple[list[str], list[tuple[int, int]]]:
    """The methods and (delay, execute horizon) cells the composed config (e.g. an experiment) asks
    for, to split them between jobs."""
    from hydra import compose, initialize_config_dir

    from inference.app import CONF_DIR
    from inference.schemas import register

    register()  # the structured-config schemas the algorithm files extend
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=overrides)
    delays = [int(d) for d in cfg.algorithm.delays_ticks]
    horizons = cfg.algorithm.get("execute_horizons") or [cfg.algorithm.execute_horizon] * len(delays)
    return [str(m) for m in cfg.algorithm.methods], list(zip(delays, (int(h) for h in horizons)))


def _reading_sections(report: Path) -> list[str]:
    """The hand-written part of an existing report (from its first ``## Reading`` heading on), which a
    ``--resume`` run keeps below the regenerated table: the cells it read still hold."""
    if not report.is_file():
        return []
    text = report.read_text().splitlines()
    start = next((i for i, line in enumerate(text) if line.startswith("## Reading")), None)
    return [] if start is None else ["", *text[start:]]


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
    ap.add_argument(
        "--horizons",
        default=None,
        help="one execute horizon s per delay of --delays (cells (d, s); the paper: 0,1,2,3,4 with 1,1,2,3,4)",
    )
    ap.add_argument("--parallel", type=int, default=None, help="episodes side by side per cell (default 1)")
    ap.add_argument("--jobs", type=int, default=1, help="processes; the (method, delay) cells are shared between them")
    ap.add_argument("--extra", nargs="*", default=[], help="more Hydra overrides")
    ap.add_argument(
        "--resume", action="store_true", help="keep the cells already in the results CSV and run only the missing ones"
    )
    ap.add_argument(
        "--variant",
        nargs="+",
        action="append",
        default=[],
        metavar=("LABEL METHOD", "OVERRIDE"),
        help="one more row set: METHOD run with these Hydra overrides (e.g. another checkpoint), "
        "labelled LABEL in the table; repeatable",
    )
    args = ap.parse_args()
    variants = []
    for spec in args.variant:
        if len(spec) < 2:
            ap.error("--variant needs LABEL METHOD [OVERRIDE ...]")
        variants.append((spec[0], spec[1], spec[2:]))
    if args.experiment is None:  # the plain table's defaults
        for key, value in (
            ("policy", "scripted"),
            ("cameras", "none"),
            ("episodes", 10),
            ("max_steps", 300),
            ("methods", "sync,naive,blend,rtc,rtc_hard"),
            ("delays", "0,1,2,4,8"),
            ("execute_horizon", 25),
        ):
            if getattr(args, key) is None:
                setattr(args, key, value)
    name = args.name or args.experiment or f"lockstep_{args.policy}"

    def overrides_for(methods: list[str] | None, extra: list[str] = ()) -> list[str]:
        given = [
            (args.policy, f"policy={args.policy}"),
            (args.cameras, f"cameras={args.cameras}"),
            (args.episodes, f"episodes={args.episodes}"),
            (args.max_steps, f"max_steps={args.max_steps}"),
            (methods, f"algorithm.methods=[{','.join(methods or [])}]"),
            (args.delays, f"algorithm.delays_ticks=[{args.delays}]"),
            (args.execute_horizon, f"algorithm.execute_horizon={args.execute_horizon}"),
            (args.horizons, f"algorithm.execute_horizons=[{args.horizons}]"),
            (args.parallel, f"algorithm.parallel_episodes={args.parallel}"),
        ]
        return [
            f"+experiment={args.experiment}" if args.experiment else "algorithm=lockstep_eval",
            *(o for value, o in given if value is not None),
            "logger=none",
            *(["robot.render_in_lockstep=false"] if args.cameras == "none" else []),
            *args.extra,
            *extra,
        ]

    configured, grid = _configured_cells(overrides_for(None))
    methods = args.methods.split(",") if args.methods else configured
    overrides = overrides_for(methods)
    per_cell = [(None, m, []) for m in methods] + variants
    out = RESULTS / name
    done: dict[tuple[str, int, int], dict] = {}
    default_s = grid[0][1] if len({h for _, h in grid}) == 1 else None
    # every finished cell is also written here at once, so a study cut short resumes (--resume) from it
    partial = out.with_name(out.name + ".partial.csv")
    # cells already in the results file, and those a cut-short run left, are kept
    for path in (out.with_suffix(".csv"), partial) if args.resume else ():
        if not path.is_file():
            continue
        for r in csv.DictReader(path.open()):
            r = {k: csv_value(k, v) for k, v in r.items()}
            # a row written before the s column: its run's one execute horizon
            s = int(r["execute_horizon"]) if r.get("execute_horizon") not in (None, "") else default_s
            done[(r["method"], int(r["delay_ticks"]), s)] = {**r, "execute_horizon": s, "fault": r.get("fault") or ""}
    # One work item (label, overrides) per (method or variant, delay, horizon): the pool stays balanced, a
    # fault (which ends a run) costs only its own cell, and a label renames the rows of a variant's method.
    jobs_in = [
        (
            label,
            [
                *overrides_for([m], extra),
                f"algorithm.delays_ticks=[{d}]",
                *([f"algorithm.execute_horizons=[{h}]"] if args.horizons else []),
            ],
        )
        for label, m, extra in per_cell
        for d, h in grid
        if ((label or m), d, h) not in done
    ]
    t0 = time.monotonic()
    if args.jobs <= 1 and not variants and not args.resume:
        rows, info = _run_cells(overrides)
    else:
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        workers = max(1, min(args.jobs, len(jobs_in)))
        os.environ["BENCH_LOCKSTEP_THREADS"] = str(max(1, (os.cpu_count() or 1) // workers))
        with ProcessPoolExecutor(
            workers, mp_context=mp.get_context("spawn"), initializer=_exit_with_parent, initargs=(os.getpid(),)
        ) as pool:
            futures = [pool.submit(_run_cells, o) for _, o in jobs_in]
            results = []
            finished = list(done.values())
            for (label, _), f in zip(jobs_in, futures):  # printed in order, so a cut-short run keeps what it had
                results.append((label, f.result()))
                finished += [{**r, "method": label or r["method"]} for r in results[-1][1][0]]
                write_rows(partial, finished)
                for r in results[-1][1][0]:
                    print(
                        f"row {label or r['method']} d={r['delay_ticks']} s={r['execute_horizon']} episodes={r['episodes']} "
                        f"success={r['success_rate']:.3f} disc={r['discontinuity_mean']:.4f} "
                        f"t={time.monotonic() - t0:.0f}s",
                        flush=True,
                    )
        info = None
        if not results:  # every cell is in the results file: only the table, targets and plot are rewritten
            from inference.app import compose_run

            print("nothing to run: every cell is already in the results file (--resume); rewriting the report")
            info = _run_info(compose_run(overrides, run_dir=Path(tempfile.mkdtemp(prefix="bench-lockstep-"))))
        cells = dict(done)
        for label, (table, table_info) in results:
            if label is None or info is None:
                info = table_info
            for r in table:
                cells[(label or r["method"], int(r["delay_ticks"]), int(r["execute_horizon"]))] = {
                    **r,
                    "method": label or r["method"],
                }
        rows = [cells[(m, d, h)] for m in [*methods, *(v[0] for v in variants)] for d, h in grid if (m, d, h) in cells]
    elapsed = time.monotonic() - t0
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    gated = any(math.isfinite(stale_gate_rate(r)) for r in rows)
    lines = [
        f"# Lockstep RTC evaluation: policy `{info['policy']}` on `{info['task']}`",
        "",
        f"Command: `{command}`",
        "",
        f"Equivalent app call: `python -m inference {' '.join(overrides)}`",
        "",
        *(
            [
                "Variant rows (the same call with one method and these overrides, relabelled): "
                + "; ".join(f"`{label}` = `{m}` with `{' '.join(extra)}`" for label, m, extra in variants),
                "",
            ]
            if variants
            else []
        ),
        f"Policy: `{info['policy']}` (chunk H={info['chunk_size']}"
        + (f", checkpoint `{info['checkpoint']}`" if info.get("checkpoint") else "")
        + f"), cameras `{info['cameras']}`, robot `{info.get('robot', 'sim')}` task `{info['task']}` (lockstep, {info['hz']:g} Hz), "
        f"{info['episodes']} episodes per cell (seeds {info['seed']}..{info['seed'] + info['episodes'] - 1}, the "
        f"same for every cell), max {info['max_steps']} ticks, "
        + (
            "execute horizon s per cell (column s), "
            if info.get("execute_horizons")
            else f"execute_horizon s={info['execute_horizon']}, "
        )
        + f"{elapsed:.0f} s wall ({args.jobs} job(s), {info.get('parallel_episodes', 1)} episode(s) side by side "
        "per cell).",
        "",
        "s = the execute horizon: actions of each chunk executed before the next one is swapped in (the next "
        "inference starts once s actions of the current chunk have run; the RTC paper's s, see docs/rtc.md).",
        "",
        "time to success = mean over the successful episodes (s; sync's pauses included). time to end = mean "
        "over every episode of the time to success or, for a failure, to the episode's end, +- the half-width "
        "of its 95% interval (normal approximation): on a task whose episodes end at success, the speed "
        "measure that failing cannot improve. discontinuity = max "
        "over dims |last executed old action - first new action| at each chunk boundary "
        "(robot units: rad / gripper 0..1 on the arms, the env's action units on robot=gym; before the safety filter), mean and max over all boundaries; jerk = "
        "third difference of the commands sent (after the safety filter) / dt^3, max and RMS over ticks and "
        "dimensions (the max saturates at the slew limit: 4 * max_delta / dt^3). jump from plan = max over dims "
        "|first new action - the action the old chunk planned for the same tick| at the same boundaries: the "
        "discontinuity without the arm's ordinary motion over one tick (a chunk that continues the old plan "
        "exactly scores 0 on it, but its per-tick step on the discontinuity; blank where d + s = H: the old "
        "chunk has no action planned for the new chunk's first tick).",
        "",
        "success 95% = the Wilson score interval of the success rate over the cell's episodes.",
        "",
        *(
            [
                "stale gate = the share of a cell's chunks for which `select`'s stale gate (`policy.select_stale_gate`) "
                "found the previous chunk an outlier among the K samples and ran the first sample unselected.",
                "",
            ]
            if gated
            else []
        ),
        "| method | d | s | episodes | success | success 95% | jump from plan mean | time to success (s) "
        "| time to end (s) | discontinuity mean | discontinuity max | max jerk | RMS jerk | underruns | rejected | paused ticks | fault |"
        + (" stale gate |" if gated else ""),
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
        + ("---:|" if gated else ""),
    ]
    for r in rows:
        lo, hi = wilson_interval(round(r["success_rate"] * r["episodes"]), int(r["episodes"]))
        lines.append(
            f"| {r['method']} | {r['delay_ticks']} | {r.get('execute_horizon', '')} | {r['episodes']} | "
            f"{r['success_rate']:.2f} | {lo:.2f}-{hi:.2f} | {fixed(number(r.get('plan_jump_mean')), 4)} | "
            f"{r['time_to_success_s']:.2f} | {time_to_end(r)} | {r['discontinuity_mean']:.4f} | "
            f"{r['discontinuity_max']:.4f} | {r['max_jerk']:.1f} | "
            f"{r['rms_jerk']:.1f} | {r['underruns']} | "
            f"{r['rejected_chunks']} | {r['paused_ticks']} | {r.get('fault') or ''} |"
            + (f" {fixed(stale_gate_rate(r), 2)} |" if gated else "")
        )
    goals = goal_lines(delay_sweep(rows))
    if goals:
        lines += ["", "## The study's targets, checked on this table", "", *goals]
    out = RESULTS / name
    out.parent.mkdir(parents=True, exist_ok=True)
    kept = _reading_sections(out.with_suffix(".md")) if args.resume else []
    out.with_suffix(".md").write_text("\n".join([*lines, *kept]) + "\n")
    write_rows(out.with_suffix(".csv"), rows)
    partial.unlink(missing_ok=True)
    s_text = "s per cell" if info.get("execute_horizons") else f"s={info['execute_horizon']}"
    plot_paper_figure(
        rows,
        out.with_suffix(".png"),
        title=f"{info['policy']} on {info['task']}, {s_text}, {info['episodes']} eps/cell",
    )
    print("\n".join(lines))
    print(f"plot: {out.with_suffix('.png')}")


# The guidance of the rows that make the next chunk agree with the previous one: the inpainting methods
# (VJP, identity, trained prefix), and select (which picks the agreeing chunk among plain samples instead
# of inpainting it). Not blend, naive or sync. Read from each row, so a variant row counts by its method.
CONSISTENCY_GUIDANCE = frozenset({"vjp", "identity", "trained", "select"})


TEXT_COLUMNS = ("method", "guidance", "schedule", "fault")


def write_rows(path: Path, rows: list[dict]) -> None:
    """A results CSV. Kept cells may predate a column the new ones have (or the reverse): the union of
    the columns, blanks where absent."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(dict.fromkeys(k for r in rows for k in r)), restval="")
        writer.writeheader()
        writer.writerows(rows)


def time_to_end(row: dict) -> str:
    """``mean +- half-width`` of the cell's time to end (blank for rows written before it existed)."""
    mean, half = number(row.get("time_to_end_s")), number(row.get("time_to_end_ci95_s"))
    if not math.isfinite(mean):
        return ""
    return f"{mean:.2f} +- {half:.2f}" if math.isfinite(half) else f"{mean:.2f}"


def csv_value(column: str, text: str | None) -> str | int | float:
    """One cell of a results CSV read back for ``--resume``: text columns as they are, numbers as
    int or float, and a blank (a column that a kept row predates) as ''."""
    if column in TEXT_COLUMNS or text is None or text == "":
        return "" if text is None else text
    try:
        return int(text)
    except ValueError:
        return float(text)


def number(value: object) -> float:
    """A row's numeric cell as a float: NaN where it is missing (a cell kept from a results file
    written before the column existed: absent, blank or 'nan')."""
    try:
        return float(value if value not in (None, "") else "nan")
    except (TypeError, ValueError):
        return float("nan")


def fixed(value: float, digits: int) -> str:
    """A table cell: the number to ``digits`` places, blank where it is NaN (no such measurement)."""
    return f"{value:.{digits}f}" if math.isfinite(value) else ""


def stale_gate_rate(row: dict) -> float:
    """A row's ``select_stale_rate`` as a float: NaN where it has none (another method, or a cell
    kept from a results file written before the column existed: blank or 'nan' in the CSV)."""
    return number(row.get("select_stale_rate"))


def wilson_interval(successes: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% Wilson score interval of a success rate from ``n`` episodes (the spread one cell's
    success has from its episode draw alone: with 30 episodes about +-0.15 around 0.8)."""
    if n <= 0:
        return float("nan"), float("nan")
    p = successes / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5) / (1 + z * z / n)
    return max(0.0, min(p, centre - half)), min(1.0, max(p, centre + half))  # p itself despite rounding


def goal_lines(rows: list[dict]) -> list[str]:
    """The study's targets, computed from the table (a target whose cells are missing is left out).

    Moving-target task: naive at d=8 >= 20 points below naive at d=0; the best RTC method at d=8
    within 5 points of sync at d=0, with a mean discontinuity <= 1/3 of naive's at d=8. Shift task:
    one RTC method >= naive at every d, with a discontinuity at d=8 below naive's. Both are printed
    for both tasks; the results file says which one the task is judged on. "RTC method" = the
    rows whose guidance is in ``CONSISTENCY_GUIDANCE`` (variants included), not blend."""
    cell = {(r["method"], int(r["delay_ticks"])): r for r in rows}
    guided = list(dict.fromkeys(r["method"] for r in rows if str(r.get("guidance", "")) in CONSISTENCY_GUIDANCE))
    success = lambda m, d: float(cell[(m, d)]["success_rate"])  # noqa: E731
    disc = lambda m, d: float(cell[(m, d)]["discontinuity_mean"])  # noqa: E731
    jump = lambda m, d: number(cell[(m, d)].get("plan_jump_mean"))  # noqa: E731
    mark = lambda ok: "**met**" if ok else "**missed**"  # noqa: E731
    lines = []
    if ("naive", 0) in cell and ("naive", 8) in cell:
        drop = success("naive", 0) - success("naive", 8)
        lines.append(
            f"- Delay-sensitive (naive d=8 >= 20 points below naive d=0): naive {success('naive', 0):.2f} at "
            f"d=0, {success('naive', 8):.2f} at d=8, {100 * drop:+.0f} points: {mark(drop >= 0.20 - 1e-9)}."
        )
    at8 = [m for m in guided if (m, 8) in cell]
    if at8 and ("sync", 0) in cell and ("naive", 8) in cell:
        best = max(at8, key=lambda m: (success(m, 8), -disc(m, 8)))
        sync0, naive_disc = success("sync", 0), disc("naive", 8)
        lines += [
            f"- Best RTC method at d=8 within 5 points of sync at d=0: {best} {success(best, 8):.2f} vs sync {sync0:.2f}: "
            f"{mark(success(best, 8) >= sync0 - 0.05 - 1e-9)}.",
            f"- Its mean discontinuity <= 1/3 of naive's at d=8: {disc(best, 8):.4f} vs naive {naive_disc:.4f} "
            f"({disc(best, 8) / naive_disc:.2f}x): {mark(disc(best, 8) <= naive_disc / 3 + 1e-12)}.",
        ]
        if math.isfinite(jump(best, 8)) and math.isfinite(jump("naive", 8)) and jump("naive", 8) > 0:
            ratio = jump(best, 8) / jump("naive", 8)
            lines.append(
                f"- The same on the jump from plan (the ordinary per-tick motion left out): {jump(best, 8):.4f} vs "
                f"naive {jump('naive', 8):.4f} ({ratio:.2f}x): {mark(ratio <= 1 / 3 + 1e-12)}."
            )
    delays = sorted({d for m, d in cell if m == "naive"})
    full = [m for m in guided if all((m, d) in cell for d in delays)]
    if delays and full and 8 in delays:
        margin = lambda m: min(success(m, d) - success("naive", d) for d in delays)  # noqa: E731
        best = max(full, key=lambda m: (margin(m), -disc(m, 8)))
        worst_d = min(delays, key=lambda d: success(best, d) - success("naive", d))
        lines += [
            f"- One RTC method >= naive at every d ({', '.join(map(str, delays))}): best {best}, its worst margin "
            f"{100 * margin(best):+.0f} points (d={worst_d}): {mark(margin(best) >= -1e-9)}.",
            f"- Its discontinuity at d=8 below naive's: {disc(best, 8):.4f} vs {disc('naive', 8):.4f}: "
            f"{mark(disc(best, 8) < disc('naive', 8))}.",
        ]
    return lines


def _horizon(row: dict) -> int | None:
    value = number(row.get("execute_horizon"))
    return int(value) if math.isfinite(value) else None


def delay_sweep(rows: list[dict]) -> list[dict]:
    """One row per (method, d): the cells at the paper's s = max(d, 1) where a table pairs several s
    with a delay, else every row (a table with one s per delay, e.g. one configured horizon)."""
    per_cell: dict[tuple[str, int], list[dict]] = {}
    for r in rows:
        per_cell.setdefault((r["method"], int(r["delay_ticks"])), []).append(r)
    if all(len(v) == 1 for v in per_cell.values()):
        return list(rows)
    return [r for r in rows if _horizon(r) == max(int(r["delay_ticks"]), 1)]


def horizon_sweep(rows: list[dict]) -> tuple[int | None, list[dict]]:
    """The delay swept over s (the one with the most execute horizons, at least two) and its rows."""
    horizons: dict[int, set[int]] = {}
    for r in rows:
        if _horizon(r) is not None:
            horizons.setdefault(int(r["delay_ticks"]), set()).add(_horizon(r))
    swept = [d for d, hs in horizons.items() if len(hs) >= 2]
    if not swept:
        return None, []
    d = max(swept, key=lambda k: (len(horizons[k]), -k))
    return d, [r for r in rows if int(r["delay_ticks"]) == d and _horizon(r) is not None]


def _success_bars(sel: list[dict]) -> tuple[list[float], list[list[float]]]:
    """Success rates and their Wilson 95% intervals as error-bar offsets."""
    rates, lows, highs = [], [], []
    for r in sel:
        rate, n = float(r["success_rate"]), int(r["episodes"])
        lo, hi = wilson_interval(round(rate * n), n)
        rates.append(rate)
        lows.append(max(0.0, rate - lo))
        highs.append(max(0.0, hi - rate))
    return rates, [lows, highs]


def plot_paper_figure(rows: list[dict], path: Path, title: str = "") -> None:
    """The RTC paper's simulated-study figure, ours: solve rate vs delay d (at s = max(d, 1) where the
    table pairs several s with a delay), solve rate vs execution horizon s at the delay swept over s
    (when there is one), the time to end vs d (when the rows have it) and the jump from plan vs d;
    Wilson 95% intervals (normal ones for the time) as bars."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    by_d = delay_sweep(rows)
    swept_d, by_s = horizon_sweep(rows)
    times = [t for t in (number(r.get("time_to_end_s")) for r in by_d) if math.isfinite(t)]
    timed = len(times) > 1 and max(times) - min(times) > 1e-6  # a task judged at the episode's end: all equal
    panels = 2 + bool(by_s) + timed
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4))
    time_axis = axes[-2] if timed else None
    methods = list(dict.fromkeys(r["method"] for r in rows))
    for method in methods:
        sel = sorted((r for r in by_d if r["method"] == method), key=lambda r: int(r["delay_ticks"]))
        if sel:
            d = [int(r["delay_ticks"]) for r in sel]
            rates, bars = _success_bars(sel)
            axes[0].errorbar(d, rates, yerr=bars, marker="o", capsize=3, label=method)
            axes[-1].plot(d, [number(r.get("plan_jump_mean")) for r in sel], marker="o", label=method)
            if time_axis is not None:
                time_axis.errorbar(
                    d,
                    [number(r.get("time_to_end_s")) for r in sel],
                    yerr=[number(r.get("time_to_end_ci95_s")) for r in sel],
                    marker="o",
                    capsize=3,
                    label=method,
                )
        if by_s:
            sel = sorted((r for r in by_s if r["method"] == method), key=_horizon)
            if sel:
                rates, bars = _success_bars(sel)
                axes[1].errorbar([_horizon(r) for r in sel], rates, yerr=bars, marker="o", capsize=3, label=method)
    paired = len(by_d) < len(rows)
    axes[0].set(
        xlabel="inference delay d (ticks)" + (", s = max(d, 1)" if paired else ""),
        ylabel="solve rate",
        ylim=(-0.05, 1.05),
    )
    if by_s:
        axes[1].set(xlabel=f"execution horizon s (ticks), d = {swept_d}", ylabel="solve rate", ylim=(-0.05, 1.05))
    axes[-1].set(xlabel="inference delay d (ticks)", ylabel="mean jump from plan at chunk boundaries")
    if time_axis is not None:
        time_axis.set(xlabel="inference delay d (ticks)", ylabel="time to end (s): success or episode end")
    axes[0].legend()
    fig.suptitle(f"Lockstep RTC study ({title})")
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
