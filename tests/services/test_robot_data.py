"""services/robot_data.py names the robot fields the sinks read without importing robots/: the classes
robots.base hands the sinks must keep every one of those fields."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from robots.base import Frame, Observation, RobotSpec
from services.robot_data import FrameLike, ObservationLike, RobotSpecLike

PAIRS = [(FrameLike, Frame), (ObservationLike, Observation), (RobotSpecLike, RobotSpec)]


@pytest.mark.parametrize("protocol, cls", PAIRS, ids=lambda x: x.__name__)
def test_every_field_a_sink_reads_is_a_field_of_the_robot_class(protocol: Any, cls: type) -> None:
    fields = {f.name for f in dataclasses.fields(cls)}
    assert protocol.__annotations__ and set(protocol.__annotations__) <= fields


def test_what_a_robot_reads_is_what_a_sink_takes() -> None:
    frame = Frame(np.zeros((3, 2, 2), np.uint8), capture_time=1.0, receive_time=1.5)
    obs = Observation(state=np.zeros(2, np.float32), images={"top": frame}, timestamp=2.0, info={"success": False})
    spec = RobotSpec(
        name="r",
        hz=20.0,
        action_dim=1,
        state_dim=2,
        joint_names=("j",),
        lower=[-1],
        upper=[1],
        home=[0],
        max_delta=[0.1],
    )
    assert isinstance(frame, FrameLike) and isinstance(obs, ObservationLike) and isinstance(spec, RobotSpecLike)
    assert not isinstance(object(), ObservationLike)
