"""Topic mapping and robot layout from YAML: pure logic, no DDS."""

from __future__ import annotations

import functools
import json
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from omegaconf import OmegaConf

from robots.base import RobotError
from robots.ros2 import messages
from robots.ros2.layout import RobotLayout
from robots.ros2.topics import CommandTopic, StateTopic, load_seed_topics, parse_command_topics

CONF = Path(__file__).resolve().parents[2] / "conf" / "robot"


@functools.cache
def layout(name: str) -> RobotLayout:
    return RobotLayout.from_config(OmegaConf.load(CONF / f"{name}.yaml"))


def test_igris_b_layout_from_its_config():
    lay = layout("igris_b")
    assert (lay.action_dim, lay.state_dim, lay.hz, lay.robot_id) == (24, 24, 20.0, "packy")
    # home (deg, per arm group in conf/robot/igris_b.yaml) -> action order left arm, right arm, in radians
    np.testing.assert_allclose(lay.home[0:6], np.deg2rad([-20, -30, 0, 120, 0, 0]))
    np.testing.assert_allclose(lay.home[6:12], np.deg2rad([20, 30, 0, -120, 0, 0]))
    np.testing.assert_allclose(lay.home[12:24], [1, 1, 1, 1, 1, 0.5] * 2)
    np.testing.assert_allclose(lay.max_delta[:12], np.deg2rad(5.0))
    assert lay.state_topics["joints"].topic == "/igris_b/packy/joint_states"
    assert lay.state_topics["fingers"].topic == "/igris_b/packy/finger_state"
    assert lay.commands["arms"].topic == "/igris_b/packy/target_joints"
    assert lay.commands["hands"].topic == "/igris_b/packy/finger_target"
    assert (lay.lower <= lay.home).all() and (lay.home <= lay.upper).all()


def test_igris_c_is_its_own_platform():
    lay = layout("igris_c")
    assert (lay.action_dim, lay.state_dim) == (16, 16)
    assert lay.commands["grippers"].msg_type == "std_msgs/msg/Float64MultiArray"
    assert lay.spec().joint_names[0] == "left_arm_1"


def test_state_slicing_maps_right_and_left():
    lay = layout("igris_b")
    js = messages.joint_state([f"j{i}" for i in range(12)], np.arange(12.0))  # 0..5 right, 6..11 left
    fingers = messages.float32_multi_array(np.arange(100, 112, dtype=np.float32))
    values = {**lay.state_topics["joints"].extract(js), **lay.state_topics["fingers"].extract(fingers)}
    np.testing.assert_array_equal(values["/observation/joint_pos/right"], np.arange(0, 6))
    np.testing.assert_array_equal(values["/observation/joint_pos/left"], np.arange(6, 12))
    state = lay.state_vector(values)
    # state order = left arm, right arm, left hand, right hand (as the action)
    np.testing.assert_array_equal(state, np.r_[6:12, 0:6, 106:112, 100:106].astype(np.float32))
    # the measured action puts the left arm's measurement on the left arm's action dims
    np.testing.assert_array_equal(lay.measured_action(state, lay.home)[:6], np.arange(6, 12))


def test_command_split_sends_right_first():
    lay = layout("igris_b")
    action = np.arange(24.0)  # left arm 0..5, right arm 6..11, left hand 12..17, right hand 18..23
    np.testing.assert_array_equal(lay.commands["arms"].split(action), np.r_[6:12, 0:6])
    np.testing.assert_array_equal(lay.commands["hands"].split(action), np.r_[18:24, 12:18])
    names = lay.commands["arms"].message_names(lay.joint_names)
    assert names[:6] == [f"right_arm_{i}" for i in range(1, 7)] and names[6] == "left_arm_1"


@settings(max_examples=50, deadline=None)
@given(st.lists(st.floats(-3, 3, allow_nan=False), min_size=24, max_size=24))
def test_split_then_merge_is_identity(values):
    lay = layout("igris_b")
    action = np.asarray(values)
    back = np.full(24, np.nan)
    for cmd in lay.commands.values():
        cmd.merge(cmd.split(action), back)
    np.testing.assert_array_equal(back, action)


