"""Helpers to run ROS 2 in isolation (tests, benchmarks): loopback only, private domain, both vendors.

CycloneDDS (our DDS transport) is confined by ``CYCLONEDDS_URI``; Fast DDS (rclpy's default
``rmw_fastrtps_cpp``, in our venv and in a Jazzy side venv) by an XML profile named in
``FASTDDS_DEFAULT_PROFILES_FILE`` (Fast DDS 3, Kilted) and ``FASTRTPS_DEFAULT_PROFILES_FILE``
(Fast DDS 2, Jazzy): UDPv4 only, interface whitelist 127.0.0.1, built-in transports (SHM and the
default UDP on every interface) off, unicast discovery to the initial peer 127.0.0.1
(``robots.ros2.fastdds``). Without it Fast DDS announces by multicast on every interface.
"""

from __future__ import annotations

import random

from robots.ros2.dds import loopback_config
from robots.ros2.fastdds import engine_profile, profile_env, robot_profile

# ROS 2 domain ids whose DDS port ranges fit in 16 bits (7400 + 250 * id + ...), minus 0 (default).
_DOMAIN_RANGE = (1, 232)


def isolated_dds_env(max_participants: int = 40) -> dict[str, str]:
    """Environment for ROS 2 on 127.0.0.1 only, multicast off, a random ROS_DOMAIN_ID (engine side).

    Covers CycloneDDS (``CYCLONEDDS_URI``) and Fast DDS 2/3: the engine's Fast DDS profile
    (``robots.ros2.fastdds.engine_profile``) confined to loopback. Give counterpart nodes
    :func:`robot_side_env` of it: the same domain, Fast DDS defaults. Apply it before the first
    participant is created (both read their configuration when a domain starts); pass it to
    subprocesses too so they join.
    """
    domain = random.SystemRandom().randint(*_DOMAIN_RANGE)
    return {
        "CYCLONEDDS_URI": loopback_config(max_participants),
        "ROS_DOMAIN_ID": str(domain),
        **profile_env(engine_profile(loopback=True, max_participants=max_participants), "fastdds-engine-loopback"),
        "RMW_FASTRTPS_PUBLICATION_MODE": "AUTO",  # the profile's paced asynchronous writers
        "RMW_IMPLEMENTATION": "rmw_fastrtps_cpp",
    }


def robot_side_env(env: dict[str, str], max_participants: int = 40) -> dict[str, str]:
    """``env`` for an unmodified robot-side Fast DDS node: loopback only, every other setting default."""
    out = {**env, **profile_env(robot_profile(max_participants), "fastdds-loopback")}
    out.pop("RMW_FASTRTPS_PUBLICATION_MODE", None)
    return out


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
