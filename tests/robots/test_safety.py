import logging

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from robots.base import RobotSpec
from robots.safety import SafetyFilter, make_safety_filter

SPEC = RobotSpec(
    name="t",
    hz=20,
    action_dim=4,
    state_dim=4,
    joint_names=("a_waist", "a_elbow", "a_gripper", "hand_1"),
    lower=np.array([-1.0, -2.0, 0.0, 0.0]),
    upper=np.array([1.0, 2.0, 1.0, 1.0]),
    home=np.zeros(4),
    max_delta=np.array([0.1, 0.1, 0.2, 0.2]),
)
values = st.floats(allow_nan=True, allow_infinity=True, width=64)


@settings(max_examples=200, deadline=None)
@given(actions=st.lists(arrays(np.float64, (4,), elements=values), min_size=1, max_size=30))
def test_every_output_is_finite_within_limits_and_slew(actions):
    f = SafetyFilter(SPEC)
    f.reset(np.zeros(4))
    prev = np.zeros(4)
    for a in actions:
        out = f.apply(a)
        assert np.all(np.isfinite(out))
        assert np.all(out >= SPEC.lower) and np.all(out <= SPEC.upper)
        assert np.all(np.abs(out - prev) <= SPEC.max_delta + 1e-12)
        prev = out


def test_nonfinite_holds_and_logs_once_per_burst(caplog):
    f = SafetyFilter(SPEC)
    f.reset(np.zeros(4))
    f.apply(np.array([0.05, 0, 0, 0]))
    with caplog.at_level(logging.WARNING):
        for bad in ([np.nan, 0, 0, 0], [0, np.inf, 0, 0], [0, 0, -np.inf, 0]):
            np.testing.assert_array_equal(f.apply(np.array(bad)), [0.05, 0, 0, 0])
        f.apply(np.array([0.05, 0, 0, 0]))
        f.apply(np.array([np.nan] * 4))
    assert f.counters.rejected_nonfinite == 4
    assert sum("non-finite" in r.message for r in caplog.records) == 2


def test_wrong_shape_is_rejected():
    f = SafetyFilter(SPEC)
    f.reset(np.zeros(4))
    np.testing.assert_array_equal(f.apply(np.zeros(3)), np.zeros(4))
    assert f.counters.rejected_nonfinite == 1


def test_limits_then_slew():
    f = SafetyFilter(SPEC)
    f.reset(np.array([0.95, 0, 0, 0]))
    out = f.apply(np.array([5.0, -5.0, 0.5, 0.0]))
    np.testing.assert_allclose(out, [1.0, -0.1, 0.2, 0.0])
    assert f.counters.clipped_limits == 1 and f.counters.slew_limited == 1


def test_needs_reset_and_finite_anchor():
    f = SafetyFilter(SPEC)
    with pytest.raises(RuntimeError, match="reset"):
        f.apply(np.zeros(4))
    with pytest.raises(ValueError):
        f.reset(np.array([np.nan, 0, 0, 0]))


def test_config_overrides_split_arm_and_gripper():
    f = make_safety_filter(SPEC, max_delta_deg=2.0, max_gripper_delta=0.05)
    np.testing.assert_allclose(f.max_delta, [np.deg2rad(2), np.deg2rad(2), 0.05, 0.05])
    assert np.array_equal(make_safety_filter(SPEC).max_delta, SPEC.max_delta)
