"""Split RTC (inference in a Ray actor on ``inference_pc``) vs local RTC (shared memory + spawned process).

    .venv/bin/python benchmarks/bench_split.py                  # starts and stops its own 2-node cluster
    .venv/bin/python benchmarks/bench_split.py --address HOST:PORT --rounds 200 --steps 400

1. Per inference: the same request (a real sim observation + a guide) served by the
   same ``InferenceServer`` class in this process (``local``) and through Ray in the actor on the
   worker node (``remote``: ``ray.get(actor.infer.remote(req))``, one in flight), per camera payload:
   none, 3 x 128x96 raw, 3 x 320x240 raw, 3 x 320x240 JPEG q90. The policy is the scripted expert
   (sub-millisecond) so what is left is the transport overhead: remote - local, and the ratio.
2. Per tick: full runs of ``algorithm=rtc`` and ``algorithm=rtc_split`` on the real-time sim robot
   (same steps, execute horizon, cameras): control-side compute per tick (``compute_ms``: merge +
   publish/submit + schedule), period error, inference latency and d, from each run's summary.

Local cluster: head + worker (``inference_pc``), 1 CPU and 100 MB object store each, same machine:
the transport is loopback TCP + Ray's object store, i.e. a lower bound for a LAN. That cluster
and this script run in a private network namespace with only loopback (``scripts/netns.py``;
``NETNS=off``: host network), where Ray's node addresses are 127.0.0.1 rather than the machine's
routable address. Writes
benchmarks/results/split.md (``--out``) with the command line.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import socket
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("WANDB_MODE", "offline")

from algorithms.chunking.chunk_logic import prev_remainder  # noqa: E402
from algorithms.rtc_split.server import InferenceServer  # noqa: E402
from algorithms.wire import encode_request, payload_bytes  # noqa: E402
from inference.app import compose_run  # noqa: E402
from policies.base import Guidance, Schedule  # noqa: E402
from policies.runner import Guide  # noqa: E402
from scripts.netns import network_of_this_run, reexec_in_netns  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_cluster(temp_dir: str) -> str:
    from inference.cluster import start_node

    flags = dict(num_cpus=1, object_store_memory_bytes=100 * 1024 * 1024, temp_dir=temp_dir)
    head = start_node(
        "head", auth_mode="disabled", port=0, dashboard_port=_free_port(), ray_client_server_port=_free_port(), **flags
    )
    start_node(
        "worker",
        auth_mode="disabled",
        head_address=head.address,
        resources={"inference_pc": 1},
        include_log_monitor=False,
        **flags,
    )
    return head.address


def make_request(cameras: str, width: int, height: int, jpeg: int | None) -> tuple[dict, object]:
    """A guided request built from a real (lockstep) sim observation; returns (request, run)."""
    over = ["robot=sim", "policy=scripted", "robot.realtime=false", f"cameras={cameras}"]
    if cameras != "none":
        over += [f"cameras.width={width}", f"cameras.height={height}"]
    run = compose_run(over)
    robot = run.make_robot()
    robot.start()
    try:
        robot.home(seed=0)
        obs = robot.read()
    finally:
        robot.stop()
    history = run.make_history()
    history.push(obs)
    snap = history.snapshot()
    H, A = run.policy_metadata.chunk_size, run.policy_metadata.action_dim
    prev = prev_remainder(np.zeros((H, A), np.float32), 25)
    guide = Guide(
        prev, delay_ticks=2, execute_horizon=25, guidance=Guidance.VJP, schedule=Schedule.EXP, max_guidance_weight=5.0
    )
    req = encode_request(0, snap.state, snap.images, obs.info, guide, jpeg_quality=jpeg)
    return req, run


def bench_inference(rounds: int) -> list[dict]:
    import ray

    cases = [
        ("no cameras", "none", 0, 0, None),
        ("3 x 128x96 raw", "sim", 128, 96, None),
        ("3 x 320x240 raw", "sim", 320, 240, None),
        ("3 x 320x240 JPEG q90", "sim", 320, 240, 90),
    ]
    rows = []
    for label, cams, w, h, jpeg in cases:
        req, run = make_request(cams, w, h, jpeg)
        local = InferenceServer(run)
        actor = ray.remote(InferenceServer).options(resources={"inference_pc": 1}, num_cpus=1).remote(run)
        node = ray.get(actor.ready.remote(), timeout=120)
        for _ in range(5):  # warm both paths
            local.infer(req)
            ray.get(actor.infer.remote(req))
        lt, rt, rs = [], [], []
        for _ in range(rounds):
            t0 = time.perf_counter()
            local.infer(req)
            lt.append((time.perf_counter() - t0) * 1e3)
            t0 = time.perf_counter()
            res = ray.get(actor.infer.remote(req))
            rt.append((time.perf_counter() - t0) * 1e3)
            rs.append(res["server_ms"])
        ray.kill(actor)
        lt_, rt_, rs_ = (np.asarray(x) for x in (lt, rt, rs))
        rows.append(
            dict(
                case=label,
                bytes=payload_bytes(req),
                local_p50=np.median(lt_),
                local_p99=np.percentile(lt_, 99),
                remote_p50=np.median(rt_),
                remote_p99=np.percentile(rt_, 99),
                server_p50=np.median(rs_),
                overhead_p50=np.median(rt_) - np.median(lt_),
                ratio=np.median(rt_) / max(np.median(lt_), 1e-6),
                node=str(node["node_id"])[:8],
            )
        )
        print(
            f"{label:24s} {rows[-1]['bytes']:>8d} B  local {rows[-1]['local_p50']:7.3f} ms  remote "
            f"{rows[-1]['remote_p50']:7.3f} ms  (x{rows[-1]['ratio']:.1f})",
            flush=True,
        )
    return rows


def bench_ticks(address: str, steps: int, horizon: int, cameras: str) -> list[dict]:
    common = [
        "robot=sim",
        "policy=scripted",
        f"cameras={cameras}",
        f"max_steps={steps}",
        f"algorithm.execute_horizon={horizon}",
        "algorithm.stop_on_success=false",
    ]
    if cameras != "none":  # 3 offscreen renders on a loaded 2-core box can lag 0.5 s; staleness is not measured here
        common.append("cameras.max_frame_age_s=2.0")
    rows = []
    for algo, extra in (("rtc", []), ("rtc_split", [f"algorithm.address={address}"])):
        run = compose_run([f"algorithm={algo}", *common, *extra], run_dir=tempfile.mkdtemp(prefix=f"bench-{algo}-"))
        try:
            s = run.execute()
        except Exception as exc:  # noqa: BLE001 - report the failure in the table, keep the other rows
            print(f"{algo} cameras={cameras} failed: {exc}", flush=True)
            rows.append(dict(algorithm=algo, cameras=cameras, failed=f"{type(exc).__name__}: {exc}"))
            shutil.rmtree(run.run_dir, ignore_errors=True)
            continue
        rows.append(
            dict(
                algorithm=algo,
                cameras=cameras,
                ticks=s["ticks"],
                inferences=s["inferences"],
                compute_p50=s.get("compute_ms_p50", float("nan")),
                compute_p99=s.get("compute_ms_p99", float("nan")),
                period_p99=s.get("abs_period_error_ms_p99", float("nan")),
                underruns=s["underruns"],
                latency_p50=s.get("inference_latency_ms_p50", float("nan")),
                d_p50=s.get("d_actual_p50", float("nan")),
                d_max=s.get("d_actual_max", float("nan")),
                transport_p50=s.get("transport_ms_p50", float("nan")),
            )
        )
        shutil.rmtree(run.run_dir, ignore_errors=True)
        print(rows[-1], flush=True)
    return rows


def write(out: Path, inf: list[dict], ticks: list[dict], argv: list[str]) -> None:
    lines = [
        "# Split RTC vs local RTC: transport overhead",
        "",
        f"Command: `.venv/bin/python benchmarks/{Path(argv[0]).name} {' '.join(argv[1:])}`",
        "",
        f"Machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores (shared with other work), "
        f"Python {platform.python_version()}; Ray 2-node cluster on this machine (loopback: a lower bound for a LAN), "
        f"run in {network_of_this_run()}.",
        "",
        "## Per inference (same request, scripted policy; one request in flight)",
        "",
        "| payload | bytes | local p50 ms | local p99 ms | remote p50 ms | remote p99 ms | server p50 ms | overhead p50 ms | ratio remote/local |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in inf:
        lines.append(
            f"| {r['case']} | {r['bytes']} | {r['local_p50']:.3f} | {r['local_p99']:.3f} | {r['remote_p50']:.3f} | "
            f"{r['remote_p99']:.3f} | {r['server_p50']:.3f} | {r['overhead_p50']:.3f} | {r['ratio']:.1f} |"
        )
    lines += [
        "",
        "## Per tick (real-time sim robot at 20 Hz, full runs)",
        "",
        "`compute_ms` is the control side's own work per tick (merge a result, publish the observation to shared "
        "memory / encode and submit it to Ray, schedule); d is counted in ticks on the control side.",
        "",
        "| algorithm | cameras | ticks | inferences | compute p50 ms | compute p99 ms | abs period err p99 ms | underruns | inference latency p50 ms | d_actual p50 | d_actual max | transport p50 ms |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in ticks:
        if "failed" in r:
            lines.append(f"| {r['algorithm']} | {r['cameras']} | failed: {r['failed']} |" + " |" * 10)
            continue
        lines.append(
            f"| {r['algorithm']} | {r['cameras']} | {r['ticks']} | {r['inferences']} | {r['compute_p50']:.3f} | "
            f"{r['compute_p99']:.3f} | {r['period_p99']:.2f} | {r['underruns']} | {r['latency_p50']:.1f} | "
            f"{r['d_p50']:g} | {r['d_max']:g} | {r['transport_p50']:.1f} |"
        )
    by = {}
    for r in ticks:
        by.setdefault(r["cameras"], {})[r["algorithm"]] = r
    lines += ["", "Ratios split/local (per tick compute p50, p99):", ""]
    for cams, pair in by.items():
        if "rtc" in pair and "rtc_split" in pair and "failed" not in pair["rtc"] and "failed" not in pair["rtc_split"]:
            a, b = pair["rtc"], pair["rtc_split"]
            lines.append(
                f"- cameras={cams}: compute p50 x{b['compute_p50'] / max(a['compute_p50'], 1e-6):.1f}, "
                f"p99 x{b['compute_p99'] / max(a['compute_p99'], 1e-6):.1f}"
            )
    lines += [
        "",
        "Notes: split inference latency = request submitted -> result arrived in the control process (stamped by a "
        "waiter thread, not quantized to the tick); `transport p50` = that latency minus the actor's own time "
        "(decode + policy). d_actual is ticks from snapshot to merge (the merge happens at the next tick after "
        "arrival), so with a 20 Hz loop any transport under one period still gives d = 1. Local RTC latency is "
        "measured inside the inference process (snapshot -> publish).",
        "",
    ]
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines))
    print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--address", default=None, help="existing cluster (host:port); default: start a local one")
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--horizon", type=int, default=10)
    ap.add_argument("--tick-cameras", nargs="+", default=["none", "sim"])
    ap.add_argument("--out", type=Path, default=RESULTS / "split.md")
    args = ap.parse_args()
    if args.address is None:  # its own cluster: loopback only (scripts/netns.py); an existing one needs the network
        reexec_in_netns()
    import logging

    logging.basicConfig(level=logging.WARNING)
    temp_dir = None
    try:
        address = args.address
        if address is None:
            temp_dir = tempfile.mkdtemp(prefix="raybench", dir="/tmp")
            address = start_cluster(temp_dir)
        from inference.launcher.ray import connect

        connect(address, "bench", 30.0, os.environ["RAY_AUTH_MODE"])
        inf = bench_inference(args.rounds)
        ticks = []
        for cams in args.tick_cameras:
            ticks += bench_ticks(address, args.steps, args.horizon, cams)
        write(args.out, inf, ticks, sys.argv)
    finally:
        import ray

        if ray.is_initialized():
            ray.shutdown()
        if temp_dir is not None:
            from inference.cluster import stop_nodes

            stop_nodes(temp_dir, grace_s=5.0)
            shutil.rmtree(temp_dir, ignore_errors=True)


if __name__ == "__main__":
    main()
