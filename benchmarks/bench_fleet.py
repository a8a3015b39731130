"""Fleet serving: N robots against one Ray Serve replica, batched vs unbatched vs N separate processes.

    .venv/bin/python benchmarks/bench_fleet.py                       # N = 1 2 4 8, 12 s per cell
    .venv/bin/python benchmarks/bench_fleet.py --robots 1 2 4 8 --seconds 20 --rounds 2

Each simulated robot is a client thread in this process with its own observation (random frames
and state), its own previous chunk, delay ``d`` and execution horizon ``s``, sending guided (VJP)
requests of the bundled flow policy through Serve's handle API. Closed loop ("lockstep-style"): a
robot sends its next request as soon as its chunk is back, so the service is saturated and the
numbers are capacity, not an offered load. Per N, side by side in one window:

* ``batched``: ONE replica, ``max_batch_size = 8``, ``batch_wait_timeout_s`` 50 ms (``--batch-wait-ms``:
  on a loaded 2-core machine the replies of one batch come back to the robots, and their next
  requests reach the replica, spread over more than 5 ms, so a 5 ms wait mostly starts batches of 1-2);
* ``unbatched``: the same replica configuration with ``max_batch_size = 1``;
* ``separate``: N applications of one replica each (N processes, N model copies), as N robots
  with their own ``rtc`` inference process each.

Reported per cell: throughput (chunks/s over all robots), per-request latency p50/p99 (submit to
reply, this process), the service's mean batch size, underruns (replies later than the robot's
real-time budget ``(H - s) / hz``: the current chunk would have run out before the new one came)
and the resident memory of the serving processes (one model copy vs N). A local Ray instance in
this process (loopback-only network namespace, ``scripts/netns.py``), 2 CPUs here. Writes
benchmarks/results/fleet.md (``--out``) with the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")

from scripts.netns import network_of_this_run, reexec_in_netns  # noqa: E402

if __name__ == "__main__":
    reexec_in_netns()

HZ = 20.0
CHUNK = 50


@dataclass
class Cell:
    mode: str
    robots: int
    chunks: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    batch_sizes: list[int] = field(default_factory=list)
    underruns: int = 0
    errors: int = 0
    rss_mb: float = 0.0
    processes: int = 0

    @property
    def throughput(self) -> float:
        return self.chunks / self.seconds if self.seconds else 0.0


def _requests(n: int, seed: int = 0) -> list[dict]:
    """One request per robot: own observation, previous chunk, d and s."""
    from algorithms.wire import encode_request
    from policies.base import Guidance, Schedule
    from policies.runner import Guide

    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        s = (10, 15, 20, 25)[i % 4]
        d = 1 + i % 5
        prev = rng.normal(size=(CHUNK - s, 14)).astype(np.float32) * 0.3
        guide = Guide(np.concatenate([prev, np.zeros((s, 14), np.float32)]), d, s, Guidance.VJP, Schedule.EXP, 5.0)
        images = {c: rng.integers(0, 255, (1, 3, 96, 128), dtype=np.uint8) for c in ("head", "left", "right")}
        out.append(encode_request(0, rng.normal(size=(1, 14)).astype(np.float32), images, {}, guide, robot=f"robot{i}"))
    return out


def _rss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return 0.0


def _deploy(cfg, base, name: str, **knobs) -> None:
    from inference.fleet.__main__ import deploy

    fleet = type(base)(**{**base.__dict__, "app_name": name, **knobs})
    fleet.check()
    deploy(cfg, fleet)


def _run_cell(mode: str, handles: list, requests: list[dict], seconds: float) -> Cell:
    """N client threads, closed loop, for ``seconds`` after a short warm-up."""
    n = len(requests)
    cell = Cell(mode, n)
    budget_ms = 1e3 * (CHUNK - np.array([r["guide"]["execute_horizon"] for r in requests])) / HZ
    stop = threading.Event()
    t_measure = [0.0]
    lock = threading.Lock()

    def robot(i: int) -> None:
        handle, req = handles[i], dict(requests[i])
        while not stop.is_set():
            t0 = time.monotonic()
            try:
                reply = handle.remote(req).result(timeout_s=60)
            except Exception:  # noqa: BLE001 - counted
                with lock:
                    cell.errors += 1
                continue
            t1 = time.monotonic()
            if t0 < t_measure[0] or stop.is_set():
                continue
            with lock:
                if reply.get("error"):
                    cell.errors += 1
                    continue
                cell.chunks += 1
                ms = (t1 - t0) * 1e3
                cell.latencies_ms.append(ms)
                cell.batch_sizes.append(int(reply["batch_size"]))
                cell.underruns += int(ms > budget_ms[i])

    threads = [threading.Thread(target=robot, args=(i,), daemon=True) for i in range(n)]
    t_measure[0] = time.monotonic() + 2.0  # warm-up: the first batches and thread start
    for t in threads:
        t.start()
    time.sleep(2.0 + seconds)
    stop.set()
    cell.seconds = seconds
    for t in threads:
        t.join(timeout=120)
    return cell


def _replica_pids(handle) -> list[int]:
    stats = handle.stats.remote().result(timeout_s=30)
    return [int(stats["replica"].rsplit(":", 1)[1])]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--robots", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--seconds", type=float, default=12.0)
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2, help="torch threads of the shared replica")
    ap.add_argument("--max-batch", type=int, default=8)
    ap.add_argument(
        "--batch-wait-ms",
        type=float,
        default=50.0,
        help="batch_wait_timeout_s of the batched replica (ms); small vs a robot's budget (H - s)/hz",
    )
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/fleet.md"))
    args = ap.parse_args()

    import logging

    logging.basicConfig(level=logging.WARNING)
    from ray import serve

    from inference.fleet.__main__ import join, load

    cfg, base = load(
        [
            "policy=flow",
            "policy.device=cpu",
            "fleet.address=local",
            f"fleet.local_num_cpus={os.cpu_count()}",
            "fleet.num_cpus=0",
            "fleet.max_queue_wait_s=60",
            "fleet.max_queued_requests=-1",
            "fleet.max_ongoing_requests=64",
        ]
    )
    print(f"ray: {join(base)}; network: {network_of_this_run()}", flush=True)
    t0 = time.monotonic()
    _deploy(
        cfg,
        base,
        "batched",
        max_batch_size=args.max_batch,
        torch_threads=args.threads,
        batch_wait_timeout_s=args.batch_wait_ms / 1e3,
    )
    _deploy(cfg, base, "unbatched", max_batch_size=1, torch_threads=args.threads)
    print(f"two replicas ready in {time.monotonic() - t0:.0f} s", flush=True)
    shared = {m: serve.get_app_handle(m) for m in ("batched", "unbatched")}
    cells: list[Cell] = []
    for rnd in range(args.rounds):
        for n in args.robots:
            reqs = _requests(n, seed=n)
            for mode in ("batched", "unbatched"):
                cell = _run_cell(mode, [shared[mode]] * n, reqs, args.seconds)
                pids = _replica_pids(shared[mode])
                cell.rss_mb, cell.processes = sum(_rss_mb(p) for p in pids), len(pids)
                cells.append(cell)
                _print(cell)
            names = [f"sep{i}" for i in range(n)]
            for name in names:  # N processes with a model each, one thread each (N x 1 thread)
                _deploy(cfg, base, name, max_batch_size=1, torch_threads=max(1, args.threads // min(n, args.threads)))
            handles = [serve.get_app_handle(name) for name in names]
            cell = _run_cell("separate", handles, reqs, args.seconds)
            pids = [p for h in handles for p in _replica_pids(h)]
            cell.rss_mb, cell.processes = sum(_rss_mb(p) for p in pids), len(pids)
            cells.append(cell)
            _print(cell)
            for name in names:
                serve.delete(name)
    _write(args, cells)


def _print(c: Cell) -> None:
    lat = np.asarray(c.latencies_ms) if c.latencies_ms else np.asarray([np.nan])
    print(
        f"N={c.robots} {c.mode:9s} {c.throughput:6.2f} chunks/s  p50 {np.percentile(lat, 50):7.0f} ms  "
        f"p99 {np.percentile(lat, 99):7.0f} ms  batch {np.mean(c.batch_sizes) if c.batch_sizes else 0:4.1f}  "
        f"underruns {c.underruns}/{c.chunks}  errors {c.errors}  rss {c.rss_mb:6.0f} MB in {c.processes} proc",
        flush=True,
    )


def _write(args, cells: list[Cell]) -> None:
    cmd = "python benchmarks/bench_fleet.py " + " ".join(sys.argv[1:])
    lines = [
        "# Fleet serving: one replica batched vs unbatched vs N separate inference processes",
        "",
        f"Command: `{cmd.strip()}` (in a loopback-only network namespace: {network_of_this_run()})",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, no GPU; flow policy (transfer_cube checkpoint, "
        "10 Euler steps, VJP guidance, 3 cameras 128x96) on the CPU. Closed loop (lockstep-style): each simulated "
        "robot sends its next request when its chunk is back, so the service is saturated. Each robot has its own "
        f"observation, previous chunk, d in 1..5 and s in (10, 15, 20, 25). Batched: max batch {args.max_batch}, "
        f"batch wait {args.batch_wait_ms:g} ms. Shared replica: {args.threads} torch "
        "threads; `separate`: N one-replica apps with the 2 threads split between them. Underrun: a reply later "
        f"than the robot's real-time budget (H - s) / hz at {HZ:g} Hz. Memory: resident set of the serving "
        "process(es). All cells measured in the same run, one after another per N.",
        "",
        "| N | mode | chunks/s | vs unbatched | latency p50 ms | latency p99 ms | mean batch | underruns | errors "
        "| serving RSS MB (processes) |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for c in cells:
        base = next((x for x in cells if x.robots == c.robots and x.mode == "unbatched"), None)
        ratio = c.throughput / base.throughput if base and base.throughput else float("nan")
        lat = np.asarray(c.latencies_ms) if c.latencies_ms else np.asarray([np.nan])
        lines.append(
            f"| {c.robots} | {c.mode} | {c.throughput:.2f} | {ratio:.2f}x | {np.percentile(lat, 50):.0f} | "
            f"{np.percentile(lat, 99):.0f} | {np.mean(c.batch_sizes) if c.batch_sizes else 0:.1f} | "
            f"{c.underruns}/{c.chunks} | {c.errors} | {c.rss_mb:.0f} ({c.processes}) |"
        )
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
