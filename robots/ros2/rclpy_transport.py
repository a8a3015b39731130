"""The rclpy transport: ROS 2's own client library, from a sourced ROS 2 install or the ``ros2``
extra (ROS 2 Kilted wheels from the package registry, no ROS install needed).

It moves the same rosbags messages as the DDS transport by publishing and subscribing raw CDR
(``raw=True`` subscriptions, ``publish(bytes)``), so the rest of the engine is unchanged. Every
rclpy import is lazy: the DDS transport works without rclpy.

Fast DDS settings: unless the user configured Fast DDS (FASTDDS_DEFAULT_PROFILES_FILE), the
engine's own profile is installed (``robots.ros2.fastdds``: a receive buffer that holds camera
frames, paced writers so an unmodified receiver keeps up).

Robustness rules: one failing subscription callback is logged (once per topic and error type) and
the executor goes on spinning, so one bad message never silences the other topics; using a closed
transport raises a ``RuntimeError`` naming it instead of rclpy's ``InvalidHandle``.
"""

from __future__ import annotations

import atexit
import importlib
import logging
import threading
import time
from typing import Any

from robots.ros2 import messages
from robots.ros2.fastdds import RECEIVE_BUFFER_BYTES, apply_engine_profile
from robots.ros2.transport import QosProfile, RawCallback, SlotSubscription

log = logging.getLogger(__name__)


def _ros_class(msg_type: str) -> type:
    pkg, kind, name = messages.resolve_type(msg_type).split("/")
    return getattr(importlib.import_module(f"{pkg}.{kind}"), name)


def _ros_qos(qos: QosProfile) -> Any:
    from rclpy.qos import DurabilityPolicy, HistoryPolicy, QoSProfile, ReliabilityPolicy

    return QoSProfile(
        history=HistoryPolicy.KEEP_LAST,
        depth=qos.depth,
        reliability=ReliabilityPolicy.RELIABLE if qos.reliability == "reliable" else ReliabilityPolicy.BEST_EFFORT,
        durability=DurabilityPolicy.VOLATILE,
    )


def _event_callbacks(kind: str, on_incompatible: Any) -> Any:
    """Subscription/Publisher event callbacks with only ``incompatible_qos`` (every distro has it)."""
    try:
        from rclpy.event_handler import PublisherEventCallbacks, SubscriptionEventCallbacks
    except ImportError:  # Humble
        from rclpy.qos_event import PublisherEventCallbacks, SubscriptionEventCallbacks
    cls = SubscriptionEventCallbacks if kind == "subscription" else PublisherEventCallbacks
    return cls(incompatible_qos=on_incompatible)


def _policy_name(info: Any) -> str:
    try:
        from rclpy.qos import qos_policy_name_from_kind

        return str(qos_policy_name_from_kind(info.last_policy_kind))
    except Exception:  # noqa: BLE001 - a name for a message only
        return str(getattr(info, "last_policy_kind", "?"))


def _reliability(endpoint_qos: Any) -> str:
    name = getattr(getattr(endpoint_qos, "reliability", None), "name", "?")
    return str(name).lower()


class RclpySubscription(SlotSubscription):
    def __init__(
        self, transport: RclpyTransport, topic: str, msg_type: str, qos: QosProfile, on_raw: RawCallback | None = None
    ) -> None:
        super().__init__(topic, msg_type, on_raw)
        self.qos = qos
        self.incompatible_qos: str | None = None  # the QoS policy the middleware reported, if any
        self._transport = transport
        self._node = transport.node
        self._failures: set[str] = set()
        self._sub = self._node.create_subscription(
            _ros_class(msg_type),
            topic,
            self._on_msg,
            _ros_qos(qos),
            raw=True,
            event_callbacks=_event_callbacks("subscription", self._on_incompatible),
        )

    def _on_msg(self, raw: bytes) -> None:
        try:
            self._deliver([bytes(raw)], time.monotonic())
        except Exception as exc:  # keep the executor (and every other topic) alive
            key = type(exc).__name__
            if key not in self._failures:
                self._failures.add(key)
                log.exception(
                    "callback for %s failed (%s); later %s failures on it are not logged", self.topic, key, key
                )

    def _on_incompatible(self, info: Any) -> None:
        self.incompatible_qos = _policy_name(info)
        log.warning(
            "subscription %s (%s): incompatible QoS with a publisher (policy %s)",
            self.topic,
            self.qos.reliability,
            self.incompatible_qos,
        )

    @property
    def matched(self) -> int:
        """Publishers matched to this subscription."""
        return self._sub.get_publisher_count() if self._sub is not None else 0

    def diagnose(self) -> str:
        """Why no message arrived, in one line: QoS mismatch, no publisher, or matched but silent."""
        if self._sub is None:
            return "subscription closed"
        pubs = self._node.get_publishers_info_by_topic(self.topic)
        offered = sorted({_reliability(p.qos_profile) for p in pubs})
        if self.incompatible_qos is not None or (pubs and self.matched == 0):
            return (
                f"{len(pubs)} publisher(s) offering {'/'.join(offered) or '?'} but QoS incompatible with this "
                f"{self.qos.reliability} subscription (policy {self.incompatible_qos or 'RELIABILITY'}); "
                f"set this topic's qos.reliability: best_effort in the robot YAML"
            )
        if not pubs:
            return "no publisher of this topic on the ROS 2 graph (domain, topic name, or the robot is off)"
        return (
            f"matched {self.matched} publisher(s) ({'/'.join(offered)}) but no data arrived: it is not "
            f"publishing, or its data cannot reach us (see docs/ros2.md)"
        )

    def close(self) -> None:
        sub, self._sub = self._sub, None
        if sub is not None and self._transport.is_open:
            self._node.destroy_subscription(sub)


