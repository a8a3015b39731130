"""The default run as a user gets it, new design vs the previous threaded one: task success,
inference latency and tick timing (the device-process design must be no worse than the threaded one).

    .venv/bin/python benchmarks/bench_default_run.py --episodes 10 --rounds 2

Each round runs ``python -m inference episodes=N`` (the defaults: sim robot in real time, 3
cameras, bundled flow policy, RTC) once per design, alternating (``processes`` = the default;
``threads`` = ``bench_realtime.DESIGNS['threads']``: devices as threads in the control process, no
real-time settings), and reads each run's ``summary.json`` and ``ticks.csv``. Unlike
``bench_realtime.py`` nothing is overridden: episodes stop at success, the plausibility check and
every timeout are the defaults. Results: ``benchmarks/results/default_run.md`` (+ .json).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from bench_realtime import DESIGNS, RESULTS, timing_stats  # noqa: E402


def run_default(design: str, episodes: int, workdir: Path) -> dict:
    run_dir = workdir / f"{design}_{time.monotonic_ns()}"
    cmd = [sys.executable, "-m", "inference", f"episodes={episodes}", f"hydra.run.dir={run_dir}", *DESIGNS[design]]
    load = os.getloadavg()[0]
    t0 = time.monotonic()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=episodes * 120 + 300)
    out: dict = {"design": design, "returncode": proc.returncode, "wall_s": time.monotonic() - t0, "load_avg": load}
    if proc.returncode != 0:
        out["error"] = (proc.stderr.strip().splitlines() or ["?"])[-1][:300]
    summary = run_dir / "summary.json"
    if summary.is_file():
        s = json.loads(summary.read_text())
        out.update(
            {
                k: s.get(k)
                for k in (
                    "success_rate",
                    "episodes",
                    "ticks",
                    "inference_latency_ms_p50",
                    "inference_latency_ms_p95",
                    "underruns",
                )
            }
        )
        out["fault"] = (s.get("fault") or {}).get("kind")
    ticks = run_dir / "ticks.csv"
    if ticks.is_file():
        with ticks.open() as f:
            errors = np.array([float(r["period_error_ms"]) for r in csv.DictReader(f)])
        out.update({f"period_{k}": v for k, v in timing_stats(errors).items()})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--designs", default="processes,threads")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_default_") as tmp:
        for rnd in range(args.rounds):
            for design in args.designs.split(","):
                row = {"round": rnd, **run_default(design, args.episodes, Path(tmp))}
                rows.append(row)
                print(json.dumps(row), flush=True)
    command = "cd /work/main && .venv/bin/python benchmarks/bench_default_run.py " + " ".join(sys.argv[1:])
    machine = f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}"
    (RESULTS / "default_run.json").write_text(
        json.dumps({"command": command, "started": started, "machine": machine, "rows": rows}, indent=2)
    )
    f = lambda v, p=1: "-" if v is None else (f"{v:.{p}f}" if isinstance(v, float) else str(v))  # noqa: E731
    lines = [
        "# The default run, device processes vs the previous threaded design",
        "",
        f"Command: `{command}`",
        "",
        f"Started {started}; {machine}. Each row: `python -m inference episodes={args.episodes}` (all "
        "defaults: sim in real time, 3 cameras, flow policy, RTC); `threads` adds "
        f"`{' '.join(DESIGNS['threads'])}`. Rounds alternate the designs. Period error in ms; "
        "inference latency = request to merged chunk, ms.",
        "",
        "| round | design | success | episodes | ticks | inference p50 | inference p95 | underruns | "
        "period p99 | period max | ticks > 1 ms late | fault | load avg |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|",
    ]
    for r in rows:
        late = r.get("period_late_share")
        lines.append(
            f"| {r['round']} | {r['design']} | {f(r.get('success_rate'), 2)} | {f(r.get('episodes'))} | "
            f"{f(r.get('ticks'))} | {f(r.get('inference_latency_ms_p50'), 0)} | {f(r.get('inference_latency_ms_p95'), 0)} | "
            f"{f(r.get('underruns'))} | {f(r.get('period_p99'), 3)} | {f(r.get('period_max'), 3)} | "
            f"{'-' if late is None else f'{100 * late:.2f}%'} | {r.get('fault') or r.get('error') or ''} | "
            f"{r['load_avg']:.1f} |"
        )
    (RESULTS / "default_run.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
