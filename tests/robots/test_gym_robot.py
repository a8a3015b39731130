"""The gym robot (robots/gym) on real Gymnasium environments: classic control (Pendulum-v1), Gymnasium's
MuJoCo (InvertedPendulum-v5) and the DeepMind Control Suite through shimmy, in lockstep and in real
time; the observation flattening, seeded action noise, success three ways, holding after the end,
and the start-time refusals that need more than the config corpus can show."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium import spaces
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.base import Robot, StaleDataError
from robots.cameras.base import FrameSpec
from robots.gym import GymCamera, GymRobot
from robots.gym import robot as gym_robot_module
from robots.gym.episode import success_now
from robots.gym.layout import LayoutError, state_layout, to_chw
from robots.gym.suites import make_env
from services.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]
SUITES = ["Pendulum-v1", "InvertedPendulum-v5", "dm_control/cartpole-swingup-v0"]
UPRIGHT_ID = "GymRobotTest/PendulumUpright-v0"


def pulse(k: int, dim: int) -> np.ndarray:
    """A deterministic command sequence that moves every suite's system (action units within [-1, 1])."""
    return np.full(dim, 0.8 * np.sin(0.4 * k))


def direct_states(env_id: str, seed: int, commands: list[np.ndarray], keys=None) -> list[np.ndarray]:
    """The same episode stepped with Gymnasium directly, flattened the documented way."""
    env = make_env(env_id)
    layout = state_layout(env.observation_space, keys)
    obs, _ = env.reset(seed=seed)
    out = [layout.flatten(obs)]
    for cmd in commands:
        obs, *_ = env.step(cmd.reshape(env.action_space.shape).astype(env.action_space.dtype))
        out.append(layout.flatten(obs))
    env.close()
    return out


def run_lockstep(robot: GymRobot, seed: int, steps: int) -> list[np.ndarray]:
    robot.home(seed)
    states = [robot.read().state]
    for k in range(steps):
        robot.send(pulse(k, robot.spec.action_dim))
        states.append(robot.read().state)
    return states


# --- the observation as state (pure) ---------------------------------------------------------------
def test_dict_observation_flattens_in_key_order_without_images() -> None:
    space = spaces.Dict(
        {
            "velocity": spaces.Box(-1, 1, (2,)),
            "arm": spaces.Dict({"q": spaces.Box(-1, 1, (3,)), "camera": spaces.Box(0, 255, (8, 6, 3), np.uint8)}),
            "position": spaces.Box(-1, 1, (2, 2)),
        }
    )
    layout = state_layout(space, None)
    # Gymnasium's Dict sorts a plain dict's keys; an image (uint8 H x W x 3) is a camera source, not state
    assert layout.keys == ("arm/q", "position", "velocity")
    assert layout.images == ("arm/camera",)
    assert layout.state_dim == 3 + 4 + 2
    obs = {
        "velocity": np.array([7, 8]),
        "position": np.array([[3, 4], [5, 6]]),
        "arm": {"q": np.array([0, 1, 2]), "camera": np.zeros((8, 6, 3), np.uint8)},
    }
    np.testing.assert_array_equal(layout.flatten(obs), np.arange(9, dtype=np.float32))
    chosen = state_layout(space, ["velocity", "arm/q"])
    np.testing.assert_array_equal(chosen.flatten(obs), [7, 8, 0, 1, 2])
    with pytest.raises(LayoutError, match="not in the observation"):
        state_layout(space, ["speed"])
    with pytest.raises(LayoutError, match="twice"):
        state_layout(space, ["velocity", "velocity"])


@settings(max_examples=40, deadline=None)
@given(
    sizes=st.dictionaries(st.text("abcdefgh", min_size=1, max_size=4), st.integers(1, 4), min_size=1, max_size=5),
    data=st.data(),
)
def test_flattening_concatenates_the_selected_keys_in_order(sizes: dict[str, int], data) -> None:
    space = spaces.Dict({k: spaces.Box(-1, 1, (n,)) for k, n in sizes.items()})
    order = data.draw(st.permutations(list(sizes)))
    keys = order[: data.draw(st.integers(1, len(order)))]
    obs = {k: np.arange(n, dtype=np.float64) + 10 * i for i, (k, n) in enumerate(sizes.items())}
    state = state_layout(space, keys).flatten(obs)
    np.testing.assert_array_equal(state, np.concatenate([obs[k] for k in keys]).astype(np.float32))
    assert state.dtype == np.float32
    everything = state_layout(space, None).flatten(obs)
    np.testing.assert_array_equal(everything, np.concatenate([obs[k] for k in space.spaces]).astype(np.float32))


