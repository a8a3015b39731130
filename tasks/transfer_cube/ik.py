"""Damped-least-squares inverse kinematics for one ViperX arm of the ALOHA model.

The tool centre point (TCP) is the point ``TCP_OFFSET`` (metres, gripper_link frame) ahead of the
wrist, between the finger pads: it is where gym_aloha's end-effector sim welds its mocap target
(``bimanual_viperx_end_effector_*.xml``), so ACT's scripted waypoints (given for that mocap) can
be used for it unchanged. Orientation targets are given as the gripper_link rotation matrix.
"""

from __future__ import annotations

import numpy as np

from robots.sim import aloha

mujoco = aloha.mujoco

TCP_OFFSET = np.array([0.1347, 0.0, -0.002])
ARM_DOFS = {"left": np.arange(0, 6), "right": np.arange(8, 14)}
GRIPPER_BODY = {"left": "vx300s_left/gripper_link", "right": "vx300s_right/gripper_link"}


class ArmIK:
    """Solves arm joints for TCP poses on a private MjData (never the robot's)."""

    def __init__(
        self,
        model: mujoco.MjModel,
        damping: float = 1e-2,
        max_iters: int = 100,
        tol_pos_m: float = 1e-4,
        tol_rot_rad: float = 1e-3,
        rot_weight: float = 0.5,
        max_step_rad: float = 0.2,
    ) -> None:
        self.model = model
        self.data = mujoco.MjData(model)
        self.damping = damping
        self.max_iters = max_iters
        self.tol_pos_m = tol_pos_m
        self.tol_rot_rad = tol_rot_rad
        self.rot_weight = rot_weight
        self.max_step_rad = max_step_rad
        self.data.qpos[:16] = aloha.home_qpos16()
        self._jacp = np.zeros((3, model.nv))
        self._jacr = np.zeros((3, model.nv))

    def _kinematics(self) -> None:
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)

    def tcp_pose(self, arm: str, q_arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Forward kinematics: (TCP position (3,), gripper_link rotation (3, 3)) for arm joints."""
        self.data.qpos[ARM_DOFS[arm]] = q_arm
        self._kinematics()
        body = self.model.body(GRIPPER_BODY[arm]).id
        rot = self.data.xmat[body].reshape(3, 3).copy()
        return self.data.xpos[body] + rot @ TCP_OFFSET, rot

    def solve(self, arm: str, pos: np.ndarray, rot: np.ndarray, q_init: np.ndarray) -> tuple[np.ndarray, float, float]:
        """Joints reaching (pos, rot) from ``q_init``; returns (q, position error m, rotation error rad)."""
        m, d = self.model, self.data
        dofs = ARM_DOFS[arm]
        body = m.body(GRIPPER_BODY[arm]).id
        lo = m.jnt_range[dofs, 0]
        hi = m.jnt_range[dofs, 1]
        q = np.clip(np.asarray(q_init, dtype=np.float64).copy(), lo, hi)
        err_quat = np.zeros(4)
        err_rot = np.zeros(3)
        pos_err = rot_err = np.inf
        for _ in range(self.max_iters):
            d.qpos[dofs] = q
            self._kinematics()
            cur_rot = d.xmat[body].reshape(3, 3)
            tcp = d.xpos[body] + cur_rot @ TCP_OFFSET
            e_pos = pos - tcp
            # World-frame rotation error: axis-angle of rot @ cur_rot^T.
            mujoco.mju_mat2Quat(err_quat, (rot @ cur_rot.T).reshape(-1))
            mujoco.mju_quat2Vel(err_rot, err_quat, 1.0)
            pos_err = float(np.linalg.norm(e_pos))
            rot_err = float(np.linalg.norm(err_rot))
            if pos_err < self.tol_pos_m and rot_err < self.tol_rot_rad:
                break
            mujoco.mj_jac(m, d, self._jacp, self._jacr, tcp, body)
            jac = np.vstack([self._jacp[:, dofs], self.rot_weight * self._jacr[:, dofs]])
            err = np.concatenate([e_pos, self.rot_weight * err_rot])
            lhs = jac.T @ jac + self.damping**2 * np.eye(len(dofs))
            dq = np.linalg.solve(lhs, jac.T @ err)
            step = float(np.abs(dq).max())
            if step > self.max_step_rad:  # keep far-from-target seeds from diverging
                dq *= self.max_step_rad / step
            q = np.clip(q + dq, lo, hi)
        return q, pos_err, rot_err
