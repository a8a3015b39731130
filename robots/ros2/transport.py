"""One interface over ROS 2 middleware: rclpy where a ROS 2 install provides it, else CycloneDDS.

Both implementations move rosbags messages (``robots.ros2.messages``) and ROS 2's CDR bytes, so
the robot, the twin and the cameras never know which one runs. A ``Subscription`` keeps only the
newest message with its receive time (``time.monotonic()``, seconds): the control loop wants the
latest state, and the receive time is what staleness is judged on.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal, Protocol, runtime_checkable

from robots.ros2 import messages

log = logging.getLogger(__name__)

Reliability = Literal["reliable", "best_effort"]
TransportKind = Literal["auto", "rclpy", "dds"]
# Called on the middleware's thread for every message: (CDR bytes, receive time monotonic s).
RawCallback = Callable[[bytes, float], None]


@dataclass(frozen=True)
class QosProfile:
    """The part of ROS 2 QoS the engine uses: reliability and keep-last depth (volatile)."""

    reliability: Reliability = "reliable"
    depth: int = 10

    @classmethod
    def from_config(cls, cfg: Any | None) -> QosProfile:
        if cfg is None:
            return cls()
        if isinstance(cfg, QosProfile):
            return cfg
        cfg = dict(cfg)
        unknown = set(cfg) - {"reliability", "depth"}
        if unknown:
            raise ValueError(f"unknown QoS keys {sorted(unknown)} (known: reliability, depth)")
        rel = cfg.get("reliability", "reliable")
        if rel not in ("reliable", "best_effort"):
            raise ValueError(f"QoS reliability must be 'reliable' or 'best_effort', got {rel!r}")
        depth = int(cfg.get("depth", 10))
        if depth < 1:
            raise ValueError(f"QoS depth must be >= 1, got {depth}")
        return cls(reliability=rel, depth=depth)


@runtime_checkable
class Subscription(Protocol):
    topic: str
    msg_type: str

    def latest(self) -> tuple[Any, float] | None:
        """(message, receive time in monotonic seconds) of the newest message, or None."""
        ...

    @property
    def count(self) -> int:
        """Messages received so far."""
        ...

    def close(self) -> None: ...


@runtime_checkable
class Publisher(Protocol):
    topic: str
    msg_type: str

    def publish(self, msg: Any) -> None: ...

    def close(self) -> None: ...


@runtime_checkable
class Transport(Protocol):
    kind: str

    def subscribe(
        self, topic: str, msg_type: str, qos: QosProfile | None = None, on_raw: RawCallback | None = None
    ) -> Subscription:
        """Keep the newest message of ``topic``; ``on_raw`` (optional) sees every message first."""
        ...

    def publisher(self, topic: str, msg_type: str, qos: QosProfile | None = None) -> Publisher: ...

    def close(self) -> None: ...


class LatestSlot:
    """Thread-safe slot for the newest raw CDR payload; decodes lazily, once per new message.

    Decoding on read, not on receive, keeps a 500 Hz joint-state stream cheap when the control
    loop reads at 20 Hz.
    """

    def __init__(self, msg_type: str) -> None:
        self.msg_type = messages.resolve_type(msg_type)
        self._lock = threading.Lock()
        self._raw: bytes | None = None
        self._time = 0.0
        self._decoded: tuple[Any, float] | None = None
        self._count = 0
        self._event = threading.Event()

    def put_raw(self, raw: bytes, receive_time: float) -> None:
        with self._lock:
            self._raw = raw
            self._time = receive_time
            self._decoded = None
            self._count += 1
        self._event.set()

    def put_msg(self, msg: Any, receive_time: float) -> None:
        with self._lock:
            self._raw = None
            self._time = receive_time
            self._decoded = (msg, receive_time)
            self._count += 1
        self._event.set()

    def latest(self) -> tuple[Any, float] | None:
        with self._lock:
            if self._decoded is not None:
                return self._decoded
            raw, t = self._raw, self._time
        if raw is None:
            return None
        decoded = (messages.deserialize(raw, self.msg_type), t)
        with self._lock:
            if self._raw is raw:
                self._decoded = decoded
        return decoded

    @property
    def count(self) -> int:
        return self._count

    def wait(self, timeout_s: float) -> bool:
        """Block until a first message arrived (or timeout); True if one did."""
        return self._event.wait(timeout_s)


class SlotSubscription:
    """What every transport's subscription shares: the newest raw message in a ``LatestSlot``
    and the optional per-message raw callback. A transport only wires its middleware to
    :meth:`_deliver` and implements ``close``."""

    def __init__(self, topic: str, msg_type: str, on_raw: RawCallback | None = None) -> None:
        self.topic = topic
        self.msg_type = messages.resolve_type(msg_type)
        self._slot = LatestSlot(self.msg_type)
        self._on_raw = on_raw

    def _deliver(self, raws: list[bytes], receive_time: float) -> None:
        """Messages received together, oldest first: each to the callback, the newest kept."""
        if self._on_raw is not None:
            for raw in raws:
                self._on_raw(raw, receive_time)
        if raws:
            self._slot.put_raw(raws[-1], receive_time)

    def latest(self) -> tuple[Any, float] | None:
        return self._slot.latest()

    @property
    def count(self) -> int:
        return self._slot.count

    def wait(self, timeout_s: float) -> bool:
        return self._slot.wait(timeout_s)


def wait_for_messages(subs: dict[str, Subscription], timeout_s: float, poll_s: float = 0.01) -> list[str]:
    """Wait until every subscription has a message; return the keys still silent at the timeout."""
    deadline = time.monotonic() + timeout_s
    while True:
        silent = [k for k, s in subs.items() if s.latest() is None]
        if not silent or time.monotonic() >= deadline:
            return silent
        time.sleep(poll_s)


def diagnose(sub: Subscription) -> str:
    """One line on why ``sub`` is silent, from the transport's own view of the graph."""
    probe = getattr(sub, "diagnose", None)
    if probe is None:
        return "no diagnosis available"
    try:
        return str(probe())
    except Exception as exc:  # noqa: BLE001 - a diagnosis must never hide the real error
        return f"diagnosis failed ({exc})"


