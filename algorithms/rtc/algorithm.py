"""``algorithm=rtc``: real-time chunking with the policy in a spawned inference process.

The one control loop (``algorithms/loop.py``), asynchronous, with the shared-memory transport
(``algorithms/rtc/transport.py``): the control process ticks at ``robot.hz`` and never waits; the
inference process computes the next chunk while the current one executes.
"""

from __future__ import annotations

from typing import Any

from algorithms.chunking.config import RTCConfig
from algorithms.loop import ControlLoop, LoopConfig, RestartConfig
from algorithms.rtc.transport import InferenceProcessConfig, SharedMemoryTransport
from algorithms.settings import build_groups, knob_groups


@knob_groups(rtc=RTCConfig, limits=LoopConfig, restarts=RestartConfig, process=InferenceProcessConfig)
class RTCAlgorithm:
    """The chunking knobs (``RTCConfig``), the loop's bounds (``LoopConfig``), how often a failed
    inference process is replaced (``RestartConfig``) and how it is run and watched
    (``InferenceProcessConfig``), each a member."""

    def __init__(self, run: Any, **knobs: Any) -> None:
        groups = build_groups(self.knob_groups, knobs)
        self.run = run
        self.rtc: RTCConfig = groups["rtc"]
        self.limits: LoopConfig = groups["limits"]
        self.restarts: RestartConfig = groups["restarts"]
        self.process: InferenceProcessConfig = groups["process"]
        self.rtc.check_chunk_size(run.policy_metadata.chunk_size)

    def execute(self) -> dict[str, Any]:
        transport = SharedMemoryTransport(self.process)
        return ControlLoop(self.run, self.rtc, self.limits, transport, name="rtc", restarts=self.restarts).execute()
