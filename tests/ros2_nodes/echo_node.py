"""A plain rclpy echo node: every message on ``--ping`` is republished, as received (raw CDR), on
``--pong``. Reliable, volatile, depth 10 both ways. Used by benchmarks/bench_ros2.py.

    python tests/ros2_nodes/echo_node.py --ping /bench/ping --pong /bench/pong
"""

from __future__ import annotations

import argparse
import signal
import threading


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--ping", default="/bench/ping")
    ap.add_argument("--pong", default="/bench/pong")
    ap.add_argument("--duration-s", type=float, default=600.0)
    args = ap.parse_args()

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from sensor_msgs.msg import JointState

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node("echo_node", context=ctx)
    pub = node.create_publisher(JointState, args.pong, 10)
    node.create_subscription(JointState, args.ping, lambda raw: pub.publish(raw), 10, raw=True)
    executor = SingleThreadedExecutor(context=ctx)
    executor.add_node(node)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    timer = threading.Timer(args.duration_s, stop.set)
    timer.daemon = True
    timer.start()
    print("echo up", flush=True)
    while not stop.is_set():
        executor.spin_once(timeout_sec=0.05)
    executor.shutdown()
    ctx.try_shutdown()


if __name__ == "__main__":
    main()
