"""The simulated ALOHA robot on real MuJoCo: lockstep determinism, images, episodes, real time."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest

from robots.base import Robot, RobotError, StaleDataError
from robots.cameras.base import FrameSpec
from robots.sim import SimCamera, SimRobot, aloha

ROOT = Path(__file__).resolve().parents[2]
W, H = 128, 96
SOURCES = {"head": "top", "left": "left_wrist", "right": "right_wrist"}


def camera_factories(max_frame_age_s: float = 0.5, fps: float = 15.0) -> dict:
    """What the run object hands the robot: partials with (name, width, height, age) bound."""
    return {
        name: partial(SimCamera, frames=FrameSpec(name, W, H, max_frame_age_s), source=src, fps=fps)
        for name, src in SOURCES.items()
    }


def wiggle(k: int, home: np.ndarray) -> np.ndarray:
    """A small deterministic joint motion around home (rad; grippers normalized)."""
    action = home.copy()
    action[[1, 8]] += 0.2 * np.sin(0.3 * k)
    action[[0, 7]] += 0.1 * np.cos(0.2 * k)
    action[[6, 13]] = 0.5 + 0.4 * np.sin(0.5 * k)
    return action


def test_spec_matches_gym_aloha_conventions() -> None:
    robot = SimRobot(cameras=camera_factories(), realtime=False, hz=20, max_delta_deg=5, max_gripper_delta=0.1)
    spec = robot.spec
    assert isinstance(robot, Robot)
    assert (spec.action_dim, spec.state_dim, spec.hz) == (14, 14, 20.0)
    assert spec.joint_names[0] == "left_arm_waist" and spec.joint_names[13] == "right_arm_gripper"
    assert spec.camera_names == ("head", "left", "right")
    assert robot.n_substeps == 25  # 1 / (20 Hz * 0.002 s)
    np.testing.assert_allclose(spec.home[:6], [0, -0.96, 1.16, 0, -0.3, 0])
    np.testing.assert_allclose(spec.home[6], (0.02239 - 0.01844) / (0.058 - 0.01844))
    np.testing.assert_allclose(spec.max_delta[[0, 5, 7, 12]], np.deg2rad(5))
    np.testing.assert_allclose(spec.max_delta[[6, 13]], 0.1)
    np.testing.assert_allclose(spec.lower[[6, 13]], 0.0)
    np.testing.assert_allclose(spec.upper[[6, 13]], 1.0)
    np.testing.assert_allclose(spec.lower[1], -1.85005)
    obs = robot.read()
    np.testing.assert_allclose(obs.state, spec.home, atol=1e-6)
    assert obs.state.dtype == np.float32


def run_lockstep(seed: int, ticks: int) -> tuple[list[np.ndarray], list[dict[str, np.ndarray]]]:
    robot = SimRobot(cameras=camera_factories(), realtime=False)
    robot.home(seed)
    states, images = [], []
    for k in range(ticks):
        robot.send(wiggle(k, robot.spec.home))
        obs = robot.read()
        states.append(obs.state)
        images.append({name: frame.image for name, frame in obs.images.items()})
    robot.stop()
    return states, images


def test_lockstep_is_deterministic_and_renders_images() -> None:
    states_a, images_a = run_lockstep(seed=3, ticks=8)
    states_b, images_b = run_lockstep(seed=3, ticks=8)
    for sa, sb in zip(states_a, states_b):
        np.testing.assert_array_equal(sa, sb)
    for ia, ib in zip(images_a, images_b):
        assert ia.keys() == ib.keys() == set(SOURCES)
        for name in ia:
            np.testing.assert_array_equal(ia[name], ib[name])
    for name, image in images_a[-1].items():
        assert image.shape == (3, H, W) and image.dtype == np.uint8
        assert image.std() > 5.0, f"{name} image is (nearly) constant"
    # The commands moved the arms (state is not frozen at home).
    assert np.abs(states_a[-1] - states_a[0]).max() > 0.05
    # A different cube position changes the top view.
    _, images_c = run_lockstep(seed=4, ticks=1)
    assert not np.array_equal(images_a[0]["head"], images_c[0]["head"])


def test_lockstep_advances_one_period_per_send() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(0)
    obs = robot.read()
    assert obs.images == {} and obs.info["step"] == 0 and obs.info["sim_time"] == 0.0
    for k in range(3):
        robot.send(robot.spec.home)
    obs = robot.read()
    assert obs.info["step"] == 3
    assert obs.info["sim_time"] == pytest.approx(3 * 0.05)


def test_render_in_lockstep_false_skips_images() -> None:
    robot = SimRobot(cameras=camera_factories(), realtime=False, render_in_lockstep=False)
    robot.send(robot.spec.home)
    assert robot.read().images == {}


def test_home_redraws_cube_and_counts_episodes() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(1)
    first = robot.read().info
    for _ in range(5):
        robot.send(wiggle(0, robot.spec.home))
    robot.home(2)
    second = robot.read().info
    assert second["episode"] == first["episode"] + 1
    assert second["step"] == 0
    assert not np.allclose(first["cube_init_pose"], second["cube_init_pose"])
    for info in (first, second):
        x, y, z = info["cube_init_pose"][:3]
        assert aloha.CUBE_X_RANGE[0] <= x <= aloha.CUBE_X_RANGE[1]
        assert aloha.CUBE_Y_RANGE[0] <= y <= aloha.CUBE_Y_RANGE[1]
        assert z == pytest.approx(0.05)
        np.testing.assert_allclose(info["cube_pose"], info["cube_init_pose"])
        assert info["reward"] == 0 and info["success"] is False
    np.testing.assert_allclose(robot.read().state, robot.spec.home, atol=1e-6)
    robot.home(1)
    np.testing.assert_array_equal(robot.read().info["cube_init_pose"], first["cube_init_pose"])
    expected = aloha.sample_cube_pose(np.random.default_rng(1))
    np.testing.assert_array_equal(first["cube_init_pose"], expected)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_send_raises_and_applies_nothing(bad: float) -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(0)
    action = robot.spec.home.copy()
    action[3] = bad
    with pytest.raises(ValueError):
        robot.send(action)
    assert robot.read().info["step"] == 0
    with pytest.raises(ValueError):
        robot.send(np.zeros(13))
    robot.send(robot.spec.home)  # still usable
    assert robot.read().info["step"] == 1


def test_realtime_runs_with_wall_clock_and_fresh_frames() -> None:
    """Real time, functionally: physics steps on its own, commands move the arm, every camera keeps
    delivering newer frames, and stop() ends it. How closely it follows the wall clock depends on
    the machine's load: the control loop's period error is measured in benchmarks/bench_realtime.py,
    not here. The age limits are generous so that a starved 2-core host cannot trip them (the
    StaleDataError checks have a test of their own below)."""
    max_age = 60.0
    robot = SimRobot(cameras=camera_factories(max_frame_age_s=max_age), realtime=True, max_state_age_s=max_age)
    robot.home(5)
    with pytest.raises(ValueError):
        robot.send(np.full(14, np.nan))
    robot.start()
    try:
        first = robot.read()
        period = robot.spec.period_s
        indices: dict[str, list[int]] = {name: [first.images[name].index] for name in SOURCES}
        steps = [first.info["step"]]

        def done() -> bool:
            return (
                steps[-1] - steps[0] >= 20
                and np.abs(last.state - first.state).max() > 0.05
                and all(idx[-1] - idx[0] >= 5 for idx in indices.values())
            )

        last, k, deadline = first, 0, time.monotonic() + 120.0  # a condition, not a duration
        while not done() and time.monotonic() < deadline:
            k += 1
            last = robot.read()  # raises StaleDataError if a frame or the state were too old
            steps.append(last.info["step"])
            for name, frame in last.images.items():
                assert frame.image.shape == (3, H, W)
                assert frame.receive_time >= frame.capture_time
                indices[name].append(frame.index)
            robot.send(wiggle(k, robot.spec.home))
            time.sleep(period)
    finally:
        robot.stop()
    robot.stop()  # idempotent
    assert steps == sorted(steps) and steps[-1] - steps[0] >= 20, "physics did not keep stepping"
    assert np.abs(last.state - first.state).max() > 0.05  # commands were applied
    for name, idx in indices.items():
        assert idx == sorted(idx) and idx[-1] - idx[0] >= 5, f"camera {name} did not keep rendering"


def cube_pixel(image: np.ndarray) -> np.ndarray:
    """Centroid (x, y) in pixels of the red cube in a (3, H, W) frame."""
    r, g, b = np.asarray(image, dtype=int)
    ys, xs = np.nonzero((r > 120) & (g < 60) & (b < 60))
    assert len(xs) > 0, "no cube in the frame"
    return np.array([xs.mean(), ys.mean()])


@pytest.mark.parametrize("device_processes", [True, False], ids=["processes", "threads"])
def test_realtime_first_frame_after_home_shows_the_new_episode(device_processes: bool) -> None:
    # home() teleports the cube; the episode's first observation (its first chunk is planned from
    # it) must show the new scene, not the camera's last frame of the previous episode.
    seeds = (1000, 1001, 1002)
    lockstep = SimRobot(cameras=camera_factories(), realtime=False)
    expected = []
    for seed in seeds:
        lockstep.home(seed)
        expected.append(cube_pixel(lockstep.read().images["head"].image))
    # the seeds put the cube visibly apart (else a stale frame could pass)
    assert all(np.linalg.norm(a - b) > 3.0 for a, b in zip(expected, expected[1:]))
    robot = SimRobot(cameras=camera_factories(), realtime=True, device_processes=device_processes)
    robot.start()
    try:
        for seed, want in zip(seeds, expected):
            robot.home(seed)
            obs = robot.read()
            assert obs.info["episode"] >= 1
            got = cube_pixel(obs.images["head"].image)
            assert np.linalg.norm(got - want) < 1.5, f"seed {seed}: cube at {got} in the first frame, expected {want}"
    finally:
        robot.stop()


def test_realtime_stale_frames_and_state_raise() -> None:
    robot = SimRobot(cameras=camera_factories(max_frame_age_s=0.3), realtime=True, max_state_age_s=10.0)
    robot.start()
    robot.read()
    robot.stop()  # physics and cameras stop: the newest frame ages past max_frame_age_s
    time.sleep(0.4)
    with pytest.raises(StaleDataError, match="camera"):
        robot.read()

    blind = SimRobot(cameras={}, realtime=True, max_state_age_s=0.3)
    blind.read()  # before start: the initial state, not stale
    blind.start()
    blind.read()
    blind.stop()
    time.sleep(0.4)
    with pytest.raises(StaleDataError, match="state"):
        blind.read()


def test_unknown_camera_source_is_an_error() -> None:
    with pytest.raises(RobotError, match="no MuJoCo camera"):
        SimRobot(cameras={"x": partial(SimCamera, frames=FrameSpec("x", 8, 8, 1.0), source="nope")})


def test_configs_instantiate_against_signatures() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    robot_cfg = OmegaConf.load(ROOT / "conf/robot/sim.yaml")
    robot_cfg.pop("defaults", None)  # the Hydra defaults list (the robot's cameras), not a constructor argument
    cams_cfg = OmegaConf.load(ROOT / "conf/cameras/sim.yaml")
    assert set(cams_cfg.devices) == set(SOURCES)
    cameras = {
        name: partial(
            instantiate(node), frames=FrameSpec(name, cams_cfg.width, cams_cfg.height, cams_cfg.max_frame_age_s)
        )
        for name, node in cams_cfg.devices.items()
    }
    robot = instantiate(robot_cfg)(cameras=cameras, realtime=False)
    assert robot.spec.hz == robot_cfg.hz and robot.spec.action_dim == robot_cfg.action_dim
    obs = robot.read()
    assert obs.images["head"].image.shape == (3, cams_cfg.height, cams_cfg.width)


def _run_python(code: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def test_gl_backend_selection_in_a_fresh_process() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("MUJOCO_GL", "PYOPENGL_PLATFORM")}
    chosen = _run_python(
        "import os, robots.gl as g; b = g.select_backend(); import mujoco; print(b, os.environ['MUJOCO_GL'])", env
    )
    assert chosen.returncode == 0, chosen.stderr
    backend, exported = chosen.stdout.split()
    assert backend == exported and backend in ("egl", "osmesa")
    # An explicit value is respected as is.
    kept = _run_python("import robots.gl as g; print(g.select_backend())", dict(env, MUJOCO_GL="osmesa"))
    assert kept.stdout.strip() == "osmesa"
    # Nothing renders -> a clear RobotError naming what was tried.
    failed = _run_python(
        "import robots.gl as g\n"
        "g.CANDIDATES = ('nonexistent-backend',)\n"
        "try:\n    g.require_rendering()\n"
        "except g.RobotError as e:\n    print('RobotError', e)\n",
        env,
    )
    assert failed.stdout.startswith("RobotError") and "nonexistent-backend" in failed.stdout, failed.stderr
