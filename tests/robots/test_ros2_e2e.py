"""The whole engine (`python -m inference robot=igris_b cameras=ros_topics`) against the ROS 2 twin.

The app runs as a subprocess, the twin in this process, over real DDS on 127.0.0.1 with a
private domain. The policy drives toward a fixed target away from home, so the test sees the
robot home first (slew-limited), then follow the policy.
"""

from __future__ import annotations

import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from omegaconf import OmegaConf
from rosbags.typesys import Stores, get_typestore

from policies.base import PolicyInput, PolicyMetadata
from robots.ros2.layout import RobotLayout
from robots.ros2.testing import isolated_dds_env
from robots.ros2.transport import make_transport
from robots.twin import RobotTwin

ROOT = Path(__file__).resolve().parents[2]
ROSBAGS = get_typestore(Stores.ROS2_HUMBLE)
OFFSET = {0: 0.2, 11: -0.15, 18: -0.4}  # left arm j1 +0.2 rad, right arm j6 -0.15 rad, right hand f1


def target_pose(action_dim: int) -> np.ndarray:
    home = RobotLayout.from_config(OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml")).home
    target = home.copy()
    for i, d in OFFSET.items():
        target[i] += d
    return target[:action_dim]


class TargetPolicy:
    """Test policy (robot space, identity normalizer): every chunk is the same target pose."""

    def __init__(
        self,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: list[str] = (),
        hold_action: list[float] | None = None,
    ) -> None:  # hold_action: policy=hold's key (built on it); unused
        self.metadata = PolicyMetadata(
            chunk_size=chunk_size, action_dim=action_dim, state_dim=state_dim, camera_names=tuple(camera_names)
        )
        self.target = target_pose(action_dim).astype(np.float32)

    def predict(self, obs: PolicyInput) -> np.ndarray:
        assert all(v.shape[-2:] == (240, 320) for v in obs.images.values())
        return np.repeat(self.target[None], self.metadata.chunk_size, axis=0)

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        return self.predict(obs)

    def warmup(self) -> None:
        pass

    def freeze(self) -> None:
        pass


@pytest.fixture
def dds_env(monkeypatch):
    env = isolated_dds_env()
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    return env


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["sequential", "rtc"])
def test_engine_homes_then_follows_the_policy_over_dds(algorithm, dds_env, tmp_path):
    robot_cfg = OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml")
    cams = OmegaConf.load(ROOT / "conf" / "cameras" / "ros_topics.yaml")
    twin = RobotTwin(robot_cfg, tau_s=0.05, image_topics={k: d.topic for k, d in cams.devices.items()}).start()
    listener = make_transport("dds")
    commands: list[bytes] = []
    listener.subscribe("/igris_b/packy/target_joints", "JointState", on_raw=lambda b, t: commands.append(b))
    run_dir = tmp_path / "run"
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "robot=igris_b",
        "cameras=ros_topics",
        "policy=hold",
        f"algorithm={algorithm}",
        "policy._target_=tests.robots.test_ros2_e2e.TargetPolicy",
        "~policy.type",
        "robot.transport=dds",
        "robot.max_state_age_s=1.0",
        "cameras.max_frame_age_s=1.0",
        "max_steps=60",
        "episodes=1",
        "report=false",
        "logger=none",
        f"hydra.run.dir={run_dir}",
    ]
    if algorithm == "rtc":
        cmd += ["algorithm.execute_horizon=10", "algorithm.startup_timeout_s=60"]
    try:
        proc = subprocess.run(cmd, cwd=ROOT, env={**os.environ, **dds_env}, capture_output=True, text=True, timeout=180)
        assert proc.returncode == 0, f"app failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
        time.sleep(0.3)
        final = twin.q.copy()
    finally:
        listener.close()
        twin.stop()
    target = target_pose(24)
    # the twin followed the policy to its target (it started at zeros, far from both)
    np.testing.assert_allclose(final, target, atol=np.deg2rad(1.0))
    # what went on the wire: valid JointStates, right arm first, never more than 5 deg per tick
    decoded = [ROSBAGS.deserialize_cdr(b, "sensor_msgs/msg/JointState") for b in commands]
    positions = np.array([m.position for m in decoded])
    assert positions.shape[1] == 12 and decoded[0].name[0] == "right_arm_1"
    steps = np.abs(np.diff(positions, axis=0)).max()
    assert steps <= np.deg2rad(5.0) + 1e-6
    home = RobotLayout.from_config(robot_cfg).home
    home_right_then_left = np.r_[home[6:12], home[0:6]]
    at_home = np.flatnonzero(np.abs(positions - home_right_then_left).max(axis=1) < 1e-6)
    assert at_home.size, "the command stream never reached the home pose"
    # ... and after home it moves on to the policy's target (right arm j6 is slot 5, left arm j1 slot 6)
    last = positions[-1]
    assert last[6] == pytest.approx(target[0]) and last[5] == pytest.approx(target[11])
    assert at_home[0] < len(positions) - 1
    ticks = list(csv.DictReader(open(run_dir / "ticks.csv")))
    assert len(ticks) >= 50


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["sequential", "rtc"])
def test_stale_joint_state_stops_the_engine_safely(algorithm, dds_env, tmp_path):
    """The joint states stop mid-run: the app stops commanding within max_state_age_s and exits 3."""
    robot_cfg = OmegaConf.load(ROOT / "conf" / "robot" / "igris_b.yaml")
    twin = RobotTwin(robot_cfg, tau_s=0.05, start_pose="home").start()
    listener = make_transport("dds")
    stamps: list[float] = []
    listener.subscribe("/igris_b/packy/target_joints", "JointState", on_raw=lambda b, t: stamps.append(t))
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "robot=igris_b",
        "cameras=none",
        "policy=hold",
        f"algorithm={algorithm}",
        "robot.transport=dds",
        "robot.max_state_age_s=0.5",
        "max_steps=2000",
        "report=false",
        "logger=none",
        f"hydra.run.dir={tmp_path / 'run'}",
    ]
    proc = subprocess.Popen(
        cmd, cwd=ROOT, env={**os.environ, **dds_env}, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        deadline = time.monotonic() + 120
        while len(stamps) < 40 and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.05)
        assert len(stamps) >= 40, f"the engine never ran: {proc.poll()} {proc.stderr.read() if proc.poll() else ''}"
        twin.mute.add("joints")  # the robot's joint state goes silent; everything else is alive
        t_silent = time.monotonic()
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
        listener.close()
        twin.stop()
    assert proc.returncode != 0
    assert "joint_states (joints) is" in err and "s old" in err
    # no command went out once the state was older than max_state_age_s (+ one tick of slack)
    assert max(stamps) <= t_silent + 0.5 + 0.15
    assert proc.returncode == 3, f"expected the fault exit code 3, got {proc.returncode}:\n{err[-3000:]}"
