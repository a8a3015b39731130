"""Round-trip latency of the websocket policy path vs calling the same policy in process.

    .venv/bin/python benchmarks/bench_websocket.py --iters 300 [--policy hold] [--policy-override ...]

One observation: state (14,) + 3 cameras (head/left/right) 3x240x320 uint8, as the sim robot
produces them. Local: ``normalizer.policy_input`` + ``policy.predict`` in this process. Remote:
``policy=openpi_remote`` -> ``python -m inference.serve`` (a separate process on loopback, so no
GIL is shared) -> same policy -> back; the server's own ``infer_ms`` is recorded beside it. The
ratio is remote / local (p50); the overhead (remote - local) is what the websocket path costs.
Runs in a private network namespace with only loopback (``scripts/netns.py``; ``NETNS=off``: host network).
With ``hold`` (default: always available) the policy itself is ~free, so the overhead is the
transport; ``--policy flow`` puts the bundled learned policy behind it when its checkpoint exists.
Results: benchmarks/results/websocket.md.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from scripts.netns import network_of_this_run, reexec_in_netns  # noqa: E402

if __name__ == "__main__":
    reexec_in_netns()  # server and client on loopback only (scripts/netns.py)

from hydra import compose, initialize_config_dir  # noqa: E402

from inference.app import CONF_DIR  # noqa: E402
from inference.serve import build_server  # noqa: E402
from policies.openpi import codec  # noqa: E402
from policies.openpi.remote import OpenPIRemotePolicy  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
CAMERAS = ("head", "left", "right")


def stats_ms(x: list[float]) -> dict[str, float]:
    a = np.asarray(x, dtype=np.float64)
    return {
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "mean": float(a.mean()),
    }


def start_server(overrides: list[str]) -> tuple[subprocess.Popen, int]:
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "inference.serve",
            *overrides,
            "serve.port=0",
            "hydra.run.dir=/tmp/bench-websocket-serve",
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    found: dict[str, int] = {}
    event = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            m = re.search(r"serving \S+ on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                found["port"] = int(m.group(1))
                event.set()

    threading.Thread(target=read, daemon=True).start()
    if not event.wait(120):
        proc.kill()
        raise RuntimeError("server did not start")
    return proc, found["port"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--policy", default="hold")
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--out", default=str(RESULTS / "websocket.md"))
    args = ap.parse_args()

    overrides = [
        f"policy={args.policy}",
        "robot=sim",
        "cameras=sim",
        f"cameras.height={args.height}",
        f"cameras.width={args.width}",
    ]
    if args.policy == "hold":
        overrides.append(f"policy.camera_names=[{','.join(CAMERAS)}]")
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=overrides)
    local = build_server(cfg)  # the same policy + normalizer, built here (not served)
    policy, normalizer = local.policy, local.normalizer
    meta = policy.metadata

    rng = np.random.default_rng(0)
    state = rng.normal(size=(1, meta.state_dim)).astype(np.float32) * 0.1
    images = {c: rng.integers(0, 255, (1, 3, args.height, args.width), dtype=np.uint8) for c in CAMERAS}
    obs_local = lambda: normalizer.policy_input(state, images, {})  # noqa: E731

    proc, port = start_server(overrides)
    local_ms, remote_ms, server_ms = [], [], []
    try:
        client = OpenPIRemotePolicy(
            chunk_size=meta.chunk_size,
            action_dim=meta.action_dim,
            state_dim=meta.state_dim,
            camera_names=list(CAMERAS),
            port=port,
            connect_timeout_s=30,
        )
        request_bytes = len(codec.packb(client.observation_dict(obs_local())))
        # interleaved, so both paths see the same background load; both start from the robot's
        # uint8 frames (policy_input converts them, as the engine does before any policy call)
        for i in range(args.warmup + args.iters):
            t0 = time.perf_counter()
            policy.predict(obs_local())
            t1 = time.perf_counter()
            chunk = client.predict(obs_local())
            t2 = time.perf_counter()
            if i >= args.warmup:
                local_ms.append((t1 - t0) * 1e3)
                remote_ms.append((t2 - t1) * 1e3)
                server_ms.append(client.last_timing["infer_ms"])
        assert chunk.shape == (meta.chunk_size, meta.action_dim)
        client.close()
    finally:
        proc.kill()
        proc.wait(10)

    loc, rem, srv = stats_ms(local_ms), stats_ms(remote_ms), stats_ms(server_ms)
    ratio = rem["p50"] / loc["p50"]
    cmd = "cd /work/main && .venv/bin/python benchmarks/bench_websocket.py " + " ".join(sys.argv[1:])
    lines = [
        "# Websocket policy path (openpi protocol) vs local policy call",
        "",
        f"Command: `{cmd.strip()}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"numpy {np.__version__}; shared machine, other jobs running; server in a separate process on loopback, "
        f"run in {network_of_this_run()}.",
        "",
        f"Policy `{args.policy}` (chunk {meta.chunk_size}x{meta.action_dim}); observation: state {meta.state_dim} + "
        f"{len(CAMERAS)} cameras 3x{args.height}x{args.width} uint8; request {request_bytes / 1024:.0f} KiB msgpack; "
        f"{args.iters} iterations after {args.warmup} warm-up.",
        "",
        "| path | p50 ms | p95 ms | p99 ms | mean ms |",
        "|---|---:|---:|---:|---:|",
        f"| local: policy_input + predict | {loc['p50']:.3f} | {loc['p95']:.3f} | {loc['p99']:.3f} | {loc['mean']:.3f} |",
        f"| websocket round trip (client) | {rem['p50']:.3f} | {rem['p95']:.3f} | {rem['p99']:.3f} | {rem['mean']:.3f} |",
        f"| server-reported infer_ms | {srv['p50']:.3f} | {srv['p95']:.3f} | {srv['p99']:.3f} | {srv['mean']:.3f} |",
        "",
        f"**Ratio websocket / local (p50): {ratio:.1f}x; overhead (p50): {rem['p50'] - loc['p50']:.2f} ms per chunk** "
        f"(at 20 Hz with a 25-action execution horizon, one chunk per 1250 ms).",
        "",
    ]
    out = Path(args.out)
    # one section per policy: a rerun replaces its own policy's section and keeps the others
    sections: dict[str, str] = {}
    if out.exists():
        for chunk_text in out.read_text().split("<!-- policy: ")[1:]:
            name, _, body = chunk_text.partition(" -->\n")
            sections[name] = body
    section = "\n".join(lines)
    sections[args.policy] = section
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("".join(f"<!-- policy: {k} -->\n{v}" for k, v in sections.items()))
    print(section)
    print(json.dumps({"local": loc, "remote": rem, "server": srv, "ratio_p50": ratio}))


if __name__ == "__main__":
    main()
