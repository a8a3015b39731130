"""Helpers to run ROS 2 in isolation (tests, benchmarks): loopback only, private domain, both vendors.

CycloneDDS (our DDS transport) is confined by ``CYCLONEDDS_URI``; Fast DDS (rclpy's default
``rmw_fastrtps_cpp``, in our venv and in a Jazzy side venv) by an XML profile named in
``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3, Kilted) and ``FASTRTPS_DEFAULT_PROFILES_FILE``
(Fast DDS 2, Jazzy): UDPv4 only, interface whitelist 127.0.0.1, built-in transports (SHM and the
default UDP on every interface) off, unicast discovery to the initial peer 127.0.0.1. Without it
Fast DDS announces by multicast on every interface.
"""

from __future__ import annotations

import hashlib
import random
import tempfile
from pathlib import Path

from robots.ros2.dds import loopback_config

# ROS 2 domain ids whose DDS port ranges fit in 16 bits (7400 + 250 * id + ...), minus 0 (default).
_DOMAIN_RANGE = (1, 232)


def fastdds_loopback_profile(max_participants: int = 40) -> str:
    """Fast DDS XML (2.x and 3.x): every participant on 127.0.0.1 over UDPv4, no multicast, no SHM.

    ``max_participants`` is how many participant indices on the peer are probed (as CycloneDDS's
    ``MaxAutoParticipantIndex``), so Fast DDS finds CycloneDDS participants and each other.
    """
    return f"""<?xml version="1.0" encoding="UTF-8" ?>
<dds xmlns="http://www.eprosima.com/XMLSchemas/fastRTPS_Profiles">
  <profiles>
    <transport_descriptors>
      <transport_descriptor>
        <transport_id>loopback_udpv4</transport_id>
        <type>UDPv4</type>
        <maxInitialPeersRange>{int(max_participants)}</maxInitialPeersRange>
        <interfaceWhiteList><address>127.0.0.1</address></interfaceWhiteList>
      </transport_descriptor>
    </transport_descriptors>
    <participant profile_name="loopback_only" is_default_profile="true">
      <rtps>
        <userTransports><transport_id>loopback_udpv4</transport_id></userTransports>
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
      </rtps>
    </participant>
  </profiles>
</dds>
"""


def fastdds_profile_file(max_participants: int = 40) -> Path:
    """The loopback profile written once to a content-named file (Fast DDS reads a path)."""
    xml = fastdds_loopback_profile(max_participants)
    path = Path(tempfile.gettempdir()) / f"fastdds-loopback-{hashlib.sha1(xml.encode()).hexdigest()[:12]}.xml"
    if not path.is_file() or path.read_text() != xml:
        tmp = path.with_suffix(f".{random.SystemRandom().randrange(1 << 30)}.tmp")
        tmp.write_text(xml)
        tmp.replace(path)
    return path


def isolated_dds_env(max_participants: int = 40) -> dict[str, str]:
    """Environment for ROS 2 on 127.0.0.1 only, multicast off, a random ROS_DOMAIN_ID.

    Covers CycloneDDS (``CYCLONEDDS_URI``) and Fast DDS 2/3 (profile files, ``rmw_fastrtps_cpp``).
    Apply it before the first participant is created (both read their configuration when a domain
    starts); pass it to subprocesses too so they join.
    """
    domain = random.SystemRandom().randint(*_DOMAIN_RANGE)
    profile = str(fastdds_profile_file(max_participants))
    return {
        "CYCLONEDDS_URI": loopback_config(max_participants),
        "ROS_DOMAIN_ID": str(domain),
        "FASTDDS_DEFAULT_PROFILES_FILE": profile,
        "FASTRTPS_DEFAULT_PROFILES_FILE": profile,
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


def foreign_ros_env(env: dict[str, str]) -> dict[str, str]:
    """``env`` for a Python with *another* ROS 2 distro's wheels (e.g. the Jazzy side venv).

    The ROS 2 wheels' start-up hook (``ros_wheels_bootstrapper.pth``) re-executes the interpreter
    once with its ``ros_*.libs`` folders on LD_LIBRARY_PATH and sets a guard variable; inherited by
    another venv's interpreter, both would make it load this venv's libraries (Fast DDS 3 instead
    of 2.14) and skip its own hook. Drop both so the other interpreter sets up its own.
    """
    import os
    import sys

    out = dict(env)
    out.pop("_ROS_WHEELS_BOOTSTRAP_COMPLETE", None)
    ours = os.path.join(sys.prefix, "")
    kept = [p for p in out.get("LD_LIBRARY_PATH", "").split(os.pathsep) if p and not p.startswith(ours)]
    if kept:
        out["LD_LIBRARY_PATH"] = os.pathsep.join(kept)
    else:
        out.pop("LD_LIBRARY_PATH", None)
    return out
