"""Control-loop timing: our DeadlineClock vs a plain ``sleep(dt)`` loop vs ``next_t += dt`` sleep.

    .venv/bin/python benchmarks/bench_control_loop.py --ticks 2000 --rates 20 50 100

Each loop runs ``--ticks`` ticks at each rate while a busy process spins on the other core (the
loop is pinned to core 0, the load to core 1 when the machine has two or more). A tick does
``--work-ms`` of numpy work (a stand-in for read + filter + send). Period error of tick i is
``actual_i - (t0 + i * dt)`` (ms): a loop that drifts shows it as a growing error, which is what a
robot sees as a slower control rate. Results: benchmarks/results/control_loop.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from services.clock import DeadlineClock  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _busy(core: int | None, parent: int) -> None:
    """Spin on ``core`` until the benchmark process is gone."""
    if core is not None:
        os.sched_setaffinity(0, {core})
    x = 0
    while True:
        x += 1
        if x % 1_000_000 == 0 and os.getppid() != parent:
            return


def _work(ms: float, buf: np.ndarray) -> None:
    end = time.perf_counter() + ms / 1e3
    while time.perf_counter() < end:
        buf *= 1.0000001


def loop_deadline(dt: float, ticks: int, work_ms: float, buf: np.ndarray, spin_s: float = 0.002) -> np.ndarray:
    clock = DeadlineClock(dt, spin_s=spin_s)
    t0 = clock.start(time.monotonic() + dt)
    actual = np.empty(ticks)
    for i in range(ticks):
        _, actual[i] = clock.wait(i)
        _work(work_ms, buf)
    return actual - (t0 + dt * np.arange(ticks))


def loop_sleep_dt(dt: float, ticks: int, work_ms: float, buf: np.ndarray) -> np.ndarray:
    t0 = time.monotonic() + dt
    time.sleep(dt)
    actual = np.empty(ticks)
    for i in range(ticks):
        actual[i] = time.monotonic()
        _work(work_ms, buf)
        time.sleep(dt)
    return actual - (t0 + dt * np.arange(ticks))


def loop_next_t(dt: float, ticks: int, work_ms: float, buf: np.ndarray) -> np.ndarray:
    t0 = next_t = time.monotonic() + dt
    actual = np.empty(ticks)
    for i in range(ticks):
        remaining = next_t - time.monotonic()
        if remaining > 0:
            time.sleep(remaining)
        actual[i] = time.monotonic()
        _work(work_ms, buf)
        next_t += dt
    return actual - (t0 + dt * np.arange(ticks))


def loop_deadline_short_spin(dt: float, ticks: int, work_ms: float, buf: np.ndarray) -> np.ndarray:
    return loop_deadline(dt, ticks, work_ms, buf, spin_s=0.0002)


LOOPS = {
    "deadline_clock": loop_deadline,
    "deadline_clock_spin0.2ms": loop_deadline_short_spin,
    "sleep_dt": loop_sleep_dt,
    "next_t_sleep": loop_next_t,
}


def stats(err_s: np.ndarray) -> dict[str, float]:
    ms = err_s * 1e3
    a = np.abs(ms)
    return {
        "p50_ms": float(np.percentile(a, 50)),
        "p99_ms": float(np.percentile(a, 99)),
        "max_ms": float(a.max()),
        "final_drift_ms": float(ms[-1]),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ticks", type=int, default=2000)
    ap.add_argument("--rates", type=float, nargs="+", default=[20, 50, 100])
    ap.add_argument("--work-ms", type=float, default=1.0)
    ap.add_argument("--no-load", action="store_true")
    ap.add_argument("--out", default=str(RESULTS / "control_loop"))
    args = ap.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    loop_core = cores[0] if len(cores) >= 2 else None
    load_core = cores[1] if len(cores) >= 2 else None
    busy = None
    if not args.no_load:
        busy = mp.get_context("spawn").Process(target=_busy, args=(load_core, os.getpid()), daemon=True)
        busy.start()
    if loop_core is not None:
        os.sched_setaffinity(0, {loop_core})
    buf = np.ones(1000)
    rows = []
    load_before = os.getloadavg()
    try:
        for hz in args.rates:
            for name, fn in LOOPS.items():
                err = fn(1.0 / hz, args.ticks, args.work_ms, buf)
                row = {"hz": hz, "loop": name, "ticks": args.ticks, **stats(err)}
                rows.append(row)
                print(json.dumps(row), flush=True)
    finally:
        if busy is not None:
            busy.kill()
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# Control-loop timing: period error |actual - (t0 + i*dt)|",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs ({platform.platform()}), Python {platform.python_version()}; "
        f"loop pinned to core {loop_core}, busy-spin process on core {load_core}"
        + (" (no load)" if args.no_load else "")
        + f"; {args.work_ms} ms of work per tick. Shared machine: other jobs ran at the same time "
        f"(1-min load average {load_before[0]:.1f} at start, {os.getloadavg()[0]:.1f} at end, on {os.cpu_count()} CPUs).",
        "",
        "| Hz | loop | ticks | p50 ms | p99 ms | max ms | drift at end ms |",
        "|---:|---|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['hz']:g} | {r['loop']} | {r['ticks']} | {r['p50_ms']:.3f} | {r['p99_ms']:.3f} | "
            f"{r['max_ms']:.3f} | {r['final_drift_ms']:.1f} |"
        )
    lines += [
        "",
        "deadline_clock = services.clock.DeadlineClock (absolute deadlines, sleep then spin the last 2 ms); "
        "deadline_clock_spin0.2ms = the same with spin_s=0.0002; "
        "sleep_dt = `work; sleep(dt)` (drifts by the work + oversleep every tick); "
        "next_t_sleep = `next_t += dt; sleep(next_t - now)` (absolute, no spin: pays the sleep overshoot).",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    out.with_suffix(".json").write_text(json.dumps({"command": command, "rows": rows}, indent=1))
    print(f"wrote {out.with_suffix('.md')}")


if __name__ == "__main__":
    main()
