"""How fast a real-time run stops: Ctrl-C, SIGTERM, and an inference process whose parent died.

    .venv/bin/python benchmarks/bench_stop.py --repeats 5
    .venv/bin/python scripts/busy_load.py --procs 2 -- .venv/bin/python benchmarks/bench_stop.py --label busy2

The tests check that each of these ends the whole run cleanly (exit 130, no process of the run's
group left, no shared memory left); how fast is a property of the machine's load, so it is measured
here, against the targets the design states. Each repeat starts ``python -m inference`` in a new
session (real-time RTC, the hold policy, no cameras; extra positional arguments are more app
overrides), waits until it has written 20 ticks, then:

* ``sigint_group``: SIGINT to the run's process group, as a terminal's Ctrl-C: seconds until no
  live process of the group is left (target 2 s);
* ``sigterm_main``: SIGTERM to the control process: the same (target 2 s);
* ``orphan_kill9``: SIGKILL of the control process: seconds until its inference process (its pid
  from ``events.jsonl``) is gone, having noticed its parent died (target 1 s).

Results: ``benchmarks/results/stop[_<label>].md`` (+ .json), with the 1-minute load average.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
APP = [
    "algorithm=rtc",
    "policy=hold",
    "cameras=none",
    "max_steps=1000000",
    "algorithm.stop_on_success=false",
    "report=false",
]
TARGET_S = {"sigint_group": 2.0, "sigterm_main": 2.0, "orphan_kill9": 1.0}
POLL_S = 0.005
GIVE_UP_S = 120.0


def group_alive(pgid: int) -> bool:
    """Any live (non-zombie) process in group ``pgid``."""
    out = subprocess.run(["ps", "-e", "-o", "pgid=,stat="], capture_output=True, text=True).stdout
    return any(int(g) == pgid and not s.startswith("Z") for g, s in (line.split(None, 1) for line in out.splitlines()))


def pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


def start(run_dir: Path, extra: list[str]) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "inference", *APP, *extra, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def wait_ticking(proc: subprocess.Popen, run_dir: Path) -> None:
    deadline = time.monotonic() + GIVE_UP_S
    ticks = run_dir / "ticks.csv"
    while time.monotonic() < deadline:
        if ticks.exists() and ticks.read_text().count("\n") > 20:
            return
        if proc.poll() is not None:
            raise RuntimeError(f"the app exited ({proc.returncode}) before ticking; see {run_dir}")
        time.sleep(0.05)
    raise RuntimeError("the app never started ticking")


def inference_pid(run_dir: Path) -> int:
    deadline = time.monotonic() + GIVE_UP_S
    while time.monotonic() < deadline:
        events = run_dir / "events.jsonl"
        if events.exists():
            for line in events.read_text().splitlines():
                event = json.loads(line)
                if event.get("event") == "inference_process_start":
                    return int(event["pid"])
        time.sleep(0.05)
    raise RuntimeError("no inference_process_start event in events.jsonl")


def one(case: str, run_dir: Path, extra: list[str]) -> dict:
    proc = start(run_dir, extra)
    try:
        wait_ticking(proc, run_dir)
        if case == "orphan_kill9":
            watched = inference_pid(run_dir)
            t0 = time.monotonic()
            os.kill(proc.pid, signal.SIGKILL)
            gone = lambda: not pid_alive(watched)  # noqa: E731
        else:
            t0 = time.monotonic()
            if case == "sigint_group":
                os.killpg(proc.pid, signal.SIGINT)
            else:
                os.kill(proc.pid, signal.SIGTERM)
            gone = lambda: not group_alive(proc.pid)  # noqa: E731
        while not gone() and time.monotonic() - t0 < GIVE_UP_S:
            proc.poll()
            time.sleep(POLL_S)
        stop_s = time.monotonic() - t0
        code = proc.wait(GIVE_UP_S)
        return {"case": case, "stop_s": stop_s if gone() else None, "exit": code}
    finally:
        if group_alive(proc.pid):  # the rest of an orphaned group, or a run that did not stop
            deadline = time.monotonic() + 10
            while group_alive(proc.pid) and time.monotonic() < deadline:
                time.sleep(0.05)
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--cases", default=",".join(TARGET_S))
    ap.add_argument("--label", default="", help="results go to stop_<label>.md")
    ap.add_argument("overrides", nargs="*", help="more app overrides")
    args = ap.parse_args()
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    load = [os.getloadavg()[0]]
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="bench_stop_") as tmp:
        for r in range(args.repeats):
            for case in args.cases.split(","):
                res = one(case, Path(tmp) / f"{case}_{r}", args.overrides)
                rows.append(res)
                print(
                    f"{case} #{r}: {res['stop_s'] if res['stop_s'] is None else round(res['stop_s'], 3)} s, "
                    f"exit {res['exit']}",
                    flush=True,
                )
                load.append(os.getloadavg()[0])
    busy = os.environ.get("BUSY_LOAD_PIDS", "")
    beside = f"(beside scripts/busy_load.py, {len(busy.split(','))} busy loops) " if busy else ""
    command = f"cd /work/main && {beside}.venv/bin/python benchmarks/bench_stop.py " + " ".join(sys.argv[1:])
    meta = {
        "command": command,
        "started": started,
        "repeats": args.repeats,
        "overrides": APP + args.overrides,
        "load_avg_1min": [min(load), max(load)],
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}",
    }
    lines = [
        "# Stopping a real-time run",
        "",
        f"Command: `{command}`",
        "",
        f"Started {started}; {meta['machine']}; {args.repeats} repeats per case; app overrides "
        f"`{' '.join(meta['overrides'])}`; 1-min load average {min(load):.1f}-{max(load):.1f}. Seconds from "
        "the signal until no process of the run's group is left (orphan_kill9: until the inference process "
        "is gone).",
        "",
        "| case | target s | p50 s | max s | over target | exit codes |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for case in args.cases.split(","):
        got = [r for r in rows if r["case"] == case]
        times = np.array([r["stop_s"] for r in got if r["stop_s"] is not None])
        never = sum(r["stop_s"] is None for r in got)
        over = int(np.sum(times > TARGET_S[case])) + never
        lines.append(
            f"| {case} | {TARGET_S[case]:g} | {np.median(times) if times.size else float('nan'):.3f} | "
            f"{times.max() if times.size else float('nan'):.3f} | {over}/{len(got)} | "
            f"{sorted({r['exit'] for r in got})} |"
        )
    name = "stop" + (f"_{args.label}" if args.label else "")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"{name}.json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    (RESULTS / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    print(f"wrote {RESULTS / name}.md")


if __name__ == "__main__":
    main()