def ros_node_name(name: str) -> str:
    """``name`` made a valid ROS 2 node name (letters, digits, ``_``; not starting with a digit)."""
    clean = re.sub(r"[^A-Za-z0-9_]", "_", name) or "node"
    return clean if not clean[0].isdigit() else "_" + clean


def rclpy_available() -> bool:
    try:
        import rclpy  # noqa: F401
    except ImportError:
        return False
    return True


def resolve_transport_kind(kind: str = "auto") -> tuple[str, str]:
    """``(kind, why)`` for a configured transport; every entry point (engine, twin, cameras,
    benchmarks) resolves ``auto`` here, so they always agree.

    ``auto`` is rclpy when it imports (a sourced ROS 2, or the ``ros2`` extra's Kilted wheels),
    else plain CycloneDDS. Both speak standard ROS 2, so either side may use either.
    """
    if kind not in ("auto", "rclpy", "dds"):
        raise ValueError(f"transport must be auto, rclpy or dds; got {kind!r}")
    if kind != "auto":
        return kind, "configured"
    if rclpy_available():
        import rclpy

        return "rclpy", f"auto: rclpy importable from {os.path.dirname(rclpy.__file__)}"
    return "dds", "auto: rclpy not importable (install the ros2 extra or source a ROS 2 install for it)"


def make_transport(
    kind: TransportKind = "auto", domain_id: int | None = None, node_name: str = "inference_engine"
) -> Transport:
    """Build a transport (``auto``: see :func:`resolve_transport_kind`) as ROS 2 node ``node_name``.

    ``domain_id`` None means ROS_DOMAIN_ID from the environment (0 when unset), as ROS 2 does.
    CycloneDDS reads its XML configuration from CYCLONEDDS_URI, Fast DDS (rclpy's default RMW)
    from FASTDDS_DEFAULT_PROFILES_FILE.
    """
    if domain_id is None:
        domain_id = int(os.environ.get("ROS_DOMAIN_ID", "0") or 0)
    node_name = ros_node_name(node_name)
    resolved, why = resolve_transport_kind(kind)
    log.info("ROS 2 transport %s for node %s on domain %d (%s)", resolved, node_name, domain_id, why)
    if resolved == "rclpy":
        from robots.ros2.rclpy_transport import RclpyTransport

        return RclpyTransport(domain_id=domain_id, node_name=node_name)
    from robots.ros2.dds import DdsTransport

    return DdsTransport(domain_id=domain_id, node_name=node_name)
