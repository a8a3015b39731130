"""An IGRIS_B-like robot node in plain rclpy: what a real ROS 2 driver does, nothing of ours imported.

Runs under any rclpy (our venv's ROS 2 Kilted wheels, the Jazzy side venv): publishes
``joint_states`` (sensor_msgs/JointState, 12 positions, right arm first) and ``finger_state``
(std_msgs/Float32MultiArray, 12 values) at 20 Hz with the given reliability, subscribes the command
topics with ROS 2's default QoS (reliable, volatile, depth 10) and tracks them (first order,
``tau_s``). On SIGTERM/SIGINT or after ``--duration-s`` it writes a JSON report to ``--out``:
commands received, the joint names, every arm command (position vectors), the final pose.

    python tests/ros2_nodes/igris_node.py --reliability best_effort --out report.json
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--robot-id", default="packy")
    ap.add_argument("--reliability", choices=["reliable", "best_effort"], default="reliable")
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--tau-s", type=float, default=0.05)
    ap.add_argument("--start", choices=["zeros", "home"], default="zeros")
    ap.add_argument("--mute-after-s", type=float, default=None, help="stop publishing joint_states after this")
    ap.add_argument("--duration-s", type=float, default=120.0)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import JointState
    from std_msgs.msg import Float32MultiArray, MultiArrayDimension

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("igris_b_driver", context=ctx)
    state_qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
    )
    base = f"/igris_b/{args.robot_id}"
    pub_js = node.create_publisher(JointState, f"{base}/joint_states", state_qos)
    pub_fs = node.create_publisher(Float32MultiArray, f"{base}/finger_state", state_qos)
    deg = math.pi / 180.0
    # wire order: right arm 0..5, left arm 6..11; fingers: right 0..5, left 6..11
    home_arms = [20, 30, 0, -120, 0, 0, -20, -30, 0, 120, 0, 0]
    home_hands = [1, 1, 1, 1, 1, 0.5] * 2
    q_arms = [v * deg for v in home_arms] if args.start == "home" else [0.0] * 12
    q_hands = list(home_hands) if args.start == "home" else [0.0] * 12
    target_arms, target_hands = list(q_arms), list(q_hands)
    lock = threading.Lock()
    report = {
        "commands": 0,
        "hand_commands": 0,
        "names": None,
        "arm_commands": [],
        "reliability": args.reliability,
        "rclpy": getattr(rclpy, "__file__", ""),
    }

    def on_arms(msg: JointState) -> None:
        with lock:
            report["commands"] += 1
            if report["names"] is None:
                report["names"] = list(msg.name)
            report["arm_commands"].append([float(v) for v in msg.position])
            if len(msg.position) == 12:
                target_arms[:] = [float(v) for v in msg.position]

    def on_hands(msg: Float32MultiArray) -> None:
        with lock:
            report["hand_commands"] += 1
            if len(msg.data) == 12:
                target_hands[:] = [float(v) for v in msg.data]

    node.create_subscription(JointState, f"{base}/target_joints", on_arms, 10)
    node.create_subscription(Float32MultiArray, f"{base}/finger_target", on_hands, 10)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())

    def spin() -> None:
        while not stop.is_set():
            executor.spin_once(timeout_sec=0.02)

    spin = threading.Thread(target=spin, daemon=True)
    spin.start()
    period = 1.0 / args.hz
    alpha = 1.0 - math.exp(-period / args.tau_s)
    t0 = time.monotonic()
    tick = 0
    print("node up", flush=True)
    while not stop.is_set() and time.monotonic() - t0 < args.duration_s:
        with lock:
            q_arms[:] = [q + (t - q) * alpha for q, t in zip(q_arms, target_arms)]
            q_hands[:] = [q + (t - q) * alpha for q, t in zip(q_hands, target_hands)]
            arms, hands = list(q_arms), list(q_hands)
        muted = args.mute_after_s is not None and time.monotonic() - t0 > args.mute_after_s
        if not muted:
            js = JointState()
            js.header.stamp = node.get_clock().now().to_msg()
            js.name = [f"right_arm_{i}" for i in range(1, 7)] + [f"left_arm_{i}" for i in range(1, 7)]
            js.position = arms
            pub_js.publish(js)
        fs = Float32MultiArray()
        fs.layout.dim = [MultiArrayDimension(label="", size=12, stride=12)]
        fs.data = [float(v) for v in hands]
        pub_fs.publish(fs)
        tick += 1
        time.sleep(max(0.0, t0 + tick * period - time.monotonic()))
    stop.set()
    spin.join(timeout=1.0)
    with lock:
        report["final_arms"] = list(q_arms)
        report["final_hands"] = list(q_hands)
    with open(args.out, "w") as f:
        json.dump(report, f)
    executor.shutdown()
    ctx.try_shutdown()


if __name__ == "__main__":
    main()
