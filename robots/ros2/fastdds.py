"""Fast DDS XML profiles: the engine's own settings for the rclpy transport, and loopback-only ones.

The engine side (rclpy transport, ``rmw_fastrtps_cpp``) differs from Fast DDS's defaults in two
ways, both about camera-sized messages (a 320x240 rgb8 frame is 225 KiB, several UDP datagrams):

- **receive buffer** ``RECEIVE_BUFFER_BYTES``: Fast DDS keeps the OS default socket buffer
  (net.core.rmem_default, typically 208 KiB), smaller than one frame; on one host a frame's
  datagrams arrive faster than they are read and most frames lose one, so best-effort camera
  streams arrived at 3 of 20 Hz. The kernel grants up to net.core.rmem_max and doubles what it
  grants, so even a default rmem_max doubles the buffer.
- **paced sending**: every writer publishes asynchronously through a FIFO flow controller of
  ``PACING_BYTES_PER_MS`` (32 MiB/s, shared by the process's writers), so a frame reaches an
  *unmodified* receiver (default buffer) as a stream it can keep up with instead of one burst; the
  buffer then holds ~6 ms of it, enough for a receiver starved of CPU on a loaded machine (64 KiB/ms
  lost up to 6% of best-effort frames at load 15 on 2 cores, 128 KiB/ms up to 10%). One 320x240
  camera at 20 Hz is 4.6 MB/s; a process publishing more than the budget (a twin with three
  640x480 cameras is 55 MB/s) is better on ``dds``.
  ``RMW_FASTRTPS_PUBLICATION_MODE=AUTO`` makes rmw_fastrtps take the publication mode from the
  profile; ROS QoS from code still apply.

``engine_profile()`` is what the rclpy transport installs when the user has not configured Fast DDS
(FASTDDS_DEFAULT_PROFILES_FILE unset); ``engine_profile(loopback=True, ...)`` is the same for tests
and benchmarks, confined to 127.0.0.1, and ``robot_profile()`` the loopback-only profile of an
unmodified robot-side node.
"""

from __future__ import annotations

import hashlib
import os
import random
import tempfile
from pathlib import Path

RECEIVE_BUFFER_BYTES = 4 * 1024 * 1024
PACING_BYTES_PER_MS = 32 * 1024
_FLOW_CONTROLLER = "inference_engine_pacing"


def _loopback_transport(max_participants: int, receive_buffer_bytes: int) -> str:
    buffer = f"<receiveBufferSize>{int(receive_buffer_bytes)}</receiveBufferSize>" if receive_buffer_bytes else ""
    return f"""    <transport_descriptors>
      <transport_descriptor>
        <transport_id>loopback_udpv4</transport_id>
        <type>UDPv4</type>
        <maxInitialPeersRange>{int(max_participants)}</maxInitialPeersRange>
        {buffer}
        <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>
      </transport_descriptor>
    </transport_descriptors>
"""


_LOOPBACK_RTPS = """        <userTransports><transport_id>loopback_udpv4</transport_id></userTransports>
        <useBuiltinTransports>false</useBuiltinTransports>
        <builtin>
          <metatrafficUnicastLocatorList>
            <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
          </metatrafficUnicastLocatorList>
          <initialPeersList>
            <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
          </initialPeersList>
        </builtin>
        <defaultUnicastLocatorList>
          <locator><udpv4><address>127.0.0.1</address></udpv4></locator>
        </defaultUnicastLocatorList>
"""

_PACING = f"""        <flow_controller_descriptor_list>
          <flow_controller_descriptor>
            <name>{_FLOW_CONTROLLER}</name>
            <scheduler>FIFO</scheduler>
            <max_bytes_per_period>{PACING_BYTES_PER_MS}</max_bytes_per_period>
            <period_ms>1</period_ms>
          </flow_controller_descriptor>
        </flow_controller_descriptor_list>
"""

_PACED_WRITER = f"""    <data_writer profile_name="inference_engine_writer" is_default_profile="true">
      <qos>
        <publishMode><kind>ASYNCHRONOUS</kind><flow_controller_name>{_FLOW_CONTROLLER}</flow_controller_name></publishMode>
      </qos>
    </data_writer>
"""


def _profile(name: str, transports: str, rtps: str, writer: str = "") -> str:
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <profiles>
{transports}    <participant profile_name="{name}" is_default_profile="true">
      <rtps>
{rtps}      </rtps>
    </participant>
{writer}  </profiles>
</dds>
"""


def engine_profile(loopback: bool = False, max_participants: int = 40, pacing: bool = True) -> str:
    """The engine's Fast DDS settings (receive buffer, paced writers); ``loopback``: 127.0.0.1 only.

    ``pacing`` needs RMW_FASTRTPS_PUBLICATION_MODE=AUTO (Fast DDS refuses a flow controller on a
    synchronous writer, and rmw then fails to create the node)."""
    extra, writer = (_PACING, _PACED_WRITER) if pacing else ("", "")
    if loopback:
        return _profile(
            "inference_engine",
            _loopback_transport(max_participants, RECEIVE_BUFFER_BYTES),
            _LOOPBACK_RTPS + extra,
            writer,
        )
    buffers = f"        <listenSocketBufferSize>{RECEIVE_BUFFER_BYTES}</listenSocketBufferSize>\n"
    return _profile("inference_engine", "", buffers + extra, writer)


def robot_profile(max_participants: int = 40) -> str:
    """An unmodified robot-side node: Fast DDS defaults, only confined to 127.0.0.1 (tests)."""
    return _profile("loopback_only", _loopback_transport(max_participants, 0), _LOOPBACK_RTPS)


def write_once(text: str, stem: str, suffix: str = ".xml") -> Path:
    """``text`` written once to a content-named file in the temp dir (Fast DDS reads a path)."""
    path = Path(tempfile.gettempdir()) / f"{stem}-{hashlib.sha1(text.encode()).hexdigest()[:12]}{suffix}"
    if not path.is_file() or path.read_text() != text:
        tmp = path.with_suffix(f".{random.SystemRandom().randrange(1 << 30)}.tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path


def profile_env(profile_xml: str, stem: str) -> dict[str, str]:
    """Environment naming ``profile_xml`` for Fast DDS 3 (Kilted) and 2 (Jazzy, Humble)."""
    path = str(write_once(profile_xml, stem))
    return {"FASTDDS_DEFAULT_PROFILES_FILE": path, "FASTRTPS_DEFAULT_PROFILES_FILE": path}


def apply_engine_profile() -> str | None:
    """Install ``engine_profile()`` for this process unless Fast DDS is configured already
    (FASTDDS_DEFAULT_PROFILES_FILE / FASTRTPS_DEFAULT_PROFILES_FILE set); the path, or None.
    Must run before the first Fast DDS participant of the process is created."""
    if os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE") or os.environ.get("FASTRTPS_DEFAULT_PROFILES_FILE"):
        return None  # the user's Fast DDS configuration, untouched
    mode = os.environ.setdefault("RMW_FASTRTPS_PUBLICATION_MODE", "AUTO")  # a mode the user chose stays
    path = str(write_once(engine_profile(pacing=mode == "AUTO"), "fastdds-engine"))
    os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = path
    return path
