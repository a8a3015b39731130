"""The CycloneDDS transport speaks ROS 2's wire format, over real DDS on 127.0.0.1."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from cyclonedds.domain import DomainParticipant
from cyclonedds.sub import DataReader
from cyclonedds.topic import Topic
from rosbags.typesys import Stores, get_typestore

from robots.ros2 import messages
from robots.ros2.dds import DdsTransport, idl_type
from robots.ros2.testing import isolated_dds_env
from robots.ros2.transport import QosProfile, make_transport

ROOT = Path(__file__).resolve().parents[2]
ROSBAGS = get_typestore(Stores.ROS2_HUMBLE)


@pytest.fixture
def dds_env(monkeypatch):
    env = isolated_dds_env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


def wait_until(cond, timeout_s=5.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.01)
    return False


def test_ros2_names():
    assert messages.dds_type_name("JointState") == "sensor_msgs::msg::dds_::JointState_"
    assert messages.dds_type_name("std_msgs/Float32MultiArray") == "std_msgs::msg::dds_::Float32MultiArray_"
    assert messages.dds_topic_name("/igris_b/packy/joint_states") == "rt/igris_b/packy/joint_states"
    assert idl_type("JointState").__idl_typename__ == "sensor_msgs::msg::dds_::JointState_"
    with pytest.raises(ValueError, match="unknown ROS 2 message type"):
        messages.resolve_type("NotAMessage")


@pytest.mark.parametrize(
    "msg_type,msg",
    [
        ("sensor_msgs/msg/JointState", messages.joint_state(["r1", "l1", "x"], np.array([0.5, -1.25, 3.0]))),
        ("std_msgs/msg/Float32MultiArray", messages.float32_multi_array(np.linspace(0, 1, 12))),
        ("sensor_msgs/msg/Image", messages.image_rgb8(np.arange(5 * 7 * 3, dtype=np.uint8).reshape(5, 7, 3))),
    ],
)
def test_rosbags_cdr_equals_cyclonedds_xcdr1(msg_type, msg):
    """Two independent encoders agree byte for byte: rosbags (ROS 2 bags) and CycloneDDS's IDL."""
    ours = messages.serialize(msg, msg_type)
    as_idl = idl_type(msg_type).deserialize(ours)  # CycloneDDS reads rosbags' bytes...
    theirs = as_idl.serialize(use_version_2=False)  # ...and writes XCDR1 little endian
    assert ours[:4] == b"\x00\x01\x00\x00"  # CDR_LE encapsulation, as ROS 2 sends
    assert theirs[: len(ours)] == ours and set(theirs[len(ours) :]) <= {0}
    # and rosbags' own deserializer reads CycloneDDS's encoding back to the same message
    back = ROSBAGS.deserialize_cdr(theirs, msg_type)
    assert messages.serialize(back, msg_type) == ours


def test_pub_sub_on_loopback_keeps_latest_with_receive_time(dds_env):
    assert "127.0.0.1" in os.environ["CYCLONEDDS_URI"] and "<AllowMulticast>false" in os.environ["CYCLONEDDS_URI"]
    a, b = make_transport("dds"), make_transport("dds")
    try:
        assert a.kind == "dds" and a.domain_id == int(dds_env["ROS_DOMAIN_ID"])
        sub = b.subscribe("/t/js", "JointState", QosProfile("reliable", 5))
        pub = a.publisher("/t/js", "JointState", QosProfile("reliable", 5))
        assert wait_until(lambda: pub.matched > 0)
        assert sub.latest() is None
        for i in range(5):
            pub.publish(messages.joint_state(["a"], np.array([float(i)])))
        t_sent = time.monotonic()
        assert wait_until(lambda: sub.count >= 5)
        msg, t_recv = sub.latest()
        assert msg.position.tolist() == [4.0] and msg.name == ["a"]
        assert t_sent - 1.0 < t_recv <= time.monotonic()
    finally:
        a.close()
        b.close()
        a.close()  # idempotent


