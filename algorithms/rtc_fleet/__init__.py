"""Fleet RTC (``algorithm=rtc_fleet``): this robot's control loop and planner here, the policy in a
shared Ray Serve service (``python -m inference.fleet serve``) that batches many robots' requests."""

from algorithms.rtc_fleet.algorithm import FleetRTCAlgorithm

__all__ = ["FleetRTCAlgorithm"]
