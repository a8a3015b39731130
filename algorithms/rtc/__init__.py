"""``algorithm=rtc``: the shared-memory transport (layout, inference process) and its algorithm."""

from algorithms.rtc.algorithm import RTCAlgorithm

__all__ = ["RTCAlgorithm"]
