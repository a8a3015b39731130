"""Split RTC: control loop on the robot PC, inference in a Ray actor on the ``inference_pc`` node,
with the chunk logic of ``algorithms.rtc.chunk_logic`` (``algorithm=rtc_split``)."""

from algorithms.split.runtime import SplitRTCAlgorithm

__all__ = ["SplitRTCAlgorithm"]
