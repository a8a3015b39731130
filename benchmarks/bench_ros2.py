"""ROS 2 across transports and vendors on loopback: JointState round trip, per-tick robot I/O cost.

    python benchmarks/bench_ros2.py                      # everything, ~2 min
    python benchmarks/bench_ros2.py --rounds 300 --ticks 100

1. Round trip of a 12-joint sensor_msgs/JointState, one message in flight at a time, timed from
   just before ``publish`` to the echo's arrival (monotonic clock); the echo is another process:

   - DDS<->DDS: our DDS transport -> our DDS transport echoing raw CDR
   - rclpy<->rclpy: our rclpy transport -> a plain rclpy echo node (both ROS 2 Kilted, Fast DDS 3)
   - DDS<->Kilted: our DDS transport -> the plain rclpy echo node under ROS 2 Kilted (Fast DDS 3.2)
   - DDS<->Jazzy: our DDS transport -> the same echo node under ROS 2 Jazzy (Fast DDS 2.14,
     ``.venvs/ros2-jazzy``; ``python -m tests.side_envs ros2-jazzy`` builds it)

2. Per tick, ``Ros2Robot.read()`` and ``send()`` at 20 Hz against the twin (another process, same
   transport), for each transport.

All traffic stays on 127.0.0.1 on a private random ROS domain: CycloneDDS by CYCLONEDDS_URI,
Fast DDS by the loopback XML profile (``robots.ros2.testing``); as root the script also re-runs
itself in a private network namespace with only loopback (``unshare -n``; ``NETNS=off`` skips
it). Writes benchmarks/results/ros2.md (``--out``) with the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def _reexec_in_netns() -> None:
    """As root: run this script again in a fresh network namespace (loopback only)."""
    if os.environ.get("NETNS") == "off" or os.environ.get("_BENCH_IN_NETNS") or os.geteuid() != 0:
        return
    if not shutil.which("unshare") or not shutil.which("ip"):
        return
    env = {**os.environ, "_BENCH_IN_NETNS": "1"}
    script = 'ip link set lo up && exec "$@"'
    os.execvpe("unshare", ["unshare", "-n", "sh", "-c", script, "sh", sys.executable, *sys.argv], env)


if __name__ == "__main__":
    _reexec_in_netns()

from robots.ros2.fastdds import engine_profile, profile_env  # noqa: E402
from robots.ros2.testing import foreign_ros_env, isolated_dds_env, robot_side_env  # noqa: E402

if not os.environ.get("_BENCH_ROS_ENV"):  # the echo subprocesses inherit the parent's domain
    _mode = os.environ.get("RMW_FASTRTPS_PUBLICATION_MODE", "AUTO")  # SYNCHRONOUS: compare without pacing
    os.environ.update(isolated_dds_env(), _BENCH_ROS_ENV="1")  # before any participant exists
    if _mode != "AUTO":
        os.environ.update(
            profile_env(engine_profile(loopback=True, pacing=False), "fastdds-engine-loopback"),
            RMW_FASTRTPS_PUBLICATION_MODE=_mode,
        )

from omegaconf import OmegaConf  # noqa: E402

from robots.ros2 import messages  # noqa: E402
from robots.ros2.robot import Ros2Robot  # noqa: E402
from robots.ros2.transport import make_transport  # noqa: E402

PING, PONG = "/bench/ping", "/bench/pong"
ECHO_NODE = ROOT / "tests" / "ros2_nodes" / "echo_node.py"
JAZZY = ROOT / ".venvs" / "ros2-jazzy" / "bin" / "python"


def stats_ms(samples_s: list[float]) -> dict[str, float]:
    a = np.asarray(samples_s) * 1e3
    return {
        "n": len(a),
        "p50": float(np.percentile(a, 50)),
        "p95": float(np.percentile(a, 95)),
        "p99": float(np.percentile(a, 99)),
        "max": float(a.max()),
        "mean": float(a.mean()),
    }


def _echo_ours(kind: str) -> None:
    """``--echo-ours KIND``: our transport republishing every ping as raw CDR (a subprocess)."""
    t = make_transport(kind, node_name=f"echo_{kind}")
    pub = t.publisher(PONG, "JointState")
    t.subscribe(PING, "JointState", on_raw=lambda raw, _t: pub.publish_raw(raw))
    print("echo up", flush=True)
    try:
        while True:
            time.sleep(1.0)
    except KeyboardInterrupt:
        pass
    finally:
        t.close()


def start_echo(echo: str) -> subprocess.Popen:
    env = robot_side_env(dict(os.environ))  # the echo nodes are unmodified ROS 2 nodes: Fast DDS defaults
    if echo == "ours-dds":
        cmd = [sys.executable, str(Path(__file__).resolve()), "--echo-ours", "dds"]
    elif echo == "kilted":
        cmd = [sys.executable, str(ECHO_NODE)]
    elif echo == "jazzy":
        if not JAZZY.exists():
            raise SystemExit(f"{JAZZY} missing: run `python -m tests.side_envs ros2-jazzy` first")
        cmd, env = [str(JAZZY), str(ECHO_NODE)], foreign_ros_env(env)
    else:
        raise ValueError(echo)
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    line = proc.stdout.readline()
    if "echo up" not in line:
        raise SystemExit(f"echo {echo} did not start: {line!r}")
    return proc


def round_trip(ours: str, echo: str, rounds: int) -> list[float]:
    proc = start_echo(echo)
    t = make_transport(ours, node_name=f"bench_{ours}")
    got = threading.Event()
    arrivals: list[tuple[bytes, float]] = []

    def on_pong(raw: bytes, t_recv: float) -> None:
        arrivals.append((raw, t_recv))
        got.set()

    try:
        t.subscribe(PONG, "JointState", on_raw=on_pong)
        pub = t.publisher(PING, "JointState")
        names = [f"j{i}" for i in range(12)]
        deadline = time.monotonic() + 30
        while not got.is_set() and time.monotonic() < deadline:  # discovery, both directions
            pub.publish(messages.joint_state(names, np.zeros(12)))
            got.wait(0.1)
        if not got.is_set():
            raise SystemExit(f"no echo from {echo} within 30 s")
        time.sleep(0.3)
        samples, lost = [], 0
        for i in range(rounds):
            got.clear()
            arrivals.clear()
            sent = messages.serialize(messages.joint_state(names, np.full(12, i * 1e-3)), "JointState")
            t0 = time.monotonic()
            pub.publish_raw(sent)
            if not got.wait(1.0):
                lost += 1
                continue
            raw, t_recv = arrivals[-1]
            if raw[: len(sent)] != sent:  # a late echo of an earlier round
                lost += 1
                continue
            samples.append(t_recv - t0)
            time.sleep(0.002)
        if lost:
            print(f"{ours}->{echo}: {lost} of {rounds} rounds lost or out of order (excluded)", file=sys.stderr)
        return samples
    finally:
        t.close()
        proc.terminate()
        proc.wait(timeout=10)


def per_tick(transport: str, ticks: int, hz: float) -> dict[str, list[float]]:
    twin = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robots.twin",
            "robot=igris_b",
            f"twin.transport={transport}",
            "twin.tau_s=0.05",
            "twin.start_pose=home",
            "cameras=none",
            "hydra/job_logging=disabled",
            "hydra.output_subdir=null",
            "hydra.run.dir=.",
        ],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml"))
    params = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "defaults"}  # defaults: Hydra's list
    params.update(transport=transport, topic_timeout_s=30.0, max_state_age_s=1.0)
    robot = Ros2Robot(**params)
    read_s, send_s = [], []
    try:
        robot.start()
        action = robot.spec.home.copy()
        period = 1.0 / hz
        t_next = time.monotonic()
        for i in range(ticks):
            t0 = time.perf_counter()
            robot.read()
            t1 = time.perf_counter()
            action[0] = robot.spec.home[0] + 0.05 * np.sin(i * period)
            robot.send(action)
            t2 = time.perf_counter()
            read_s.append(t1 - t0)
            send_s.append(t2 - t1)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
    finally:
        robot.stop()
        twin.terminate()
        twin.wait(timeout=10)
    return {"read": read_s, "send": send_s}


PAIRS = [
    ("DDS<->DDS", "dds", "ours-dds"),
    ("rclpy<->rclpy (Kilted)", "rclpy", "kilted"),
    ("DDS<->Kilted rclpy node (Fast DDS 3.2)", "dds", "kilted"),
    ("DDS<->Jazzy rclpy node (Fast DDS 2.14)", "dds", "jazzy"),
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--echo-ours", choices=["dds", "rclpy"], default=None, help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "ros2.md")
    args = ap.parse_args()
    if args.echo_ours:
        _echo_ours(args.echo_ours)
        return

    load_start = os.getloadavg()[0]
    rows = []
    for name, ours, echo in PAIRS:
        rows.append((f"round trip {name}", stats_ms(round_trip(ours, echo, args.rounds))))
    for transport in ("dds", "rclpy"):
        ticks = per_tick(transport, args.ticks, args.hz)
        rows.append((f"Ros2Robot.read() over {transport} (2 state topics)", stats_ms(ticks["read"])))
        rows.append((f"Ros2Robot.send() over {transport} (2 command topics)", stats_ms(ticks["send"])))

    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    netns = "a private network namespace (loopback only)" if os.environ.get("_BENCH_IN_NETNS") else "the host network"
    mode = os.environ.get("RMW_FASTRTPS_PUBLICATION_MODE", "")
    lines = [
        "# ROS 2 transports and vendors: JointState round trip and per-tick robot I/O (IGRIS_B)",
        "",
        f"Command: `{cmd}`  ",
        f"{args.rounds} round trips per pair (echo in another process); {args.ticks} ticks at "
        f"{args.hz:g} Hz against the twin (another process, same transport).  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}; run in {netns}; CycloneDDS and Fast DDS on 127.0.0.1 only (UDPv4, no "
        f"multicast, no shared memory), domain {os.environ['ROS_DOMAIN_ID']}; our rclpy side: "
        f"RMW_FASTRTPS_PUBLICATION_MODE={mode} ({'paced asynchronous writers' if mode == 'AUTO' else 'as named'}), "
        f"the echo nodes: Fast DDS defaults. Shared machine: 1-min load average {load_start:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end (tails vary run to run with it).",
        "",
        "| measurement | n | p50 ms | p95 ms | p99 ms | max ms | mean ms |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, s in rows:
        lines.append(
            f"| {name} | {s['n']} | {s['p50']:.3f} | {s['p95']:.3f} | {s['p99']:.3f} | {s['max']:.3f} | {s['mean']:.3f} |"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
