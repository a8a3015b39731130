"""``algorithm=rtc_fleet``: real-time chunking with the policy in the shared fleet service.

The one control loop (``algorithms/loop.py``), asynchronous, with the fleet transport
(``algorithms/rtc_fleet/transport.py``): this robot keeps its own planner and delay estimate; the
service (``python -m inference.fleet serve``) batches its requests with other robots'.
"""

from __future__ import annotations

from typing import Any

from algorithms.chunking.config import RTCConfig
from algorithms.loop import ControlLoop, LoopConfig, RestartConfig
from algorithms.rtc_fleet.transport import FleetClientConfig, FleetTransport
from algorithms.settings import build_groups, knob_groups


@knob_groups(rtc=RTCConfig, limits=LoopConfig, restarts=RestartConfig, fleet=FleetClientConfig)
class FleetRTCAlgorithm:
    """The chunking knobs (``RTCConfig``), the loop's bounds (``LoopConfig``), how many failed
    inferences the run rides through (``RestartConfig``) and where the service is
    (``FleetClientConfig``), each a member."""

    def __init__(self, run: Any, **knobs: Any) -> None:
        groups = build_groups(self.knob_groups, knobs)
        self.run = run
        self.rtc: RTCConfig = groups["rtc"]
        self.limits: LoopConfig = groups["limits"]
        self.restarts: RestartConfig = groups["restarts"]
        self.fleet: FleetClientConfig = groups["fleet"]
        self.rtc.check_chunk_size(run.policy_metadata.chunk_size)

    def execute(self) -> dict[str, Any]:
        return ControlLoop(
            self.run,
            self.rtc,
            self.limits,
            FleetTransport(self.fleet, guidance=str(self.rtc.guidance)),
            name="rtc_fleet",
            restarts=self.restarts,
        ).execute()
