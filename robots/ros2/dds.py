"""ROS 2 over plain CycloneDDS (PyPI ``cyclonedds``), for machines without a ROS 2 install.

ROS 2's wire conventions (rmw_cyclonedds): DDS topic ``rt/<topic>``, DDS type name
``<pkg>::msg::dds_::<Type>_``, payload = XCDR1 little-endian CDR with a 4-byte encapsulation
header. The payload bytes come from rosbags' ``serialize_cdr`` and go through
``deserialize_cdr`` on receipt: we hand raw bytes to the DDS C layer and never re-encode them, so
what a ROS 2 node sees is byte-for-byte what rosbags (which reads real ROS 2 bags) produces.

The DDS topic still needs a registered type (name, keylessness and XTypes type information for
matching); it is generated from rosbags' field definitions as a cyclonedds ``IdlStruct`` with the
same layout as ROS 2's generated IDL.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from typing import Any

from cyclonedds import idl
from cyclonedds._clayer import ddspy_take, ddspy_write
from cyclonedds.core import DDSException, Entity, InstanceState, Listener, SampleState, ViewState
from cyclonedds.domain import Domain, DomainParticipant
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration

from robots.ros2 import messages
from robots.ros2.transport import QosProfile, RawCallback, SlotSubscription

log = logging.getLogger(__name__)

_BASE = {
    "bool": bool,
    "byte": t.byte,
    "char": t.uint8,  # ROS 2 'char' is an unsigned 8-bit integer in IDL
    "int8": t.int8,
    "uint8": t.uint8,
    "int16": t.int16,
    "uint16": t.uint16,
    "int32": t.int32,
    "uint32": t.uint32,
    "int64": t.int64,
    "uint64": t.uint64,
    "float32": t.float32,
    "float64": t.float64,
}

_IDL_CACHE: dict[str, type] = {}
_IDL_LOCK = threading.Lock()


def _field_type(node: tuple[Any, Any], store: Any = None) -> Any:
    kind, detail = node
    kind = int(kind)
    if kind == 1:  # BASE
        name, bound = detail
        if name == "string":
            return t.bounded_str[bound] if bound else str
        if name not in _BASE:
            raise TypeError(f"ROS base type {name!r} is not supported over plain DDS")
        return _BASE[name]
    if kind == 2:  # NAME (nested message)
        return idl_type(detail, store)
    if kind == 3:  # ARRAY
        sub, length = detail
        return t.array[_field_type(sub, store), length]
    if kind == 4:  # SEQUENCE
        sub, bound = detail
        return t.sequence[_field_type(sub, store), bound] if bound else t.sequence[_field_type(sub, store)]
    raise TypeError(f"unsupported ROS field node {node!r}")


def idl_type(msg_type: str, store: Any = None) -> type:
    """A cyclonedds IdlStruct with ROS 2's DDS name and layout for a ROS 2 message type
    (from ``store``, a rosbags typestore; default the engine's, ``messages.typestore()``)."""
    if store is None:
        full, store = messages.resolve_type(msg_type), messages.typestore()
    else:
        full = msg_type
    key = f"{id(store)}:{full}"
    with _IDL_LOCK:
        if key in _IDL_CACHE:
            return _IDL_CACHE[key]
    _, fields = store.fielddefs[full]
    if fields:
        annotations = {name: _field_type(node, store) for name, node in fields}
    else:  # empty ROS messages get a dummy uint8 member, as rosidl does
        annotations = {"structure_needs_at_least_one_member": t.uint8}
    pkg, kind, name = full.split("/")
    cls = idl.make_idl_struct(full.replace("/", "__"), f"{pkg}::{kind}::dds_::{name}_", annotations)
    with _IDL_LOCK:
        return _IDL_CACHE.setdefault(key, cls)


def to_dds_qos(qos: QosProfile) -> Qos:
    reliability = (
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
        if qos.reliability == "reliable"
        else Policy.Reliability.BestEffort
    )
    return Qos(reliability, Policy.History.KeepLast(qos.depth), Policy.Durability.Volatile)


# Vendor ids (RTPS 8.3.3.1.3) whose endpoints are matched by type *name*, their XTypes type
# information ignored. 1.15 is eProsima Fast DDS: Fast DDS 3 (ROS 2 Kilted) announces TypeObjects
# that CycloneDDS rejects ("invalid type object") and then never matches the endpoint, although Fast
# DDS reports it matched. ROS 2 types are equal by name on both sides (same .msg, same rosidl), so
# name matching loses nothing here; it is what makes an unmodified Kilted robot talk to us.
IGNORE_TYPE_INFORMATION_VENDORS = ("1.15",)

# Always applied first, so CYCLONEDDS_URI (after it) can still override any part of it.
INTEROP_CONFIG = (
    '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any"><Compatibility>'
    f"<IgnoreTypeInformation>{','.join(IGNORE_TYPE_INFORMATION_VENDORS)}</IgnoreTypeInformation>"
    "</Compatibility></Domain></CycloneDDS>"
)


def domain_config(user_config: str | None = None) -> str:
    """The configuration a domain is created with: ``INTEROP_CONFIG`` then CYCLONEDDS_URI's."""
    user = os.environ.get("CYCLONEDDS_URI", "") if user_config is None else user_config
    return INTEROP_CONFIG + ("," + user if user.strip() else "")


class _Domains:
    """Process-wide explicit CycloneDDS domains (``dds_create_domain``), one per domain id,
    reference-counted by the transports using them; the last one out deletes the domain."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._domains: dict[int, tuple[Domain | None, int]] = {}

    def acquire(self, domain_id: int) -> None:
        with self._lock:
            domain, refs = self._domains.get(domain_id, (None, 0))
            if refs == 0:
                try:
                    domain = Domain(domain_id, domain_config())
                except DDSException as exc:
                    # Already created implicitly in this process (a participant made without us):
                    # it runs with CYCLONEDDS_URI alone, so a Fast DDS 3 peer may not match.
                    log.warning(
                        "CycloneDDS domain %d exists already; its config lacks the Fast DDS interop settings (%s)",
                        domain_id,
                        exc,
                    )
                    domain = None
            self._domains[domain_id] = (domain, refs + 1)

    def release(self, domain_id: int) -> None:
        with self._lock:
            domain, refs = self._domains.get(domain_id, (None, 0))
            if refs <= 1:
                self._domains.pop(domain_id, None)
                if domain is not None:
                    _delete_entity(domain)
            else:
                self._domains[domain_id] = (domain, refs - 1)


_DOMAINS = _Domains()


def loopback_config(max_participants: int = 40) -> str:
    """CycloneDDS XML that keeps all traffic on 127.0.0.1 with multicast off (tests, benchmarks).

    Discovery is unicast to the loopback peer's well-known ports, one per participant index, so
    ``max_participants`` bounds how many participants (processes x transports) may share a domain.
    Pass it as CYCLONEDDS_URI (inline XML is accepted) together with a private ROS_DOMAIN_ID.
    """
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">'
        '<General><Interfaces><NetworkInterface address="127.0.0.1"/></Interfaces>'
        "<AllowMulticast>false</AllowMulticast></General>"
        "<Discovery><ParticipantIndex>auto</ParticipantIndex>"
        f"<MaxAutoParticipantIndex>{max_participants}</MaxAutoParticipantIndex>"
        '<Peers><Peer address="127.0.0.1"/></Peers></Discovery>'
        "</Domain></CycloneDDS>"
    )


def _delete_entity(entity: Any) -> None:
    """dds_delete now (not at garbage collection), exactly once."""
    ref = getattr(entity, "_ref", None)
    if ref is not None and Entity._entities.get(ref) is entity:
        del Entity._entities[ref]
        entity._delete(ref)


class DdsSubscription(SlotSubscription):
    """A DataReader whose listener keeps the newest raw sample and its receive time."""

    def __init__(
        self, transport: DdsTransport, topic: str, msg_type: str, qos: QosProfile, on_raw: RawCallback | None = None
    ) -> None:
        super().__init__(topic, msg_type, on_raw)
        self.qos = qos
        self.incompatible_qos: str | None = None  # set when the middleware reports a QoS mismatch
        self._transport = transport
        self._mask = SampleState.Any | ViewState.Any | InstanceState.Any
        self._listener = Listener(on_data_available=self._on_data, on_requested_incompatible_qos=self._on_incompatible)
        dds_topic = transport._topic(topic, self.msg_type)
        self._reader = DataReader(transport.participant, dds_topic, qos=to_dds_qos(qos), listener=self._listener)
        self.gid = self._reader.guid.bytes

    def _on_data(self, reader: Any) -> None:
        # Runs on a CycloneDDS thread. Take everything, keep the newest valid sample.
        now = time.monotonic()
        samples = ddspy_take(self._reader._ref, self._mask, 64)
        if isinstance(samples, int):
            log.warning("take on %s failed: %d", self.topic, samples)
            return
        try:
            self._deliver([bytes(data) for data, info in samples if info.valid_data], now)
        except Exception:  # a failing callback must not take the listener thread with it
            log.exception("callback for %s failed", self.topic)

    def _on_incompatible(self, reader: Any, status: Any) -> None:
        self.incompatible_qos = _QOS_POLICY_NAMES.get(int(getattr(status, "last_policy_id", -1)), "unknown")
        log.warning(
            "subscription %s (%s): incompatible QoS with a publisher (policy %s)",
            self.topic,
            self.qos.reliability,
            self.incompatible_qos,
        )

    @property
    def matched(self) -> int:
        """Publishers matched to this subscription (0 until discovery completes)."""
        return len(self._reader.get_matched_publications()) if self._reader is not None else 0

    def diagnose(self) -> str:
        """Why no message arrived, in one line: QoS mismatch, no publisher, or seen but not matched."""
        if self._reader is None:
            return "subscription closed"
        seen = self._transport.discovered_publications(self.topic)
        offered = "/".join(sorted({rel for _, rel in seen})) or "?"
        if self.incompatible_qos is not None:
            return (
                f"{len(seen)} publisher(s) offering {offered} but QoS incompatible with this "
                f"{self.qos.reliability} subscription (policy {self.incompatible_qos}); "
                f"set this topic's qos.reliability: best_effort in the robot YAML"
            )
        if not seen:
            return "no publisher of this topic on the ROS 2 graph (domain, topic name, or the robot is off)"
        if self.matched == 0:
            types = ", ".join(sorted({name for name, _ in seen}))
            return (
                f"{len(seen)} publisher(s) ({offered}, type {types}) discovered but not matched: their type "
                f"information was refused; add their vendor id to Compatibility/IgnoreTypeInformation in "
                f"CYCLONEDDS_URI (see docs/ros2.md)"
            )
        return (
            f"matched {self.matched} publisher(s) ({offered}) but no data arrived: it is not publishing, or its "
            f"data cannot reach us (its transports, e.g. Fast DDS shared memory only; CYCLONEDDS_URI's interfaces)"
        )

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            _delete_entity(reader)  # blocks until a running listener call returns


# DDS QosPolicyId_t values (DDS 1.4, 2.2.4.1) for one-line messages.
_QOS_POLICY_NAMES = {
    2: "DURABILITY",
    3: "PRESENTATION",
    4: "DEADLINE",
    5: "LATENCYBUDGET",
    6: "OWNERSHIP",
    8: "LIVELINESS",
    11: "RELIABILITY",
    12: "DESTINATIONORDER",
    13: "HISTORY",
    23: "DATA_REPRESENTATION",
}


class DdsPublisher:
    """A DataWriter that writes rosbags' CDR bytes as they are."""

    def __init__(self, transport: DdsTransport, topic: str, msg_type: str, qos: QosProfile) -> None:
        self.topic = topic
        self.msg_type = messages.resolve_type(msg_type)
        self.qos = qos
        self.incompatible_qos: str | None = None
        self._listener = Listener(on_offered_incompatible_qos=self._on_incompatible)
        self._writer = DataWriter(
            transport.participant, transport._topic(topic, self.msg_type), qos=to_dds_qos(qos), listener=self._listener
        )
        self.gid = self._writer.guid.bytes

    def _on_incompatible(self, writer: Any, status: Any) -> None:
        self.incompatible_qos = _QOS_POLICY_NAMES.get(int(getattr(status, "last_policy_id", -1)), "unknown")
        log.warning(
            "publisher %s (%s): incompatible QoS with a subscription (policy %s)",
            self.topic,
            self.qos.reliability,
            self.incompatible_qos,
        )

    def publish(self, msg: Any) -> None:
        self.publish_raw(messages.serialize(msg, self.msg_type))

    def publish_raw(self, cdr: bytes) -> None:
        """Write CDR bytes (with encapsulation header) produced elsewhere, e.g. rosbags."""
        if self._writer is None:
            raise RuntimeError(f"publisher on {self.topic} is closed")
        cdr = cdr.ljust((len(cdr) + 3) & ~3, b"\0")  # DDS payloads are 4-byte padded
        ret = ddspy_write(self._writer._ref, cdr)
        if ret < 0:
            raise RuntimeError(f"DDS write on {self.topic} failed with code {ret}")

    @property
    def matched(self) -> int:
        """Number of matched readers (0 until discovery completes)."""
        return len(self._writer.get_matched_subscriptions()) if self._writer is not None else 0

    def close(self) -> None:
        writer, self._writer = getattr(self, "_writer", None), None
        if writer is not None:
            _delete_entity(writer)


class DdsTransport:
    """ROS 2-compatible pub/sub over one CycloneDDS DomainParticipant, shown on the ROS 2 graph as
    node ``node_name`` (see :mod:`robots.ros2.graph`).

    The domain's configuration is ``INTEROP_CONFIG`` followed by CYCLONEDDS_URI (read when the
    first transport of a domain is created in this process); ``domain_id`` plays the part of
    ROS_DOMAIN_ID.
    """

    kind = "dds"

    def __init__(self, domain_id: int = 0, node_name: str = "inference_engine", namespace: str = "/") -> None:
        from robots.ros2.graph import GraphAnnouncer, participant_qos

        self.domain_id = int(domain_id)
        self.node_name = node_name
        _DOMAINS.acquire(self.domain_id)
        try:
            self.participant = DomainParticipant(self.domain_id, qos=participant_qos())
        except BaseException:
            _DOMAINS.release(self.domain_id)
            raise
        self._topics: dict[str, Topic] = {}
        self._entities: list[Any] = []
        self._lock = threading.Lock()
        self.graph = GraphAnnouncer(self, node_name, namespace)
        log.debug("CycloneDDS participant on domain %d as node %s", self.domain_id, node_name)

    def _topic(self, topic: str, msg_type: str) -> Topic:
        name = messages.dds_topic_name(topic)
        with self._lock:
            existing = self._topics.get(name)
            if existing is not None:
                if existing.data_type is not idl_type(msg_type):
                    raise ValueError(f"topic {topic} already used with another type in this transport")
                return existing
            dds_topic = Topic(self.participant, name, idl_type(msg_type))
            self._topics[name] = dds_topic
            return dds_topic

    def _check_open(self, what: str, topic: str) -> None:
        if self.participant is None:
            raise RuntimeError(f"DDS transport of node {self.node_name} is closed: cannot {what} {topic}")

    def subscribe(
        self, topic: str, msg_type: str, qos: QosProfile | None = None, on_raw: RawCallback | None = None
    ) -> DdsSubscription:
        self._check_open("subscribe to", topic)
        sub = DdsSubscription(self, topic, msg_type, qos or QosProfile(), on_raw)
        self._entities.append(sub)
        self.graph.add(reader=sub.gid)
        return sub

    def publisher(self, topic: str, msg_type: str, qos: QosProfile | None = None) -> DdsPublisher:
        self._check_open("publish on", topic)
        pub = DdsPublisher(self, topic, msg_type, qos or QosProfile())
        self._entities.append(pub)
        self.graph.add(writer=pub.gid)
        return pub

    def discovered_publications(self, topic: str) -> list[tuple[str, str]]:
        """(DDS type name, reliability) of every publication of ``topic`` seen on the domain."""
        from cyclonedds.builtin import BuiltinDataReader, BuiltinTopicDcpsPublication

        if self.participant is None:
            return []
        name = messages.dds_topic_name(topic)
        reader = BuiltinDataReader(self.participant, BuiltinTopicDcpsPublication)
        try:
            found = []
            for ep in reader.read(N=256):
                if ep.topic_name != name:
                    continue
                rel = ep.qos[Policy.Reliability] if ep.qos is not None else None
                found.append(
                    (
                        ep.type_name,
                        "best_effort"
                        if isinstance(rel, type(Policy.Reliability.BestEffort)) or rel is Policy.Reliability.BestEffort
                        else "reliable",
                    )
                )
            return found
        finally:
            _delete_entity(reader)

    def close(self) -> None:
        """Delete the participant (and every reader/writer under it). Safe to call twice."""
        if self.participant is None:
            return
        self.graph.close()
        for ent in self._entities:
            ent.close()
        self._entities.clear()
        self._topics.clear()
        participant, self.participant = self.participant, None
        if participant is not None:
            _delete_entity(participant)
            _DOMAINS.release(self.domain_id)
