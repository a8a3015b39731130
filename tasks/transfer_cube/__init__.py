"""The bimanual ALOHA transfer-cube task (MuJoCo, ``robot=sim``): the scripted expert
(``tasks.transfer_cube.expert``, ``policy=scripted``), its IK, demonstrations, and training/evaluation
of the bundled flow policy. Importing this package imports nothing else, so an entry point can choose
MuJoCo's GL backend (``robots.gl.select_backend()``) before ``mujoco`` is loaded."""
