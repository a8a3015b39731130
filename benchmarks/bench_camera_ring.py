"""Cost of a camera frame reaching the control process vs a memcpy of its bytes (issue 15).

    .venv/bin/python benchmarks/bench_camera_ring.py --reads 3000

A real ``CameraProcess`` (robots/cameras/process.py) with a producer in its own process writing
frames into the shared-memory ring as fast as it can; the control side calls ``read()`` (newest
frame by index, one copy into a fresh array that becomes ``Frame.image``, age check). Only reads
that got a new frame are timed (the copy path). Baselines, the same bytes: ``np.copyto`` of the
newest ring slot into a preallocated private array (the memcpy) and ``slot.copy()`` (allocate +
copy, what ``read`` has to do since the history keeps each frame). Each timing reads a slot the
producer has just written (cold in this core's cache), the three kinds in turn. Sizes: the sim cameras' 96x128 and the
real cameras' 240x320, CHW uint8. Results: benchmarks/results/camera_ring.md (+ .json).
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

from robots.cameras.process import CameraProcess  # noqa: E402
from services.shm import ShmRing  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


class FastProducer:
    """Writes a new frame every ``period_s`` (synthetic pixels), like a camera that is never late."""

    def __init__(self, height: int, width: int, period_s: float) -> None:
        self.shape, self.period_s = (3, height, width), period_s

    def run(self, ring: ShmRing, stop) -> None:
        rng = np.random.default_rng(0)
        frames = [rng.integers(0, 255, self.shape, dtype=np.uint8) for _ in range(4)]
        ring.status[ShmRing.STATE] = ShmRing.STATE_RUNNING
        k = 0
        while not stop():
            k += 1
            now = time.monotonic()
            ring.write(now, now, k, image=frames[k % 4])
            time.sleep(self.period_s)


def stats_us(x: list[float]) -> dict[str, float]:
    a = np.asarray(x) * 1e6
    return {"p50_us": float(np.percentile(a, 50)), "p99_us": float(np.percentile(a, 99)), "mean_us": float(a.mean())}


def bench_size(height: int, width: int, reads: int) -> dict:
    cam = CameraProcess("bench", width, height, 1.0, FastProducer(height, width, 0.0002))
    cam.start()
    try:
        ring = cam.ring
        dst = np.empty((3, height, width), np.uint8)
        t_read, t_memcpy, t_alloc = [], [], []
        seen = ring.newest()
        k = 0
        while len(t_read) < reads:
            while ring.newest() == seen:  # wait for a frame just written by the producer (cold here)
                time.sleep(0.0001)
            seen = ring.newest()
            which = k % 3
            k += 1
            if which == 0:  # the engine's path
                t0 = time.perf_counter()
                frame = cam.read()
                t_read.append(time.perf_counter() - t0)
                seen = max(seen, cam._last_n)
                del frame
            else:  # the same bytes, no protocol: memcpy out of the newest slot
                src = ring._slot_views["image"][seen % ring.slots]
                t0 = time.perf_counter()
                if which == 1:
                    np.copyto(dst, src)
                    t_memcpy.append(time.perf_counter() - t0)
                else:
                    copied = src.copy()
                    t_alloc.append(time.perf_counter() - t0)
                    del copied
        drop = min(100, reads // 10)
        out = {"shape": [3, height, width], "bytes": int(dst.nbytes), "reads": reads - drop,
               "ring_read": stats_us(t_read[drop:]), "memcpy_copyto": stats_us(t_memcpy[drop:]),
               "alloc_copy": stats_us(t_alloc[drop:])}
        out["ratio_p50_vs_memcpy"] = out["ring_read"]["p50_us"] / out["memcpy_copyto"]["p50_us"]
        out["ratio_p50_vs_alloc_copy"] = out["ring_read"]["p50_us"] / out["alloc_copy"]["p50_us"]
        return out
    finally:
        cam.stop()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--reads", type=int, default=3000)
    ap.add_argument("--sizes", default="96x128,240x320", help="HxW list")
    ap.add_argument("--out", default=str(RESULTS / "camera_ring"))
    args = ap.parse_args()
    rows = [bench_size(*map(int, s.split("x")), args.reads) for s in args.sizes.split(",")]
    meta = {"command": "cd /work/main && .venv/bin/python benchmarks/bench_camera_ring.py " + " ".join(sys.argv[1:]),
            "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
                       f"numpy {np.__version__}", "load_avg": os.getloadavg()}
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = ["# Camera frame into the control process vs memcpy (issue 15)", "",
             f"Command: `{meta['command']}`", "",
             f"Machine: {meta['machine']}; load average at the end {meta['load_avg'][0]:.1f} (shared machine).", "",
             "Per read of a frame the producer (its own process, a frame every 0.2 ms) has just written: "
             "`CameraProcess.read()` (newest slot by index, one copy into a fresh array = `Frame.image`, seq "
             "check, age check) vs `np.copyto` of the same slot into a preallocated private array (memcpy) and "
             "`slot.copy()` (allocate + copy); the three kinds in turn, each on a freshly written slot.",
             "", "| frame | bytes | reads | ring read p50 / p99 us | memcpy p50 / p99 us | alloc+copy p50 us | "
             "read / memcpy (p50) | read / alloc+copy (p50) |", "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['shape'][1]}x{r['shape'][2]} | {r['bytes']} | {r['reads']} | "
                     f"{r['ring_read']['p50_us']:.1f} / {r['ring_read']['p99_us']:.1f} | "
                     f"{r['memcpy_copyto']['p50_us']:.1f} / {r['memcpy_copyto']['p99_us']:.1f} | "
                     f"{r['alloc_copy']['p50_us']:.1f} | {r['ratio_p50_vs_memcpy']:.2f}x | "
                     f"{r['ratio_p50_vs_alloc_copy']:.2f}x |")
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
