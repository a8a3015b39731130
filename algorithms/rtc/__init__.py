"""Real-time chunking: pure chunk logic, shared-memory runtime, lockstep evaluator."""

from algorithms.rtc.chunk_logic import ChunkRejected, ChunkScheduler, DelayEstimator
from algorithms.rtc.lockstep import LockstepEvaluator
from algorithms.rtc.runtime import RTCAlgorithm

__all__ = ["ChunkRejected", "ChunkScheduler", "DelayEstimator", "LockstepEvaluator", "RTCAlgorithm"]
