"""The bimanual ALOHA transfer-cube task (MuJoCo, ``robot=sim``): the scripted expert
(``policy=scripted``), its IK, demonstrations, and training/evaluation of the bundled flow policy."""

from tasks.transfer_cube.expert import ScriptedTransferCube

__all__ = ["ScriptedTransferCube"]