def test_frames_are_chw_at_the_configured_size() -> None:
    image = np.zeros((40, 60, 3), np.uint8)
    image[:, :30, 0] = 255
    chw = to_chw(image, width=30, height=20)
    assert chw.shape == (3, 20, 30) and chw.dtype == np.uint8
    assert chw[0, :, :14].min() == 255 and chw[0, :, 16:].max() == 0


# --- success, three ways (pure) --------------------------------------------------------------------
def test_success_rules() -> None:
    assert success_now("is_success", {"is_success": True}, False, False, -5.0, None)
    assert not success_now("is_success", {"is_success": False}, True, False, 99.0, 0.0)
    # return: judged when the episode ends (a running, negative return would cross early)
    assert not success_now("return", {}, False, False, -10.0, -100.0)
    assert success_now("return", {}, False, True, -10.0, -100.0)
    assert not success_now("return", {}, True, False, -200.0, -100.0)
    # termination: reaching the goal, not a time limit
    assert success_now("termination", {}, True, False, 0.0, None)
    assert not success_now("termination", {}, False, True, 0.0, None)
    # auto: is_success when reported, else the threshold, else termination
    assert not success_now("auto", {"is_success": False}, True, False, 10.0, 0.0)
    assert success_now("auto", {}, False, True, 10.0, 0.0)
    assert success_now("auto", {}, True, False, 0.0, None)
    assert not success_now("auto", {}, False, True, 0.0, None)


# --- lockstep on each suite -----------------------------------------------------------------------
@pytest.mark.parametrize("env_id", SUITES)
def test_lockstep_matches_the_env_stepped_directly(env_id: str) -> None:
    robot = GymRobot(env_id=env_id, realtime=False)
    try:
        assert isinstance(robot, Robot)
        env = make_env(env_id)
        spec = robot.spec
        assert spec.hz == pytest.approx(1.0 / env.unwrapped.dt)
        assert spec.action_dim == env.action_space.shape[0]
        np.testing.assert_array_equal(spec.lower, env.action_space.low)
        np.testing.assert_array_equal(spec.upper, env.action_space.high)
        np.testing.assert_array_equal(spec.home, np.clip(0.0, env.action_space.low, env.action_space.high))
        assert spec.joint_names == tuple(f"a{i}" for i in range(spec.action_dim))
        assert not spec.command_in_state
        env.close()
        # 6 steps: InvertedPendulum's pole falls (the env terminates and the robot holds) at the 7th
        states = run_lockstep(robot, seed=7, steps=6)
        expected = direct_states(env_id, 7, [pulse(k, spec.action_dim) for k in range(6)])
        np.testing.assert_allclose(np.array(states), np.array(expected), rtol=1e-6, atol=1e-7)
        assert len({s.tobytes() for s in states}) == len(states)  # every send stepped the env once
        info = robot.read().info
        assert info["step"] == 6 and not info["terminated"] and not info["truncated"]
    finally:
        robot.close()


def test_state_keys_select_and_order_a_dict_observation() -> None:
    robot = GymRobot(env_id="dm_control/cartpole-swingup-v0", realtime=False, state_keys=["velocity", "position"])
    try:
        assert robot.spec.state_dim == 5
        states = run_lockstep(robot, seed=1, steps=3)
        expected = direct_states(
            "dm_control/cartpole-swingup-v0", 1, [pulse(k, 1) for k in range(3)], keys=["velocity", "position"]
        )
        np.testing.assert_allclose(np.array(states), np.array(expected), rtol=1e-6)
    finally:
        robot.close()


