"""Real-time chunking: pure chunk logic, the typed knobs, the control-side planner, the
shared-memory runtime (``algorithm=rtc``)."""

from algorithms.rtc.chunk_logic import ChunkRejected, ChunkScheduler, DelayEstimator
from algorithms.rtc.config import RTCConfig
from algorithms.rtc.planner import Request, RTCPlanner
from algorithms.rtc.runtime import RTCAlgorithm

__all__ = ["ChunkRejected", "ChunkScheduler", "DelayEstimator", "RTCAlgorithm", "RTCConfig", "RTCPlanner", "Request"]
