"""Split RTC (``algorithm=rtc_split``): control loop and ``RTCPlanner`` on the robot PC, the policy in
a Ray actor on the ``inference_pc`` node."""

from algorithms.rtc_split.transport import SplitRTCAlgorithm

__all__ = ["SplitRTCAlgorithm"]
