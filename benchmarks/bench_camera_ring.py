"""Cost of a camera frame reaching the control process vs a memcpy of its bytes (cameras in processes of their own).

    .venv/bin/python benchmarks/bench_camera_ring.py --reads 3000

A real ``CameraProcess`` (robots/cameras/process.py) with a producer in its own process writing
frames into the shared-memory ring as fast as it can. Timed on the control side, each on a frame
the producer has just written (cold in this core's cache), the kinds in turn:

* ``read``: ``CameraProcess.read()``, the per-tick cost (newest slot by index, a read-only view of
  it as ``Frame.image``, age check; no copy);
* ``read + snapshot``: ``read()``, ``ObservationHistory.push`` and ``copy_images_into`` a
  preallocated snapshot array (what an RTC request does with the frame: its one copy, then the
  intact check), i.e. the whole way from the ring into the inference snapshot;
* ``memcpy``: ``np.copyto`` of the newest ring slot into a preallocated private array (the bytes
  alone, no protocol).

Sizes: the sim cameras' 96x128 and the real cameras' 240x320, CHW uint8. Results:
benchmarks/results/camera_ring.md (+ .json).
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

from robots.base import Observation  # noqa: E402
from robots.cameras.process import CameraProcess  # noqa: E402
from robots.history import ObservationHistory  # noqa: E402
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
        history = ObservationHistory()
        snapshot = {"bench": np.empty((1, 3, height, width), np.uint8)}
        state = np.zeros(4, np.float32)
        times: dict[str, list[float]] = {"read": [], "read_snapshot": [], "memcpy": []}
        kinds = list(times)
        seen = ring.newest()
        k = 0
        while len(times["read"]) < reads:
            while ring.newest() == seen:  # wait for a frame just written by the producer (cold here)
                time.sleep(0.0001)
            seen = ring.newest()
            kind = kinds[k % len(kinds)]
            k += 1
            if kind == "read":  # the per-tick path
                t0 = time.perf_counter()
                frame = cam.read()
                times[kind].append(time.perf_counter() - t0)
            elif kind == "read_snapshot":  # the request path: ring -> history -> snapshot, one copy
                t0 = time.perf_counter()
                frame = cam.read()
                history.push(Observation(state=state, images={"bench": frame}, timestamp=frame.capture_time))
                history.copy_images_into(snapshot)
                times[kind].append(time.perf_counter() - t0)
            else:  # the same bytes, no protocol: memcpy out of the newest slot
                src = ring._slot_views["image"][seen % ring.slots]
                t0 = time.perf_counter()
                np.copyto(dst, src)
                times[kind].append(time.perf_counter() - t0)
            seen = max(seen, cam._last_n)
        drop = min(100, reads // 10)
        out = {
            "shape": [3, height, width],
            "bytes": int(dst.nbytes),
            "reads": reads - drop,
            **{kind: stats_us(t[drop:]) for kind, t in times.items()},
        }
        out["ratio_read_vs_memcpy"] = out["read"]["p50_us"] / out["memcpy"]["p50_us"]
        out["ratio_read_snapshot_vs_memcpy"] = out["read_snapshot"]["p50_us"] / out["memcpy"]["p50_us"]
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
    meta = {
        "command": "cd /work/main && .venv/bin/python benchmarks/bench_camera_ring.py " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}",
        "load_avg": os.getloadavg(),
    }
    Path(args.out + ".json").write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    lines = [
        "# Camera frame into the control process vs memcpy",
        "",
        f"Command: `{meta['command']}`",
        "",
        f"Machine: {meta['machine']}; load average at the end {meta['load_avg'][0]:.1f}.",
        "",
        "Timed on the control side on a frame the producer (its own process, a frame every 0.2 ms) has "
        "just written, the kinds in turn: `read` = `CameraProcess.read()` (newest slot by index, a "
        "read-only view as `Frame.image`, age check: the per-tick cost, no copy); `read + snapshot` = "
        "`read()`, `ObservationHistory.push` and `copy_images_into` a preallocated snapshot (an RTC "
        "request's one copy of the frame, then the intact check); `memcpy` = `np.copyto` of the newest "
        "slot into a preallocated private array (the bytes alone).",
        "",
        "| frame | bytes | reads | read p50 / p99 us | read + snapshot p50 / p99 us | memcpy p50 / p99 us | "
        "read / memcpy (p50) | read + snapshot / memcpy (p50) |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['shape'][1]}x{r['shape'][2]} | {r['bytes']} | {r['reads']} | "
            f"{r['read']['p50_us']:.1f} / {r['read']['p99_us']:.1f} | "
            f"{r['read_snapshot']['p50_us']:.1f} / {r['read_snapshot']['p99_us']:.1f} | "
            f"{r['memcpy']['p50_us']:.1f} / {r['memcpy']['p99_us']:.1f} | "
            f"{r['ratio_read_vs_memcpy']:.2f}x | {r['ratio_read_snapshot_vs_memcpy']:.2f}x |"
        )
    Path(args.out + ".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
