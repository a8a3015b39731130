"""IPC cost of the RTC shared memory vs a raw ``np.copyto`` of the same bytes.

    .venv/bin/python benchmarks/bench_ipc.py --iters 3000

Control side per request (the planner triggers one every ``execute_horizon`` ticks; worst case every tick):
publish the request (state history + 3 cameras 3x240x320 uint8 + ``prev`` 50x14 float32 + counters,
under the seqlock) and read the newest result chunk (robot + model space, 50x14, under the other
seqlock). Baseline: ``np.copyto`` of the same observation bytes and two chunks between private arrays.
Also timed: the inference side's snapshot copy (the same bytes the other way, once per
inference). Results: benchmarks/results/ipc.md (+ .json).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from algorithms.rtc.layout import Layout, RequestSlot, SharedState, build_specs  # noqa: E402
from services.shm import SharedArrays, unique_block_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def pct(x: list[float]) -> dict[str, float]:
    a = np.asarray(x) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean())}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=3000)
    ap.add_argument("--cameras", type=int, default=3)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--chunk", type=int, default=50)
    ap.add_argument("--dim", type=int, default=14)
    ap.add_argument("--out", default=str(RESULTS / "ipc"))
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    state = rng.standard_normal((1, args.dim)).astype(np.float32)
    images = {
        f"cam{i}": rng.integers(0, 255, (1, 3, args.height, args.width), dtype=np.uint8) for i in range(args.cameras)
    }
    specs, keys, scalar = build_specs(state.shape, images, {}, args.chunk, args.dim)
    name = unique_block_name("bench")
    layout = Layout(name, tuple(specs), args.chunk, args.dim, tuple(images), keys, scalar)
    arrays = SharedArrays.create(specs, name=name)
    try:
        shared = SharedState(arrays, layout)
        reader = SharedState(SharedArrays.attach(name, specs), layout)
        counters = {
            RequestSlot.EPISODE: 1,
            RequestSlot.TICK: 0,
            RequestSlot.SEQ: 0,
            RequestSlot.EXECUTE_HORIZON: 25,
            RequestSlot.DELAY_TICKS: 2,
            RequestSlot.GUIDED: 1,
        }
        prev = rng.standard_normal((args.chunk, args.dim)).astype(np.float32)
        # raw baseline: the same bytes, private arrays
        dst_state, src_state = np.empty_like(state), state
        dst_imgs = {k: np.empty_like(v) for k, v in images.items()}
        chunk_src = [rng.standard_normal((args.chunk, args.dim)).astype(np.float32) for _ in range(2)]
        chunk_dst = [np.empty_like(c) for c in chunk_src]
        t_ipc, t_raw, t_snap = [], [], []
        for i in range(args.iters):
            counters[RequestSlot.TICK] = i
            counters[RequestSlot.SEQ] = i + 1
            t0 = time.perf_counter()
            shared.publish_request(state, images, {}, counters, obs_time=0.0, tick_time=0.0, prev=prev)
            result = shared.read_result()
            t1 = time.perf_counter()
            np.copyto(dst_state, src_state)
            for k, v in images.items():
                np.copyto(dst_imgs[k], v)
            for s, d in zip(chunk_src, chunk_dst):
                np.copyto(d, s)
            t2 = time.perf_counter()
            if i % 10 == 0:
                reader.read_snapshot()
                t_snap.append(time.perf_counter() - t2)
            t_ipc.append(t1 - t0)
            t_raw.append(t2 - t1)
        assert result[0].shape == (args.chunk, args.dim)
        reader.arrays.close()
    finally:
        arrays.close()
    obs_bytes = state.nbytes + sum(v.nbytes for v in images.values())
    ipc, raw, snap = pct(t_ipc[100:]), pct(t_raw[100:]), pct(t_snap[10:])
    ratio = ipc["p50_us"] / raw["p50_us"]
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# RTC per-tick IPC cost vs raw np.copyto",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, numpy {np.__version__}; "
        "shared machine, other jobs running.",
        "",
        f"Per tick: observation {obs_bytes / 1024:.0f} KiB ({args.cameras} cameras 3x{args.height}x{args.width} uint8 + "
        f"state) written under the control seqlock + result chunk 2x{args.chunk}x{args.dim} float32 read under the "
        f"result seqlock; {args.iters} iterations (first 100 dropped).",
        "",
        "| what | p50 us | p99 us | mean us |",
        "|---|---:|---:|---:|",
        f"| shm publish request + read chunk | {ipc['p50_us']:.1f} | {ipc['p99_us']:.1f} | {ipc['mean_us']:.1f} |",
        f"| raw np.copyto of the same bytes | {raw['p50_us']:.1f} | {raw['p99_us']:.1f} | {raw['mean_us']:.1f} |",
        f"| inference-side snapshot copy (per inference) | {snap['p50_us']:.1f} | {snap['p99_us']:.1f} | {snap['mean_us']:.1f} |",
        "",
        f"**Ratio shm / raw (p50): {ratio:.2f}x**",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".md").write_text("\n".join(lines))
    out.with_suffix(".json").write_text(
        json.dumps(
            {"command": command, "obs_bytes": obs_bytes, "ipc": ipc, "raw": raw, "snapshot": snap, "ratio_p50": ratio},
            indent=1,
        )
    )
    print("\n".join(lines))


if __name__ == "__main__":
    main()
