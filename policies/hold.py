"""A policy that holds the robot where it is: for bring-up on new hardware and for tests.

Every chunk repeats the measured joint positions (the first ``action_dim`` entries of the newest
state, per the robot state convention), so the loop, transport and safety path run end to end
while nothing moves. A robot commanded in force or torque (``robot=gym``) has no position in its
state: there ``hold_action`` (the robot's ``home_action``, wired by ``conf/policy/hold.yaml``) is
repeated instead. Model space = robot space (identity normalizer).
"""

from __future__ import annotations

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.registry import POLICY_REGISTRY


@POLICY_REGISTRY.register("hold")
class HoldPolicy:
    def __init__(
        self,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: list[str] | tuple[str, ...] = (),
        hold_action: list[float] | None = None,
    ) -> None:
        self.hold_action = None if hold_action is None else np.asarray(list(hold_action), dtype=np.float32)
        if self.hold_action is not None and self.hold_action.shape != (action_dim,):
            raise ValueError(f"hold policy: hold_action has {self.hold_action.size} values for action_dim {action_dim}")
        if self.hold_action is None and state_dim < action_dim:
            raise ValueError(f"hold policy needs state_dim >= action_dim, got {state_dim} < {action_dim}")
        self.metadata = PolicyMetadata(
            chunk_size=chunk_size, action_dim=action_dim, state_dim=state_dim, camera_names=tuple(camera_names)
        )

    def predict(self, obs: PolicyInput) -> np.ndarray:
        if self.hold_action is not None:
            return np.repeat(self.hold_action[None], self.metadata.chunk_size, axis=0)
        current = np.asarray(obs.state[-1][: self.metadata.action_dim], dtype=np.float32)
        return np.repeat(current[None], self.metadata.chunk_size, axis=0)

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        return self.predict(obs)

    def warmup(self) -> None:
        pass

    def freeze(self) -> None:
        pass
