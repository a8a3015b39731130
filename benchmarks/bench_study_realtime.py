"""A study task in real time: naive async vs RTC methods at the policy's real inference latency
(the real-time half of the RTC study; the lockstep tables are rtc_study.md and rtc_study_slide.md).

    .venv/bin/python benchmarks/bench_study_realtime.py --episodes 10 --rounds 2
    .venv/bin/python benchmarks/bench_study_realtime.py --experiment slide_task --name rtc_study_slide_realtime \
        --episodes 5 --rounds 1 --modes naive,rtc_identity,rtc --mode rtc_trained_robust algorithm.guidance=trained

Each round runs ``python -m inference +experiment=<experiment> <mode's overrides> episodes=N
seed=S`` once per mode (``naive`` = ``guidance=none``, ``rtc`` = ``vjp``, ``rtc_trained`` = ``trained``,
any other ``lockstep_eval`` method name but ``sync`` likewise, ``rtc_capped`` with
the ``guided_cap_ticks`` of ``conf/experiment/rtc_study.yaml``; ``--mode LABEL OVERRIDE...`` adds one, e.g. another checkpoint),
the modes alternating and every mode on the same seeds within a round (round r: seeds
``1000 * (r + 1)`` on, disjoint from the training seeds 10000+ and from the lockstep study's 0..19).
Everything else is the experiment's and the app's defaults (for the ALOHA tasks: sim robot in real
time, 3 cameras, execute horizon 12, episodes stop at success, the plausibility check on). Reads each
run's ``summary.json``. Results: ``benchmarks/results/<name>.md`` (+ .json; default rtc_study_realtime).

``--lockstep EXPERIMENT`` adds the lockstep half beside it (real time agrees with lockstep?): per mode
that is a lockstep method, the lockstep cell with d = the mode's mean measured delay rounded and s = the
real-time execute horizon, ``--lockstep-episodes`` episodes on the real-time rounds' seeds onward, and
both success rates with their 95% Wilson intervals:

    .venv/bin/python benchmarks/bench_study_realtime.py --experiment gym_pendulum_task --lockstep gym_pendulum \
        --name gym_pendulum_realtime --episodes 30 --rounds 1 --modes naive,rtc --lockstep-episodes 100
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT))
from bench_lockstep import wilson_interval  # noqa: E402
from omegaconf import OmegaConf  # noqa: E402

from algorithms.lockstep_eval import METHODS  # noqa: E402  (the lockstep study's method names)

# rtc_capped's cap, read from the lockstep study's experiment so that both halves of the study use one value
CAPPED_TICKS = int(OmegaConf.load(ROOT / "conf" / "experiment" / "rtc_study.yaml").algorithm.guided_cap_ticks)


def _mode_overrides(method: str) -> list[str]:
    """A lockstep method's guidance as real-time overrides (sync has no real-time twin: it is sequential)."""
    guidance, schedule = METHODS[method]
    return [
        f"algorithm.guidance={guidance}",
        *([f"algorithm.schedule={schedule}"] if schedule else []),
        *([f"algorithm.guided_cap_ticks={CAPPED_TICKS}"] if method == "rtc_capped" else []),
    ]


MODES = {m: _mode_overrides(m) for m in METHODS if m not in ("sync", "custom")}
KEYS = (
    "success_rate",
    "successes",
    "episodes",
    "inference_latency_ms_p50",
    "inference_latency_ms_p95",
    "d_actual_mean",
    "discontinuity_mean",
    "discontinuity_max",
    "rejected_chunks",
    "underruns",
)


def run_mode(mode: str, overrides: list[str], experiment: str, episodes: int, seed: int, workdir: Path) -> dict:
    run_dir = workdir / f"{mode}_{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "inference",
        f"+experiment={experiment}",
        *overrides,
        f"episodes={episodes}",
        f"seed={seed}",
        "report=false",
        f"hydra.run.dir={run_dir}",
    ]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=episodes * 120 + 300)
    out: dict = {
        "mode": mode,
        "overrides": " ".join(overrides),
        "seed": seed,
        "returncode": proc.returncode,
        "wall_s": round(time.monotonic() - t0, 1),
    }
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out.update({k: s.get(k) for k in KEYS})
        out["fault"] = (s.get("fault") or {}).get("kind")
    resolved = run_dir / "config_resolved.yaml"
    if resolved.is_file():
        c = OmegaConf.load(resolved)
        out.update(execute_horizon=int(c.algorithm.execute_horizon), robot=str(c.robot.name), hz=float(c.robot.hz))
    return out


