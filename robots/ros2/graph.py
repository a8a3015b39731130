"""The DDS transport as a proper node on the ROS 2 graph.

ROS 2 tools (``ros2 node list``, ``rclpy``'s ``get_node_names()``, ``ros2 topic info -v``) know
nodes not from DDS discovery but from two conventions every RMW follows (rmw_dds_common):

- the participant's USER_DATA QoS carries ``enclave=<enclave>;``;
- each participant publishes ``rmw_dds_common/msg/ParticipantEntitiesInfo`` on the DDS topic
  ``ros_discovery_info`` (reliable, transient-local, keep-last 1): its own GID and, per node, the
  name, namespace and the GIDs of the node's readers and writers.

A bare DDS participant does neither and shows up as ``_CREATED_BY_BARE_DDS_APP_``. The message is
written with ROS 2 Jazzy's definition (``Gid`` = ``char[16]``, Iron and later); Humble's 24-byte
``Gid`` differs, so on Humble the node is not listed (the data path is unaffected).
"""

from __future__ import annotations

import functools
import logging
import re
import threading
from typing import TYPE_CHECKING, Any

from cyclonedds._clayer import ddspy_write
from cyclonedds.pub import DataWriter
from cyclonedds.qos import Policy, Qos
from cyclonedds.topic import Topic
from cyclonedds.util import duration

if TYPE_CHECKING:
    from robots.ros2.dds import DdsTransport

log = logging.getLogger(__name__)

DISCOVERY_TOPIC = "ros_discovery_info"
_INFO_TYPE = "rmw_dds_common/msg/ParticipantEntitiesInfo"
_NODE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@functools.lru_cache(maxsize=1)
def graph_typestore() -> Any:
    """rosbags' ROS 2 Jazzy typestore: rmw_dds_common as Iron and later define it (16-byte GIDs)."""
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_JAZZY)


def participant_qos(enclave: str = "/") -> Qos:
    """USER_DATA ``enclave=/;``, as rmw_cyclonedds and rmw_fastrtps set it."""
    return Qos(Policy.Userdata(f"enclave={enclave};".encode()))


def check_node_name(name: str) -> str:
    if not _NODE_NAME.match(name):
        raise ValueError(
            f"ROS 2 node name {name!r} is invalid (letters, digits, underscores; not starting with a digit)"
        )
    return name


class GraphAnnouncer:
    """Publishes this participant's ParticipantEntitiesInfo whenever its endpoints change."""

    def __init__(self, transport: DdsTransport, node_name: str, namespace: str = "/") -> None:
        from robots.ros2.dds import idl_type

        self.node_name = check_node_name(node_name)
        self.namespace = namespace if namespace.startswith("/") else "/" + namespace
        self.gid = transport.participant.guid.bytes
        self._readers: list[bytes] = []
        self._writers: list[bytes] = []
        self._lock = threading.Lock()
        store = graph_typestore()
        self._cls = store.types
        topic = Topic(transport.participant, DISCOVERY_TOPIC, idl_type(_INFO_TYPE, store))
        qos = Qos(
            Policy.Reliability.Reliable(max_blocking_time=duration(milliseconds=100)),
            Policy.Durability.TransientLocal,
            Policy.History.KeepLast(1),
        )
        self._writer: DataWriter | None = DataWriter(transport.participant, topic, qos=qos)
        self._publish()

    def add(self, *, reader: bytes | None = None, writer: bytes | None = None) -> None:
        with self._lock:
            if reader is not None:
                self._readers.append(reader)
            if writer is not None:
                self._writers.append(writer)
        self._publish()

    def message(self) -> Any:
        types = self._cls
        Gid = types["rmw_dds_common/msg/Gid"]
        import numpy as np

        def gid(raw: bytes) -> Any:
            return Gid(data=np.frombuffer(raw[:16].ljust(16, b"\0"), dtype=np.uint8))

        with self._lock:
            node = types["rmw_dds_common/msg/NodeEntitiesInfo"](
                node_namespace=self.namespace,
                node_name=self.node_name,
                reader_gid_seq=[gid(g) for g in self._readers],
                writer_gid_seq=[gid(g) for g in self._writers],
            )
        return types[_INFO_TYPE](gid=gid(self.gid), node_entities_info_seq=[node])

    def _publish(self) -> None:
        if self._writer is None:
            return
        cdr = bytes(graph_typestore().serialize_cdr(self.message(), _INFO_TYPE))
        cdr = cdr.ljust((len(cdr) + 3) & ~3, b"\0")
        ret = ddspy_write(self._writer._ref, cdr)
        if ret < 0:
            log.warning("publishing %s for node %s failed with code %d", DISCOVERY_TOPIC, self.node_name, ret)

    def close(self) -> None:
        """Announce the node gone (no nodes), then drop the writer."""
        from robots.ros2.dds import _delete_entity

        if self._writer is None:
            return
        with self._lock:
            self._readers.clear()
            self._writers.clear()
        types = self._cls
        empty = types[_INFO_TYPE](gid=self.message().gid, node_entities_info_seq=[])
        cdr = bytes(graph_typestore().serialize_cdr(empty, _INFO_TYPE))
        ddspy_write(self._writer._ref, cdr.ljust((len(cdr) + 3) & ~3, b"\0"))
        writer, self._writer = self._writer, None
        _delete_entity(writer)
