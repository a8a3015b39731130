"""Sequential execution: the robot holds while the model thinks (the debugging mode).

The one control loop in sync execution with the in-process blocking transport: observe -> predict a
chunk (blocking, bounded by ``inference_timeout_s``) -> execute its first ``execute_horizon`` actions
at the control rate -> repeat. The clock is re-anchored after each inference, so period error
measures the control loop, not the (deliberate) inference pause. The chunk rules (rejection,
plausibility, ``max_rejected_chunks``) are the loop's, as in every mode.
"""

from __future__ import annotations

from typing import Any

from algorithms.chunking.config import RTCConfig
from algorithms.inprocess import BlockingTransport
from algorithms.loop import ControlLoop, LoopConfig
from algorithms.settings import build_groups, knob_groups


@knob_groups(rtc=RTCConfig, limits=LoopConfig)
class SequentialAlgorithm:
    """``algorithm=sequential``: the chunking knobs (``RTCConfig``; guidance is unused, every chunk
    is a plain predict, except that ``bid`` chooses among samples by agreement with the current
    chunk's rest, with no delay) and the loop's bounds (``LoopConfig``)."""

    def __init__(self, run: Any, **knobs: Any) -> None:
        groups = build_groups(self.knob_groups, knobs)
        self.run = run
        self.rtc: RTCConfig = groups["rtc"]
        self.limits: LoopConfig = groups["limits"]
        self.rtc.check_chunk_size(run.policy_metadata.chunk_size)

    def execute(self) -> dict[str, Any]:
        return ControlLoop(self.run, self.rtc, self.limits, BlockingTransport(), name="sequential", sync=True).execute()
