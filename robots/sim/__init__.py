"""Simulated ALOHA bimanual ViperX (gym_aloha's transfer-cube MJCF), stepped by MuJoCo directly.

Importing this package chooses MUJOCO_GL (``robots.gl``) before ``mujoco`` is imported.
"""

from robots.sim.camera import SimCamera
from robots.sim.robot import SimRobot, SimSnapshot

__all__ = ["SimCamera", "SimRobot", "SimSnapshot"]