def test_too_short_message_is_an_error_not_zero_fill():
    lay = layout("igris_b")
    js = messages.joint_state(["a"] * 6, np.zeros(6))
    with pytest.raises(RobotError, match=r"position has 6 values.*joint_pos/left needs \[6, 12\)"):
        lay.state_topics["joints"].extract(js)


@pytest.mark.parametrize(
    "mutate,message",
    [
        (lambda c: c.commands.arms.slots.pop(), r"message slots \[6, 7, 8, 9, 10, 11\] are not covered"),
        (lambda c: c.update({"state_dim": 23}), "state keys add up to 24 values, state_dim is 23"),
        (lambda c: c.groups[0].update({"bogus": 1}), r"unknown keys \['bogus'\]"),
        (lambda c: c.topics.joints.update({"msg_type": "NoSuchMsg"}), "unknown ROS 2 message type"),
        (
            lambda c: c.topics.joints.fields["/observation/joint_pos/left"].update({"attr": "data"}),
            "has no field 'data'",
        ),
        (lambda c: c.groups[0].update({"home": [0] * 5}), "left_arm home: expected 6 values"),
        (lambda c: c.groups[0].update({"home": [500, 0, 0, 0, 0, 0]}), "home pose outside"),
        (lambda c: c.groups[2].pop("max_delta"), "needs max_delta"),
        (lambda c: c.update({"state_keys": ["/observation/nope"]}), "state key /observation/nope is not produced"),
    ],
)
def test_bad_layout_names_the_problem(mutate, message):
    cfg = OmegaConf.load(CONF / "igris_b.yaml")
    mutate(cfg)
    with pytest.raises(ValueError, match=message):
        RobotLayout.from_config(cfg)


def test_action_dims_must_be_sent_once():
    cfg = {
        "a": {"topic": "/a", "msg_type": "Float32MultiArray", "size": 2, "slots": [{"action": [0, 2], "slice": [0, 2]}]}
    }
    with pytest.raises(ValueError, match=r"action dims \[2\] are not sent"):
        parse_command_topics(cfg, action_dim=3)


def test_seed_topics_json_loads(tmp_path):
    seed = {
        "robot_id": "packy",
        "HZ": 20,
        "topics": {
            "joints": {
                "topic": "/igris_b/packy/joint_states",
                "msg_type": "JointState",
                "fields": {
                    "/observation/joint_pos/left": {"slice": [6, 12], "attr": "position"},
                    "/observation/joint_pos/right": {"slice": [0, 6], "attr": "position"},
                },
            }
        },
    }
    path = tmp_path / "inference_runtime_topics.json"
    path.write_text(json.dumps(seed))
    loaded = load_seed_topics(path)
    assert loaded["robot_id"] == "packy" and loaded["hz"] == 20
    topic = StateTopic.from_config("joints", loaded["topics"]["joints"])
    js = messages.joint_state([], np.arange(12.0))
    np.testing.assert_array_equal(topic.extract(js)["/observation/joint_pos/left"], np.arange(6, 12))
    # the robot config can take an inference_runtime_topics.json file in place of topics:
    cfg = OmegaConf.to_container(OmegaConf.load(CONF / "igris_b.yaml"))
    fingers = cfg["topics"]["fingers"]
    cfg["topics"] = {"fingers": fingers}
    cfg["topics_file"] = str(path)
    lay = RobotLayout.from_config(cfg)
    assert set(lay.state_topics) == {"joints", "fingers"}


def test_compose_is_extracts_inverse():
    lay = layout("igris_b")
    st_ = lay.state_topics["joints"]
    values = {"/observation/joint_pos/left": np.full(6, 2.0), "/observation/joint_pos/right": np.full(6, 1.0)}
    msg = st_.compose(values, names=[f"n{i}" for i in range(12)])
    np.testing.assert_array_equal(msg.position, np.r_[np.ones(6), np.full(6, 2.0)])
    assert isinstance(lay.commands["hands"], CommandTopic)
