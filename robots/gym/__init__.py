"""Any Gymnasium environment as a robot (``robot=gym``): lockstep or real time, cameras from rendered
frames or pixel observations. Needs the ``gym`` extra for suites outside Gymnasium (dm_control)."""

from robots.gym.camera import GymCamera
from robots.gym.robot import GymRobot

__all__ = ["GymCamera", "GymRobot"]