def test_plain_dds_reader_of_ros_type_reads_our_messages(dds_env):
    """A generic DDS app using ROS 2's type and topic names (as rmw_cyclonedds does) gets the data."""
    ours = DdsTransport(int(dds_env["ROS_DOMAIN_ID"]))
    dp = DomainParticipant(int(dds_env["ROS_DOMAIN_ID"]))
    reader = DataReader(dp, Topic(dp, "rt/igris_b/packy/finger_target", idl_type("Float32MultiArray")))
    try:
        pub = ours.publisher("/igris_b/packy/finger_target", "Float32MultiArray")
        assert wait_until(lambda: pub.matched > 0)
        pub.publish(messages.float32_multi_array(np.arange(12, dtype=np.float32)))
        got = []
        assert wait_until(lambda: got.extend(reader.take()) or got)
        assert list(got[0].data) == list(range(12))
        assert got[0].layout.dim[0].size == 12
    finally:
        ours.close()
        reader = dp = None  # drop the DDS entities now, before the participant's domain goes


def test_best_effort_subscriber_matches_reliable_publisher(dds_env):
    a, b = make_transport("dds"), make_transport("dds")
    try:
        sub = b.subscribe("/t/img", "Image", QosProfile("best_effort", 1))
        pub = a.publisher("/t/img", "Image", QosProfile("reliable", 2))
        assert wait_until(lambda: pub.matched > 0)
        img = np.random.default_rng(0).integers(0, 255, (240, 320, 3), dtype=np.uint8)
        pub.publish(messages.image_rgb8(img))
        assert wait_until(lambda: sub.latest() is not None)
        msg, _ = sub.latest()
        np.testing.assert_array_equal(msg.data.reshape(240, 320, 3), img)
    finally:
        a.close()
        b.close()


def test_qos_config_is_checked():
    assert QosProfile.from_config({"reliability": "best_effort", "depth": 3}) == QosProfile("best_effort", 3)
    with pytest.raises(ValueError, match="reliability"):
        QosProfile.from_config({"reliability": "sometimes"})
    with pytest.raises(ValueError, match="unknown QoS keys"):
        QosProfile.from_config({"durability": "transient_local"})


def test_auto_is_resolved_in_one_place(monkeypatch):
    """Engine, twin, cameras and benchmarks all go through resolve_transport_kind."""
    import robots.ros2.transport as tr

    monkeypatch.setattr(tr, "rclpy_available", lambda: False)
    assert tr.resolve_transport_kind("auto")[0] == "dds"
    monkeypatch.setattr(tr, "rclpy_available", lambda: True)
    assert tr.resolve_transport_kind("auto")[0] == "rclpy"
    assert tr.resolve_transport_kind("dds") == ("dds", "configured")
    with pytest.raises(ValueError, match="transport must be"):
        make_transport("zenoh")
    assert tr.ros_node_name("camera_cam-high") == "camera_cam_high" and tr.ros_node_name("1x") == "_1x"


def test_twin_cli_in_another_process_is_heard_over_loopback(dds_env, tmp_path):
    """`python -m robots.twin` (the Hydra app) publishes joint states another process receives."""
    env = {**os.environ, **dds_env}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "robots.twin",
            "robot=igris_b",
            "twin.duration_s=30",
            "twin.start_pose=home",
            f"hydra.run.dir={tmp_path}",
            "hydra/job_logging=disabled",
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    t = make_transport("dds")
    try:
        # the twin resolves transport=auto like the engine (rclpy here); a DDS subscriber hears it
        sub = t.subscribe("/igris_b/packy/joint_states", "JointState", QosProfile("best_effort", 5))
        img = t.subscribe("/igris_b/packy/head_camera/image_raw", "Image", QosProfile("best_effort", 1))
        ok = wait_until(lambda: sub.latest() is not None and img.latest() is not None, timeout_s=30)
        assert ok, f"nothing from the twin process; its output:\n{proc.poll() and proc.stdout.read()}"
        msg, _ = sub.latest()
        # right arm first on the wire: IGRIS_B home right shoulder is +20 deg
        np.testing.assert_allclose(msg.position[:6], np.deg2rad([20, 30, 0, -120, 0, 0]), atol=1e-6)
        assert msg.name[0] == "right_arm_1"
        im, _ = img.latest()
        assert (im.width, im.height, im.encoding) == (320, 240, "rgb8")
    finally:
        t.close()
        proc.terminate()
        proc.wait(timeout=10)
