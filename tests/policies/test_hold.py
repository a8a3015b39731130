"""The hold policy: position-controlled robots get their measured position back, force- or
torque-controlled ones (robot=gym) their holding command."""

from __future__ import annotations

import numpy as np
import pytest

from policies.base import PolicyInput
from policies.hold import HoldPolicy


def test_hold_repeats_the_measured_position_by_default() -> None:
    policy = HoldPolicy(chunk_size=4, action_dim=2, state_dim=3)
    chunk = policy.predict(PolicyInput(state=np.array([[9.0, 9.0, 9.0], [1.0, 2.0, 3.0]], np.float32)))
    np.testing.assert_array_equal(chunk, np.tile([1.0, 2.0], (4, 1)))


def test_hold_action_is_repeated_whatever_the_state() -> None:
    policy = HoldPolicy(chunk_size=3, action_dim=1, state_dim=3, hold_action=[0.25])
    chunk = policy.predict(PolicyInput(state=np.array([[0.9, -0.4, 2.0]], np.float32)))
    np.testing.assert_array_equal(chunk, np.full((3, 1), 0.25, np.float32))
    # a state smaller than the action is fine when the hold action is given
    HoldPolicy(chunk_size=2, action_dim=4, state_dim=2, hold_action=[0, 0, 0, 0])
    with pytest.raises(ValueError, match="hold_action has 2 values"):
        HoldPolicy(chunk_size=2, action_dim=1, state_dim=3, hold_action=[0, 0])
    with pytest.raises(ValueError, match="state_dim >= action_dim"):
        HoldPolicy(chunk_size=2, action_dim=4, state_dim=2)