# --- action noise ------------------------------------------------------------------------------------
def test_action_noise_is_seeded_and_zero_std_is_none() -> None:
    noisy = GymRobot(env_id="Pendulum-v1", realtime=False, action_noise_std=0.5)
    clean = GymRobot(env_id="Pendulum-v1", realtime=False, action_noise_std=0.0)
    try:
        first = run_lockstep(noisy, seed=3, steps=20)
        again = run_lockstep(noisy, seed=3, steps=20)
        other = run_lockstep(noisy, seed=4, steps=20)
        np.testing.assert_array_equal(np.array(first), np.array(again))  # same seed -> same trajectory
        plain = run_lockstep(clean, seed=3, steps=20)
        expected = direct_states("Pendulum-v1", 3, [pulse(k, 1) for k in range(20)])
        np.testing.assert_allclose(np.array(plain), np.array(expected), rtol=1e-6)  # std 0: the commands as sent
        assert not np.allclose(np.array(first), np.array(plain), atol=1e-3)  # the noise moved the pendulum
        # a new seed resets the env differently and draws other noise
        assert not np.allclose(np.array(first), np.array(other), atol=1e-3)
    finally:
        noisy.close()
        clean.close()


# --- success and holding after the end ----------------------------------------------------------------
def _register_upright() -> None:
    """A Gymnasium env that reports ``info["is_success"]``: Pendulum-v1 with the pole within 0.5 rad of
    upright (registered through Gymnasium's own API and wrapper)."""
    if UPRIGHT_ID in gymnasium.registry:
        return

    class Upright(gymnasium.Wrapper):
        def step(self, action):
            obs, reward, terminated, truncated, info = self.env.step(action)
            info = dict(info, is_success=bool(obs[0] > np.cos(0.5)))
            return obs, reward, terminated, truncated, info

    gymnasium.register(UPRIGHT_ID, entry_point=lambda **kw: Upright(gymnasium.make("Pendulum-v1", **kw)))


def test_success_from_is_success() -> None:
    _register_upright()
    robot = GymRobot(env_id=UPRIGHT_ID, realtime=False)
    try:
        robot.home(0)
        for _ in range(5):
            robot.send(np.zeros(1))
        obs = robot.read()
        env_upright = obs.state[0] > np.cos(0.5)
        assert obs.info["success"] == env_upright  # seed 0 starts hanging: not yet
        assert not obs.info["success"]
    finally:
        robot.close()
    # upright from the start: the env's own report says so
    upright = GymRobot(env_id=UPRIGHT_ID, realtime=False)
    try:
        for seed in range(200):
            upright.home(seed)
            upright.send(np.zeros(1))
            if upright.read().state[0] > np.cos(0.5):
                break
        assert upright.read().info["success"]
    finally:
        upright.close()


def test_success_by_return_is_judged_when_the_episode_ends() -> None:
    robot = GymRobot(env_id="Pendulum-v1", realtime=False, success_return=-1e9)  # any ended episode succeeds
    try:
        robot.home(0)
        for k in range(199):
            robot.send(pulse(k, 1))
        assert not robot.read().info["success"] and not robot.read().info["truncated"]
        robot.send(pulse(199, 1))  # Pendulum-v1's time limit: 200 steps
        info = robot.read().info
        assert info["truncated"] and info["success"]
        strict = GymRobot(env_id="Pendulum-v1", realtime=False, success_return=0.0)  # a return Pendulum never reaches
        strict.home(0)
        for k in range(200):
            strict.send(pulse(k, 1))
        assert strict.read().info["truncated"] and not strict.read().info["success"]
        strict.close()
    finally:
        robot.close()


def test_termination_success_and_holding_after_the_end() -> None:
    """InvertedPendulum-v5 terminates when the pole falls. ``auto`` judges it by the registered return
    threshold (950: a fall is a failure); ``termination`` counts the termination itself. Either way the
    finished env is not stepped again."""
    for mode, succeeded in (("auto", False), ("termination", True)):
        robot = GymRobot(env_id="InvertedPendulum-v5", realtime=False, success=mode)
        try:
            robot.home(0)
            for _ in range(200):
                robot.send(np.array([3.0]))  # full push: the pole falls within a few dozen steps
                if robot.read().info["terminated"]:
                    break
            end = robot.read()
            assert end.info["terminated"] and end.info["success"] is succeeded
            for _ in range(5):
                robot.send(np.array([-3.0]))
            held = robot.read()
            np.testing.assert_array_equal(held.state, end.state)
            assert held.info["step"] == end.info["step"] and held.info["terminated"]
            robot.home(1)  # a new episode steps again
            robot.send(np.array([1.0]))
            assert robot.read().info["step"] == 1 and not robot.read().info["terminated"]
        finally:
            robot.close()


