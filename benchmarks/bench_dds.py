"""ROS 2 over CycloneDDS on loopback: command round trip and per-tick robot I/O cost for IGRIS_B.

    python benchmarks/bench_dds.py                 # twin in a separate process (the realistic case)
    python benchmarks/bench_dds.py --twin inprocess --rounds 500 --ticks 200

1. Round trip: a 12-joint sensor_msgs/JointState published on /igris_b/packy/target_joints, echoed
   by the twin (``twin.echo=true``: republished from its DDS listener on ``<topic>/echo``), timed
   from just before ``publish`` to the echo's arrival in our listener (monotonic clock, one
   message in flight at a time; the echo's bytes are checked to be this round's message).
2. Per tick: ``Ros2Robot.read()`` (staleness checks, CDR decode of fresh messages, slicing) and
   ``send()`` (staleness check, limits/slew guard, split into 2 messages, encode, DDS write),
   paced at the robot rate (20 Hz) so every read decodes new messages, with and without three
   320x240 ROS image cameras.

All traffic stays on 127.0.0.1 (CycloneDDS loopback-only, multicast off) on a private random
ROS domain, inside a private network namespace with only loopback (``scripts/netns.py``; the first
line printed says whether; ``NETNS=off`` to run on the host network). Writes a markdown table to
benchmarks/results/dds.md (``--out``) with the command.
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from scripts.netns import network_of_this_run, reexec_in_netns  # noqa: E402

if __name__ == "__main__":
    reexec_in_netns()  # loopback only, whatever a DDS profile says (scripts/netns.py)

from robots.ros2.testing import isolated_dds_env  # noqa: E402

os.environ.update(isolated_dds_env())  # before any DDS participant exists

from omegaconf import OmegaConf  # noqa: E402

from robots.cameras.base import FrameSpec  # noqa: E402
from robots.cameras.ros_image import RosImageCamera  # noqa: E402
from robots.ros2 import messages  # noqa: E402
from robots.ros2.robot import Ros2Robot  # noqa: E402
from robots.ros2.transport import make_transport  # noqa: E402
from robots.twin import RobotTwin  # noqa: E402

CMD_TOPIC = "/igris_b/packy/target_joints"


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


class Twin:
    """The twin with echo on, in this process or as `python -m robots.twin` in another."""

    def __init__(self, mode: str, cameras: bool) -> None:
        self.mode = mode
        cams = OmegaConf.load(ROOT / "conf" / "cameras" / "ros_topics.yaml")
        if mode == "inprocess":
            topics = {k: d.topic for k, d in cams.devices.items()} if cameras else {}
            self.twin = RobotTwin(
                OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml"),
                tau_s=0.05,
                start_pose="home",
                echo=True,
                image_topics=topics,
            ).start()
        else:
            cmd = [
                sys.executable,
                "-m",
                "robots.twin",
                "robot=igris_b",
                "twin.echo=true",
                "twin.tau_s=0.05",
                "twin.start_pose=home",
                "hydra/job_logging=disabled",
                "hydra.output_subdir=null",
                "hydra.run.dir=.",
                f"cameras={'ros_topics' if cameras else 'none'}",
            ]
            self.proc = subprocess.Popen(cmd, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def stop(self) -> None:
        if self.mode == "inprocess":
            self.twin.stop()
        else:
            self.proc.terminate()
            self.proc.wait(timeout=10)


def round_trip(rounds: int) -> list[float]:
    t = make_transport("dds")
    got = threading.Event()
    arrivals: list[tuple[bytes, float]] = []

    def on_echo(raw: bytes, t_recv: float) -> None:
        arrivals.append((raw, t_recv))
        got.set()

    t.subscribe(CMD_TOPIC + "/echo", "JointState", on_raw=on_echo)
    pub = t.publisher(CMD_TOPIC, "JointState")
    names = [f"j{i}" for i in range(12)]
    deadline = time.monotonic() + 30
    while not got.is_set() and time.monotonic() < deadline:  # discovery, both directions
        pub.publish(messages.joint_state(names, np.zeros(12)))
        got.wait(0.1)
    if not got.is_set():
        raise SystemExit("no echo from the twin within 30 s")
    time.sleep(0.2)
    samples, lost = [], 0
    for i in range(rounds):
        got.clear()
        arrivals.clear()
        msg = messages.joint_state(names, np.full(12, i * 1e-3))
        sent = messages.serialize(msg, "JointState")
        t0 = time.monotonic()
        pub.publish_raw(sent)
        if not got.wait(1.0):
            lost += 1
            continue
        raw, t_recv = arrivals[-1]
        if raw[: len(sent)] != sent:  # a late echo of an earlier round: not this one
            lost += 1
            continue
        samples.append(t_recv - t0)
        time.sleep(0.002)
    t.close()
    if lost:
        print(f"round trip: {lost} of {rounds} rounds lost or out of order (excluded)", file=sys.stderr)
    return samples


def per_tick(ticks: int, hz: float, cameras: bool) -> dict[str, list[float]]:
    cfg = OmegaConf.to_container(OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml"))
    params = {k: v for k, v in cfg.items() if not k.startswith("_") and k != "defaults"}  # defaults: Hydra's list
    params.update(transport="dds", topic_timeout_s=30.0, max_state_age_s=1.0)
    factories = None
    if cameras:
        cams = OmegaConf.load(ROOT / "conf" / "cameras" / "ros_topics.yaml")
        factories = {
            k: (
                lambda host, _t=d.topic, _n=k: RosImageCamera(
                    FrameSpec(_n, 320, 240, 1.0), host=host, topic=_t, open_timeout_s=30.0
                )
            )
            for k, d in cams.devices.items()
        }
    robot = Ros2Robot(cameras=factories, **params)
    robot.start()
    read_s, send_s = [], []
    try:
        action = robot.spec.home.copy()
        period = 1.0 / hz
        t_next = time.monotonic()
        for i in range(ticks):
            t0 = time.perf_counter()
            obs = robot.read()
            t1 = time.perf_counter()
            action[0] = robot.spec.home[0] + 0.05 * np.sin(i * period)
            robot.send(action)
            t2 = time.perf_counter()
            read_s.append(t1 - t0)
            send_s.append(t2 - t1)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))
        assert obs.state.shape == (24,)
    finally:
        robot.stop()
    return {"read": read_s, "send": send_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--twin", choices=["process", "inprocess"], default="process")
    ap.add_argument("--rounds", type=int, default=1000)
    ap.add_argument("--ticks", type=int, default=200)
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "dds.md")
    args = ap.parse_args()

    rows = []
    twin = Twin(args.twin, cameras=False)
    try:
        rows.append(("round trip: publish JointState(12) -> twin echo -> receive", stats_ms(round_trip(args.rounds))))
        ticks = per_tick(args.ticks, args.hz, cameras=False)
        rows.append(("Ros2Robot.read() (2 state topics, no cameras)", stats_ms(ticks["read"])))
        rows.append(("Ros2Robot.send() (2 command topics)", stats_ms(ticks["send"])))
    finally:
        twin.stop()
    twin = Twin(args.twin, cameras=True)
    try:
        ticks = per_tick(args.ticks, args.hz, cameras=True)
        rows.append(("Ros2Robot.read() + 3 ROS image cameras 320x240", stats_ms(ticks["read"])))
    finally:
        twin.stop()

    cmd = "python " + " ".join([Path(sys.argv[0]).as_posix()] + sys.argv[1:])
    lines = [
        "# DDS transport: round trip and per-tick robot I/O (IGRIS_B)",
        "",
        f"Command: `{cmd}`  ",
        f"Twin: {args.twin}; {args.rounds} round trips; {args.ticks} ticks at {args.hz:g} Hz.  ",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}, "
        f"{platform.platform()}; CycloneDDS on 127.0.0.1 only, multicast off, "
        f"domain {os.environ['ROS_DOMAIN_ID']}; run in {network_of_this_run()}. "
        "Shared machine: other jobs were running.",
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
