"""Helpers to run ROS 2 over DDS in isolation (tests, benchmarks): loopback only, private domain."""

from __future__ import annotations

import random

from robots.ros2.dds import loopback_config

# ROS 2 domain ids whose DDS port ranges fit in 16 bits (7400 + 250 * id + ...), minus 0 (default).
_DOMAIN_RANGE = (1, 232)


def isolated_dds_env(max_participants: int = 40) -> dict[str, str]:
    """Environment for CycloneDDS on 127.0.0.1, multicast off, a random ROS_DOMAIN_ID.

    Apply it before the first participant of the domain is created (CycloneDDS reads
    CYCLONEDDS_URI when a domain starts); pass it to subprocesses too so they join.
    """
    domain = random.SystemRandom().randint(*_DOMAIN_RANGE)
    return {"CYCLONEDDS_URI": loopback_config(max_participants), "ROS_DOMAIN_ID": str(domain)}