def test_an_episode_starts_the_safety_filter_at_the_holding_command(tmp_path: Path) -> None:
    """A torque's "current value" is not in the state: the control step anchors the safety filter (and
    so every held tick) at the robot's home_action, not at state[:action_dim] (Pendulum's cos angle)."""
    from algorithms.step import ControlStep
    from robots.history import ObservationHistory
    from robots.safety import SafetyFilter
    from services.telemetry import Telemetry

    robot = GymRobot(env_id="Pendulum-v1", realtime=False, home_action=[0.5])
    telemetry = Telemetry(tmp_path)
    try:
        step = ControlStep(robot, SafetyFilter(robot.spec), ObservationHistory(1, 1, 1), telemetry)
        obs = step.begin_episode(0, seed=4)
        assert abs(obs.state[0] - 0.5) > 0.1
        np.testing.assert_array_equal(step.safety.hold(), [0.5])
    finally:
        telemetry.close()
        robot.close()


def test_non_finite_or_misshaped_sends_are_refused() -> None:
    robot = GymRobot(env_id="Pendulum-v1", realtime=False)
    try:
        before = robot.read()
        for bad in (np.array([np.nan]), np.array([np.inf]), np.zeros(2)):
            with pytest.raises(ValueError):
                robot.send(bad)
        np.testing.assert_array_equal(robot.read().state, before.state)
        assert robot.read().info["step"] == 0
    finally:
        robot.close()


# --- cameras ------------------------------------------------------------------------------------------------
def gym_cameras(source: str = "render", w: int = 64, h: int = 48) -> dict:
    return {"image": partial(GymCamera, frames=FrameSpec("image", w, h, 0.5), source=source)}


def test_lockstep_frames_from_render() -> None:
    robot = GymRobot(env_id="Pendulum-v1", realtime=False, cameras=gym_cameras())
    try:
        robot.home(2)
        first = robot.read().images["image"]
        for k in range(10):
            robot.send(np.array([2.0]))
        later = robot.read().images["image"]
        assert robot.spec.camera_names == ("image",)
        assert first.image.shape == (3, 48, 64) and first.image.dtype == np.uint8
        assert first.image.std() > 0 and not np.array_equal(first.image, later.image)  # the pendulum moved
        assert robot.cameras["image"].read().index == later.index
    finally:
        robot.close()


def test_no_cameras_needs_no_rendering() -> None:
    robot = GymRobot(env_id="InvertedPendulum-v5", realtime=False)
    try:
        assert robot.read().images == {} and robot.spec.camera_names == ()
        assert robot.config.render_mode is None
    finally:
        robot.close()


# --- real time -------------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "env_id,cams,push",
    [("Pendulum-v1", True, 0.9), ("InvertedPendulum-v5", True, 0.0), ("dm_control/cartpole-swingup-v0", False, 0.9)],
    ids=["classic-render", "mujoco-render", "dm_control"],
)
def test_realtime_env_process_steps_and_homes(env_id: str, cams: bool, push: float) -> None:
    robot = GymRobot(
        env_id=env_id, realtime=True, cameras=gym_cameras() if cams else None, start_timeout_s=60, max_state_age_s=5.0
    )
    try:
        robot.start()
        assert robot.in_process
        robot.home(5)
        first = robot.read()
        robot.send(np.full(robot.spec.action_dim, push))
        deadline = time.monotonic() + 30
        while robot.read().info["step"] < 5 and time.monotonic() < deadline:  # conditions, not rates
            time.sleep(0.02)
        later = robot.read()
        assert later.info["step"] >= 5 and later.info["episode"] == first.info["episode"]
        assert later.timestamp > first.timestamp
        assert not np.array_equal(later.state, first.state)
        if cams:
            assert later.images["image"].image.shape == (3, 48, 64)
            assert later.images["image"].capture_time == later.timestamp  # rendered with that state
        robot.home(6)
        assert robot.read().info["episode"] == first.info["episode"] + 1  # the process reset the env
    finally:
        robot.close()
    assert robot._proc is None and robot._block is None
    assert robot.stats["ticks"] >= 5
    time.sleep(0.05)
    robot.max_state_age_s = 0.01
    with pytest.raises(StaleDataError):  # stopped: the last state ages
        robot.read()


