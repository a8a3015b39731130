"""A camera-like rclpy node: publishes or counts sensor_msgs/Image frames (nothing of ours imported).

    python tests/ros2_nodes/image_node.py pub --topic /cam --hz 20 --frames 100 [--reliability best_effort]
    python tests/ros2_nodes/image_node.py sub --topic /cam --duration-s 8 --out counts.json

``pub`` waits until a subscriber is matched, then sends ``--frames`` 320x240 rgb8 frames at
``--hz``, frame i carrying ``frame_id = str(i)``. ``sub`` records every distinct frame id received
and writes ``{"frames": [...], "received": n}`` to ``--out``.
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["pub", "sub"])
    ap.add_argument("--topic", default="/camera/image_raw")
    ap.add_argument("--hz", type=float, default=20.0)
    ap.add_argument("--frames", type=int, default=100)
    ap.add_argument("--width", type=int, default=320)
    ap.add_argument("--height", type=int, default=240)
    ap.add_argument("--reliability", choices=["reliable", "best_effort"], default="best_effort")
    ap.add_argument("--duration-s", type=float, default=30.0)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()

    import rclpy
    from rclpy.context import Context
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image

    ctx = Context()
    rclpy.init(context=ctx)
    node = rclpy.create_node(f"image_{args.mode}", context=ctx)
    qos = QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=10,
        reliability=ReliabilityPolicy.RELIABLE if args.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
    )
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    if args.mode == "pub":
        pub = node.create_publisher(Image, args.topic, qos)
        t_wait = time.monotonic() + args.duration_s
        while pub.get_subscription_count() == 0 and time.monotonic() < t_wait:
            time.sleep(0.05)
        time.sleep(0.5)  # let the subscriber's side finish matching too
        payload = bytes(range(256)) * (args.width * args.height * 3 // 256 + 1)
        payload = payload[: args.width * args.height * 3]
        t0 = time.monotonic()
        for i in range(args.frames):
            msg = Image(height=args.height, width=args.width, encoding="rgb8", is_bigendian=0, step=args.width * 3)
            msg.header.frame_id = str(i)
            msg.data = payload
            pub.publish(msg)
            time.sleep(max(0.0, t0 + (i + 1) / args.hz - time.monotonic()))
        time.sleep(0.5)
        print(json.dumps({"sent": args.frames, "matched": pub.get_subscription_count()}), flush=True)
    else:
        seen: set[int] = set()
        lock = threading.Lock()

        def on_image(msg: Image) -> None:
            if len(msg.data) == args.width * args.height * 3:
                with lock:
                    seen.add(int(msg.header.frame_id))

        node.create_subscription(Image, args.topic, on_image, qos)
        executor = SingleThreadedExecutor(context=ctx)
        executor.add_node(node)
        print("sub up", flush=True)
        t_end = time.monotonic() + args.duration_s
        while not stop.is_set() and time.monotonic() < t_end:
            executor.spin_once(timeout_sec=0.05)
        with lock:
            frames = sorted(seen)
        with open(args.out, "w") as f:
            json.dump({"frames": frames, "received": len(frames)}, f)
        executor.shutdown()
    ctx.try_shutdown()


if __name__ == "__main__":
    main()
