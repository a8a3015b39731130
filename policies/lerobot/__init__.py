"""LeRobot checkpoints (``policy=lerobot``): importing this registers the policy; lerobot itself is imported
only where it is installed (the policy host / an RTC inference process under ``policy.python``)."""

from policies.lerobot.policy import LeRobotPolicy

__all__ = ["LeRobotPolicy"]
