"""Does W&B logging disturb the control loop? Period error with logger=wandb vs logger=none.

Runs real-time sequential episodes on the sim robot, alternating the two loggers (none, wandb,
none, wandb, ...) so machine noise hits both alike, and writes the side-by-side table to
benchmarks/results/logger.md.

    python benchmarks/bench_logger.py [--reps 3] [--ticks 1200] [--hz 50]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "results" / "logger.md"


def one_run(logger: str, ticks: int, hz: int, run_dir: Path) -> np.ndarray:
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "algorithm=sequential",
        "policy=scripted",
        f"logger={logger}",
        f"robot.hz={hz}",
        f"max_steps={ticks}",
        "algorithm.stop_on_success=false",
        "algorithm.execute_horizon=50",
        "report=false",
        f"hydra.run.dir={run_dir}",
    ]
    subprocess.run(cmd, cwd=ROOT, check=True, capture_output=True, timeout=600)
    data = np.genfromtxt(run_dir / "ticks.csv", delimiter=",", names=True)
    return data["period_error_ms"]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--ticks", type=int, default=1200)
    parser.add_argument("--hz", type=int, default=50)
    args = parser.parse_args()
    errors: dict[str, list[np.ndarray]] = {"none": [], "wandb": []}
    with tempfile.TemporaryDirectory() as tmp:
        for rep in range(args.reps):
            for logger in ("none", "wandb"):
                errors[logger].append(one_run(logger, args.ticks, args.hz, Path(tmp) / f"{logger}{rep}"))
    rows = []
    for logger, runs in errors.items():
        allerr = np.concatenate(runs)
        per_run_p99 = [np.percentile(r, 99) for r in runs]
        rows.append(
            (logger, allerr.size, np.percentile(allerr, 50), np.percentile(allerr, 99), allerr.max(), per_run_p99)
        )
    base_p99 = rows[0][3]
    lines = [
        "# Logger overhead on the control loop",
        "",
        f"Command: `python benchmarks/bench_logger.py --reps {args.reps} --ticks {args.ticks} --hz {args.hz}`",
        f"Date: {time.strftime('%Y-%m-%d %H:%M')}, machine: {sys.platform}, 2 CPU cores, no GPU.",
        "Real-time sim robot (MuJoCo, 3 cameras rendered at 15 fps in their own thread), sequential",
        "algorithm, scripted policy; runs alternate none/wandb. Period error = actual - scheduled tick time.",
        "",
        "| logger | ticks | p50 (ms) | p99 (ms) | max (ms) | p99 per run (ms) | p99 ratio to none |",
        "|---|---|---|---|---|---|---|",
    ]
    for logger, n, p50, p99, mx, per_run in rows:
        lines.append(
            f"| {logger} | {n} | {p50:.3f} | {p99:.3f} | {mx:.3f} | "
            f"{', '.join(f'{v:.3f}' for v in per_run)} | {p99 / base_p99:.2f} |"
        )
    OUT.parent.mkdir(parents=True, exist_ok=True)
    OUT.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