class RclpyPublisher:
    def __init__(self, transport: RclpyTransport, topic: str, msg_type: str, qos: QosProfile) -> None:
        self.topic = topic
        self.msg_type = messages.resolve_type(msg_type)
        self.qos = qos
        self.incompatible_qos: str | None = None
        self._transport = transport
        self._node = transport.node
        self._pub = self._node.create_publisher(
            _ros_class(msg_type),
            topic,
            _ros_qos(qos),
            event_callbacks=_event_callbacks("publisher", self._on_incompatible),
        )

    def _on_incompatible(self, info: Any) -> None:
        self.incompatible_qos = _policy_name(info)
        log.warning(
            "publisher %s (%s): incompatible QoS with a subscription (policy %s)",
            self.topic,
            self.qos.reliability,
            self.incompatible_qos,
        )

    def publish(self, msg: Any) -> None:
        self.publish_raw(messages.serialize(msg, self.msg_type))

    def publish_raw(self, cdr: bytes) -> None:
        if self._pub is None or not self._transport.is_open:
            raise RuntimeError(f"publisher on {self.topic} is closed")
        self._pub.publish(cdr)  # rclpy publishes bytes as an already-serialized message

    @property
    def matched(self) -> int:
        return self._pub.get_subscription_count() if self._pub is not None else 0

    def close(self) -> None:
        pub, self._pub = self._pub, None
        if pub is not None and self._transport.is_open:
            self._node.destroy_publisher(pub)


class RclpyTransport:
    """One rclpy context + node (``node_name`` on the ROS 2 graph), spun by a background thread."""

    kind = "rclpy"

    def __init__(self, domain_id: int = 0, node_name: str = "inference_engine") -> None:
        import rclpy
        from rclpy.context import Context
        from rclpy.executors import SingleThreadedExecutor

        self.domain_id = int(domain_id)
        self.node_name = node_name
        profile = apply_engine_profile()
        if profile is not None:
            log.info("Fast DDS profile %s (receive buffer %d bytes, paced writers)", profile, RECEIVE_BUFFER_BYTES)
        self._context = Context()
        try:
            from rclpy.signals import SignalHandlerOptions

            # The application owns SIGINT/SIGTERM (stop, hold the robot, flush, exit 130): rclpy's
            # own handlers would swallow Ctrl-C and only shut this context down.
            rclpy.init(context=self._context, domain_id=self.domain_id, signal_handler_options=SignalHandlerOptions.NO)
        except ImportError:  # a distro without the option
            rclpy.init(context=self._context, domain_id=self.domain_id)
        self.node = rclpy.create_node(node_name, context=self._context)
        self._executor = SingleThreadedExecutor(context=self._context)
        self._executor.add_node(self.node)
        self._entities: list[Any] = []
        self._closed = False
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._spin, name=f"rclpy-{node_name}", daemon=True)
        self._thread.start()
        # An unclosed context at interpreter exit aborts the process in C++ ("terminate called
        # without an active exception", exit -6) and hides the real exit code: close it first.
        atexit.register(self.close)

    @property
    def is_open(self) -> bool:
        return not self._closed and self._context.ok()

    def _spin(self) -> None:
        failures = 0
        while self.is_open:
            try:
                self._executor.spin_once(timeout_sec=0.05)
                failures = 0
            except Exception:  # a callback raised past its own guard, or shutdown raced us
                if not self.is_open:
                    return
                failures += 1
                if failures == 1:
                    log.exception("rclpy executor of %s: a callback failed; spinning on", self.node_name)
                time.sleep(min(0.001 * failures, 0.05))  # never a hot loop on a persistent failure

    def _check_open(self, what: str, topic: str) -> None:
        if not self.is_open:
            raise RuntimeError(f"rclpy transport of node {self.node_name} is closed: cannot {what} {topic}")

    def subscribe(
        self, topic: str, msg_type: str, qos: QosProfile | None = None, on_raw: RawCallback | None = None
    ) -> RclpySubscription:
        with self._lock:
            self._check_open("subscribe to", topic)
            sub = RclpySubscription(self, topic, msg_type, qos or QosProfile(), on_raw)
            self._entities.append(sub)
        return sub

    def publisher(self, topic: str, msg_type: str, qos: QosProfile | None = None) -> RclpyPublisher:
        with self._lock:
            self._check_open("publish on", topic)
            pub = RclpyPublisher(self, topic, msg_type, qos or QosProfile())
            self._entities.append(pub)
        return pub

    def close(self) -> None:
        """Destroy the node and shut the context down. Safe to call twice."""
        with self._lock:
            if self._closed:
                return
            for ent in self._entities:
                ent.close()
            self._entities.clear()
            self._closed = True
        self._executor.shutdown()
        self.node.destroy_node()
        self._context.try_shutdown()
        self._thread.join(timeout=1.0)
        atexit.unregister(self.close)
