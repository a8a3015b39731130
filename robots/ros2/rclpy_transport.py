"""The rclpy transport: used when a sourced ROS 2 install makes ``rclpy`` importable.

It moves the same rosbags messages as the DDS transport by publishing and subscribing raw CDR
(``raw=True`` subscriptions, ``publish(bytes)``), so the rest of the engine is unchanged. rclpy
is not installable here (not on PyPI), so this file is kept small and is exercised only on a
ROS 2 machine; every rclpy import is lazy.
"""

from __future__ import annotations

import importlib
import logging
import threading
import time
from typing import Any

from robots.ros2 import messages
from robots.ros2.transport import QosProfile, RawCallback, SlotSubscription

log = logging.getLogger(__name__)


def _ros_class(msg_type: str) -> type:
    pkg, kind, name = messages.resolve_type(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _ros_qos(qos: QosProfile) -> Any:
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
    )


class RclpySubscription(SlotSubscription):
    def __init__(
        self, node: Any, topic: str, msg_type: str, qos: QosProfile, on_raw: RawCallback | None = None
    ) -> None:
        super().__init__(topic, msg_type, on_raw)
        self._node = node
        self._sub = node.create_subscription(_ros_class(msg_type), topic, self._on_msg, _ros_qos(qos), raw=True)

    def _on_msg(self, raw: bytes) -> None:
        self._deliver([bytes(raw)], time.monotonic())

    def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None:
            self._node.destroy_subscription(sub)


class RclpyPublisher:
    def __init__(self, node: Any, topic: str, msg_type: str, qos: QosProfile) -> None:
        self.topic = topic
        self.msg_type = messages.resolve_type(msg_type)
        self._node = node
        self._pub = node.create_publisher(_ros_class(msg_type), topic, _ros_qos(qos))

    def publish(self, msg: Any) -> None:
        self.publish_raw(messages.serialize(msg, self.msg_type))

    def publish_raw(self, cdr: bytes) -> None:
        if self._pub is None:
            raise RuntimeError(f"publisher on {self.topic} is closed")
        self._pub.publish(cdr)  # rclpy publishes bytes as an already-serialized message

    @property
    def matched(self) -> int:
        return self._pub.get_subscription_count() if self._pub is not None else 0

    def close(self) -> None:
        pub, self._pub = self._pub, None
        if pub is not None:
            self._node.destroy_publisher(pub)


class RclpyTransport:
    """One rclpy context + node, spun by a background executor thread."""

    kind = "rclpy"

    def __init__(self, domain_id: int = 0, node_name: str = "inference_engine") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = int(domain_id)
        self._context = Context()
        rclpy.init(context=self._context, domain_id=domain_id)
        self.node = rclpy.create_node(node_name, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._entities: list[Any] = []
        self._thread = threading.Thread(target=self._spin, name=f"rclpy-{node_name}", daemon=True)
        self._thread.start()

    def _spin(self) -> None:
        while self._context.ok():
            try:
                self._executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutdown races end the loop
                if self._context.ok():
                    log.exception("rclpy executor failed")
                return

    def subscribe(
        self, topic: str, msg_type: str, qos: QosProfile | None = None, on_raw: RawCallback | None = None
    ) -> RclpySubscription:
        sub = RclpySubscription(self.node, topic, msg_type, qos or QosProfile(), on_raw)
        self._entities.append(sub)
        return sub

    def publisher(self, topic: str, msg_type: str, qos: QosProfile | None = None) -> RclpyPublisher:
        pub = RclpyPublisher(self.node, topic, msg_type, qos or QosProfile())
        self._entities.append(pub)
        return pub

    def close(self) -> None:
        if not self._context.ok():
            return
        for ent in self._entities:
            ent.close()
        self._entities.clear()
        self._executor.shutdown()
        self.node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=1.0)
