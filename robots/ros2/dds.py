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
import threading
import time
from typing import Any

from cyclonedds import idl
from cyclonedds.core import Entity, InstanceState, Listener, SampleState, ViewState
from cyclonedds.domain import DomainParticipant
from cyclonedds.idl import types as t
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from cyclonedds.util import duration
from cyclonedds._clayer import ddspy_take, ddspy_write

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


def _field_type(node: tuple[Any, Any]) -> Any:
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
        return idl_type(detail)
    if kind == 3:  # ARRAY
        sub, length = detail
        return t.array[_field_type(sub), length]
    if kind == 4:  # SEQUENCE
        sub, bound = detail
        return t.sequence[_field_type(sub), bound] if bound else t.sequence[_field_type(sub)]
    raise TypeError(f"unsupported ROS field node {node!r}")


def idl_type(msg_type: str) -> type:
    """A cyclonedds IdlStruct with ROS 2's DDS name and layout for a ROS 2 message type."""
    full = messages.resolve_type(msg_type)
    with _IDL_LOCK:
        if full in _IDL_CACHE:
            return _IDL_CACHE[full]
    _, fields = messages.typestore().fielddefs[full]
    if fields:
        annotations = {name: _field_type(node) for name, node in fields}
    else:  # empty ROS messages get a dummy uint8 member, as rosidl does
        annotations = {"structure_needs_at_least_one_member": t.uint8}
    cls = idl.make_idl_struct(full.replace("/", "__"), messages.dds_type_name(full), annotations)
    with _IDL_LOCK:
        return _IDL_CACHE.setdefault(full, cls)


def to_dds_qos(qos: QosProfile) -> Qos:
    reliability = (
        Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100))
        if qos.reliability == "reliable"
        else Policy.Reliability.BestEffort
    )
    return Qos(reliability, Policy.History.KeepLast(qos.depth), Policy.Durability.Volatile)


def loopback_config(max_participants: int = 40) -> str:
    """CycloneDDS XML that keeps all traffic on 127.0.0.1 with multicast off (tests, benchmarks).

    Discovery is unicast to the loopback peer's well-known ports, one per participant index, so
    ``max_participants`` bounds how many participants (processes x transports) may share a domain.
    Pass it as CYCLONEDDS_URI (inline XML is accepted) together with a private ROS_DOMAIN_ID.
    """
    return (
        '<CycloneDDS xmlns="https://cdds.io/config"><Domain Id="any">'
        "<General><Interfaces><NetworkInterface address=\"127.0.0.1\"/></Interfaces>"
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
        self, transport: "DdsTransport", topic: str, msg_type: str, qos: QosProfile, on_raw: RawCallback | None = None
    ) -> None:
        super().__init__(topic, msg_type, on_raw)
        self._mask = SampleState.Any | ViewState.Any | InstanceState.Any
        self._listener = Listener(on_data_available=self._on_data)
        dds_topic = transport._topic(topic, self.msg_type)
        self._reader = DataReader(transport.participant, dds_topic, qos=to_dds_qos(qos), listener=self._listener)

    def _on_data(self, reader: Any) -> None:
        # Runs on a CycloneDDS thread. Take everything, keep the newest valid sample.
        now = time.monotonic()
        samples = ddspy_take(self._reader._ref, self._mask, 64)
        if isinstance(samples, int):
            log.warning("take on %s failed: %d", self.topic, samples)
            return
        self._deliver([bytes(data) for data, info in samples if info.valid_data], now)

    def close(self) -> None:
        reader, self._reader = getattr(self, "_reader", None), None
        if reader is not None:
            _delete_entity(reader)  # blocks until a running listener call returns


class DdsPublisher:
    """A DataWriter that writes rosbags' CDR bytes as they are."""

    def __init__(self, transport: "DdsTransport", topic: str, msg_type: str, qos: QosProfile) -> None:
        self.topic = topic
        self.msg_type = messages.resolve_type(msg_type)
        self._writer = DataWriter(transport.participant, transport._topic(topic, self.msg_type), qos=to_dds_qos(qos))

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
    """ROS 2-compatible pub/sub over one CycloneDDS DomainParticipant.

    The domain's configuration comes from CYCLONEDDS_URI (read when the first participant of a
    domain is created in this process); ``domain_id`` plays the part of ROS_DOMAIN_ID.
    """

    kind = "dds"

    def __init__(self, domain_id: int = 0) -> None:
        self.domain_id = int(domain_id)
        self.participant = DomainParticipant(self.domain_id)
        self._topics: dict[str, Topic] = {}
        self._entities: list[Any] = []
        self._lock = threading.Lock()
        log.debug("CycloneDDS participant on domain %d", self.domain_id)

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

    def subscribe(
        self, topic: str, msg_type: str, qos: QosProfile | None = None, on_raw: RawCallback | None = None
    ) -> DdsSubscription:
        sub = DdsSubscription(self, topic, msg_type, qos or QosProfile(), on_raw)
        self._entities.append(sub)
        return sub

    def publisher(self, topic: str, msg_type: str, qos: QosProfile | None = None) -> DdsPublisher:
        pub = DdsPublisher(self, topic, msg_type, qos or QosProfile())
        self._entities.append(pub)
        return pub

    def close(self) -> None:
        """Delete the participant (and every reader/writer under it). Safe to call twice."""
        for ent in self._entities:
            ent.close()
        self._entities.clear()
        self._topics.clear()
        participant, self.participant = self.participant, None
        if participant is not None:
            _delete_entity(participant)