def test_realtime_episode_is_the_lockstep_episode_for_the_same_seed() -> None:
    """The env process resets with the episode seed and holds the home command, as lockstep does: its
    state after n steps is lockstep's after n sends of the home action."""
    lock = GymRobot(env_id="Pendulum-v1", realtime=False)
    rt = GymRobot(env_id="Pendulum-v1", realtime=True, start_timeout_s=60, max_state_age_s=5.0)
    try:
        rt.start()
        rt.home(11)
        obs = rt.read()
        lock.home(11)
        for _ in range(obs.info["step"]):
            lock.send(lock.spec.home)
        np.testing.assert_allclose(obs.state, lock.read().state, rtol=1e-6)
    finally:
        lock.close()
        rt.close()


# --- start-time refusals beyond the corpus ------------------------------------------------------------------------
def test_dm_control_without_shimmy_names_the_extra(monkeypatch) -> None:
    monkeypatch.setattr(gym_robot_module, "_FACTS", {})
    monkeypatch.setitem(sys.modules, "shimmy", None)  # as if the gym extra were not installed
    with pytest.raises(ConfigError, match=r"^robot\.env_id: .*shimmy is not installed.*gym"):
        GymRobot.complete_config({"env_id": "dm_control/pendulum-swingup-v0"}, None)


def test_complete_config_fills_what_the_env_decides() -> None:
    filled = GymRobot.complete_config(
        {
            "env_id": "dm_control/pendulum-swingup-v0",
            "hz": None,
            "action_dim": None,
            "state_dim": None,
            "home_action": None,
        },
        None,
    )
    assert filled == {"hz": pytest.approx(50.0), "action_dim": 1, "state_dim": 3, "home_action": [0.0]}
    assert GymRobot.complete_config({"env_id": "Pendulum-v1", "hz": 20, "action_dim": 1}, None) == {
        "state_dim": 3,
        "home_action": [0.0],
    }
    with pytest.raises(ConfigError, match=r"^robot\.state_keys: .*'speed'"):
        GymRobot.complete_config({"env_id": "dm_control/cartpole-swingup-v0", "state_keys": ["speed"]}, None)


# --- the app, end to end ---------------------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.parametrize("mode", ["lockstep", "realtime"])
def test_app_runs_a_gym_robot_with_the_hold_policy(mode: str, tmp_path: Path) -> None:
    args = [
        "robot=gym",
        "robot.env_id=Pendulum-v1",
        "policy=hold",
        "episodes=2",
        "max_steps=30",
        "report=false",
        "logger=none",
        f"hydra.run.dir={tmp_path}",
    ]
    if mode == "lockstep":
        args += ["algorithm=lockstep_eval", "algorithm.methods=[naive]", "algorithm.delays_ticks=[1]"]
    proc = subprocess.run(
        [sys.executable, "scripts/netns.py", "--", sys.executable, "-m", "inference", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == 60
    resolved = (tmp_path / "config_resolved.yaml").read_text()
    assert "hz: 20.0" in resolved and "hold_action:\n  - 0.0" in resolved  # filled from the env
    trajectory = np.load(tmp_path / "trajectory.npz")
    np.testing.assert_array_equal(trajectory["command"], 0.0)  # hold = the home action (zero torque)
    first = trajectory["episode"] == trajectory["episode"][0]
    assert np.ptp(trajectory["state"][first][:, 2]) > 0.1  # the pendulum swung: the env was stepped


def test_making_a_dm_control_env_leaves_the_root_logger_as_it_was() -> None:
    """dm_control adds a bare stderr handler to the root logger the first time an env is made; kept, it
    would print every start-up line on the quiet console and, under pytest, write to a closed capture
    stream in a later test. A fresh interpreter, since only the first make adds it."""
    code = (
        "import logging\n"
        "from robots.gym.suites import make_env\n"
        "make_env('dm_control/cartpole-swingup-v0')\n"
        "print(len(logging.getLogger().handlers), logging.getLogger().level)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["0", str(30)]  # no handler, WARNING (the root logger's default level)