def run_lockstep_cell(
    method: str, delay: int, horizon: int, experiment: str, episodes: int, seed: int, workdir: Path
) -> dict:
    """One lockstep cell (method, d, s) of ``experiment`` on seeds ``seed..``: its row of the study table."""
    run_dir = workdir / f"lockstep_{method}_{time.monotonic_ns()}"
    cmd = [
        sys.executable,
        "-m",
        "inference",
        f"+experiment={experiment}",
        f"algorithm.methods=[{method}]",
        f"algorithm.delays_ticks=[{delay}]",
        f"algorithm.execute_horizons=[{horizon}]",
        "algorithm.results_name=cell",
        f"episodes={episodes}",
        f"seed={seed}",
        "report=false",
        f"hydra.run.dir={run_dir}",
    ]
    t0 = time.monotonic()
    # lockstep does not depend on the clock: lowest priority, so that it does not disturb a real-time run beside it
    proc = subprocess.run(
        cmd, cwd=ROOT, capture_output=True, text=True, timeout=episodes * 60 + 300, preexec_fn=lambda: os.nice(19)
    )
    out: dict = {
        "mode": method,
        "delay_ticks": delay,
        "execute_horizon": horizon,
        "seed": seed,
        "returncode": proc.returncode,
        "wall_s": round(time.monotonic() - t0, 1),
        "overrides": " ".join(cmd[3:-1]),
    }
    table = run_dir / "cell.json"
    if proc.returncode != 0 or not table.is_file():
        out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
        return out
    row = json.loads(table.read_text())
    row = (row.get("rows") or row)[0] if isinstance(row, dict) else row[0]
    out.update({k: row.get(k) for k in ("episodes", "success_rate", "plan_jump_mean", "discontinuity_mean")})
    out["successes"] = round(float(row["success_rate"]) * int(row["episodes"]))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--modes", default="naive,rtc,rtc_trained", help=f"of {', '.join(MODES)}")
    ap.add_argument(
        "--mode",
        nargs="+",
        action="append",
        default=[],
        metavar=("LABEL", "OVERRIDE"),
        help="one more mode: its label and Hydra overrides; repeatable",
    )
    ap.add_argument("--experiment", default="shift_task", help="a conf/experiment/ file (the task and its policy)")
    ap.add_argument("--name", default="rtc_study_realtime", help="results file stem")
    ap.add_argument("--lockstep", default=None, help="a lockstep experiment: run the matching cell per mode beside")
    ap.add_argument("--lockstep-episodes", type=int, default=100)
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    modes = args.modes.split(",") if args.modes else []
    unknown = [m for m in modes if m not in MODES]
    if unknown:
        ap.error(f"unknown mode(s) {unknown}; known: {list(MODES)} (or --mode LABEL OVERRIDE...)")
    overrides = {m: MODES[m] for m in modes}
    for label, *extra in args.mode:
        overrides[label] = extra
        modes.append(label)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_study_rt_") as tmp:
        for rnd in range(args.rounds):
            for mode in modes:
                row = {
                    "round": rnd,
                    **run_mode(mode, overrides[mode], args.experiment, args.episodes, 1000 * (rnd + 1), Path(tmp)),
                }
                rows.append(row)
                print(json.dumps(row), flush=True)
        lockstep = []
        for mode in (m for m in modes if args.lockstep and m in METHODS):
            mine = [r for r in rows if r["mode"] == mode and r.get("d_actual_mean") is not None and r.get("episodes")]
            if not mine:
                continue
            d_mean = sum(r["d_actual_mean"] * r["episodes"] for r in mine) / sum(r["episodes"] for r in mine)
            cell = run_lockstep_cell(
                mode,
                int(round(d_mean)),
                mine[0]["execute_horizon"],
                args.lockstep,
                args.lockstep_episodes,
                1000,
                Path(tmp),
            )
            cell["realtime_d_mean"] = round(d_mean, 2)
            lockstep.append(cell)
            print(json.dumps(cell), flush=True)
    command = "cd /work/main && .venv/bin/python benchmarks/bench_study_realtime.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (RESULTS / f"{args.name}.json").write_text(
        json.dumps(
            {
                "command": command,
                "started": started,
                "machine": machine,
                "load_average": os.getloadavg(),
                "rows": rows,
                "lockstep": lockstep,
            },
            indent=2,
        )
    )
    f = lambda v, p=1: "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        f"# `+experiment={args.experiment}` in real time: naive vs RTC methods",
        "",
        f"Command: `{command}`",
        "",
        f"Started {started}; {machine}. Each row: `python -m inference +experiment={args.experiment} "
        f"<mode's overrides> episodes={args.episodes} seed=S` (the experiment's robot "
        f"(`{rows[0].get('robot', '?')}` at {f(rows[0].get('hz'), 0)} Hz) and flow checkpoint in real time, "
        f"execute horizon {rows[0].get('execute_horizon', '?')}). Load average (1, 5, 15 min) at the end: "
        + ", ".join(f"{v:.2f}" for v in os.getloadavg())
        + ". Modes: "
        + "; ".join(f"`{m}` = `{' '.join(overrides[m])}`" for m in modes)
        + ". "
        "Modes alternate within a round, on the same seeds. Latency = request to merged chunk (ms); "
        "d = the measured delay (ticks); discontinuity = max |last executed old action - first new action| at "
        "a chunk switch (robot units).",
        "",
        "| round | mode | seeds | success | episodes run | inference p50 | inference p95 | d mean | "
        "discontinuity mean | discontinuity max | rejected chunks | fault |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['round']} | {r['mode']} | {r['seed']}..{r['seed'] + args.episodes - 1} | "
            f"{f(r.get('success_rate'), 2)} | {f(r.get('episodes'))} | {f(r.get('inference_latency_ms_p50'), 0)} | "
            f"{f(r.get('inference_latency_ms_p95'), 0)} | {f(r.get('d_actual_mean'), 1)} | "
            f"{f(r.get('discontinuity_mean'), 4)} | {f(r.get('discontinuity_max'), 4)} | {f(r.get('rejected_chunks'))} | "
            f"{r.get('fault') or r.get('error') or ''} |"
        )
    lines += ["", "| mode | successes / episodes run (all rounds) |", "|---|---:|"]
    for mode in modes:
        mine = [r for r in rows if r["mode"] == mode]
        wins, eps = sum(int(r.get("successes") or 0) for r in mine), sum(int(r.get("episodes") or 0) for r in mine)
        lines.append(f"| {mode} | {wins} / {eps} ({wins / eps:.2f}) |" if eps else f"| {mode} | - |")
    if lockstep:
        lines += [
            "",
            f"## Real time beside lockstep (`+experiment={args.lockstep}`)",
            "",
            "Each lockstep cell: d = the mode's mean measured real-time delay, rounded; s = the real-time execute "
            f"horizon; {args.lockstep_episodes} episodes from seed 1000 (the real-time seeds and on). 95% = the "
            "Wilson score interval. Agree = the intervals overlap (in = each rate inside the other's interval).",
            "",
            "| mode | real time: successes / episodes | rate [95%] | d measured (mean) | lockstep cell (d, s) | "
            "lockstep: successes / episodes | rate [95%] | agree |",
            "|---|---:|---|---:|---|---:|---|---|",
        ]
        for cell in lockstep:
            mine = [r for r in rows if r["mode"] == cell["mode"]]
            wins, eps = sum(int(r.get("successes") or 0) for r in mine), sum(int(r.get("episodes") or 0) for r in mine)
            if not eps or cell.get("error"):
                lines.append(f"| {cell['mode']} | - | - | - | - | - | {cell.get('error', '')} | - |")
                continue
            rl, rh = wilson_interval(wins, eps)
            ll, lh = wilson_interval(cell["successes"], int(cell["episodes"]))
            rr, lr = wins / eps, cell["successes"] / int(cell["episodes"])
            overlap = rl <= lh and ll <= rh
            inside = ll <= rr <= lh and rl <= lr <= rh
            cell.update(realtime_successes=wins, realtime_episodes=eps, agree=overlap, inside=inside)
            lines.append(
                f"| {cell['mode']} | {wins} / {eps} | {rr:.2f} [{rl:.2f}, {rh:.2f}] | {cell['realtime_d_mean']} | "
                f"({cell['delay_ticks']}, {cell['execute_horizon']}) | {cell['successes']} / {cell['episodes']} | "
                f"{lr:.2f} [{ll:.2f}, {lh:.2f}] | {'yes' if overlap else 'NO'}{' (in)' if inside else ''} |"
            )
        (RESULTS / f"{args.name}.json").write_text(
            json.dumps(
                {
                    "command": command,
                    "started": started,
                    "machine": machine,
                    "load_average": os.getloadavg(),
                    "rows": rows,
                    "lockstep": lockstep,
                },
                indent=2,
            )
        )
    (RESULTS / f"{args.name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
