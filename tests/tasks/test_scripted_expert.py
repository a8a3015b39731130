"""The scripted transfer-cube expert on the real MuJoCo sim (lockstep, no rendering)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from policies.base import Policy, PolicyInput
from policies.registry import POLICY_REGISTRY
from robots.sim import SimRobot, aloha
from tasks.transfer_cube.expert import ScriptedTransferCube

ROOT = Path(__file__).resolve().parents[2]
EXECUTE = 25  # actions executed from each chunk before asking again
EPISODE_TICKS = 180  # the plan lasts 161 ticks (8 s at 20 Hz); then it holds the last pose


def run_episode(robot: SimRobot, policy: ScriptedTransferCube, seed: int) -> dict:
    robot.home(seed)
    obs = robot.read()
    max_reward = 0
    while obs.info["step"] < EPISODE_TICKS:
        chunk = policy.predict(PolicyInput(state=obs.state[None], info=obs.info))
        for action in chunk[:EXECUTE]:
            robot.send(action)
            obs = robot.read()
            max_reward = max(max_reward, obs.info["reward"])
    return {"success": obs.info["success"], "max_reward": max_reward, "info": obs.info}


def test_policy_scripted_builds_it_without_the_registry(tmp_path: Path) -> None:
    """``policy=scripted`` names the class in its config: the app builds the expert, and the registry of
    policies/ (a layer below tasks/) does not know it."""
    from inference.app import compose_run

    policy = compose_run(["policy=scripted", "cameras=none"], tmp_path / "run").make_policy()
    assert isinstance(policy, ScriptedTransferCube) and isinstance(policy, Policy)
    assert "scripted" not in POLICY_REGISTRY.names()
    meta = policy.metadata
    assert (meta.chunk_size, meta.action_dim, meta.state_dim) == (50, 14, 14)
    assert meta.needs_privileged and not meta.supports_vjp
    assert meta.camera_names == () and meta.state_history == 1
    policy.warmup()
    policy.freeze()


def test_expert_transfers_the_cube() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    policy = ScriptedTransferCube(chunk_size=50)
    results = [run_episode(robot, policy, seed) for seed in range(10)]
    successes = sum(r["success"] for r in results)
    assert successes >= 9, [(r["success"], r["max_reward"]) for r in results]
    # Success means the left gripper holds the cube in the air.
    for r in results:
        if r["success"]:
            assert r["info"]["cube_pose"][2] > 0.1


def test_doing_nothing_is_no_success() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(0)
    for _ in range(40):
        robot.send(robot.spec.home)
    info = robot.read().info
    assert info["reward"] == 0 and not info["success"]


def test_plan_respects_robot_limits() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    spec = robot.spec
    policy = ScriptedTransferCube()
    for seed in range(5):
        plan = policy.plan(aloha.sample_cube_pose(np.random.default_rng(seed)), hz=spec.hz)
        assert plan.dtype == np.float32 and plan.shape[1] == 14
        assert len(plan) == 161
        np.testing.assert_allclose(plan[0], spec.home, atol=1e-6)
        assert np.all(np.abs(np.diff(plan, axis=0)) <= spec.max_delta + 1e-6)
        assert np.all(plan >= spec.lower - 1e-6) and np.all(plan <= spec.upper + 1e-6)


def test_predict_is_stateless_slicing_of_the_plan() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(7)
    for _ in range(30):
        robot.send(robot.spec.home)
    obs = robot.read()
    pin = PolicyInput(state=obs.state[None], info=obs.info)
    a = ScriptedTransferCube(chunk_size=50)
    b = ScriptedTransferCube(chunk_size=50)  # e.g. in another process: same answer
    chunk = a.predict(pin)
    assert chunk.shape == (50, 14) and chunk.dtype == np.float32
    np.testing.assert_array_equal(chunk, b.predict(pin))
    plan = a.plan(obs.info["cube_init_pose"], hz=obs.info["hz"])
    np.testing.assert_array_equal(chunk, plan[30:80])
    np.testing.assert_array_equal(
        a.guided_inference(pin, prev_chunk=np.zeros((50, 14)), delay=3, execute_horizon=25), chunk
    )
    # Past the plan's end the chunk is padded with the final pose.
    late = dict(obs.info, step=150)
    tail = a.predict(PolicyInput(state=obs.state[None], info=late))
    np.testing.assert_array_equal(tail[:11], plan[150:161])
    np.testing.assert_array_equal(tail[11:], np.repeat(plan[-1:], 39, axis=0))
    # A new episode (new cube) gets a new plan.
    robot.home(8)
    obs2 = robot.read()
    other = a.predict(PolicyInput(state=obs2.state[None], info=obs2.info))
    assert not np.array_equal(other, a.predict(PolicyInput(state=obs2.state[None], info=dict(obs.info, step=0))))


def test_needs_privileged_info() -> None:
    with pytest.raises(KeyError, match="cube_init_pose"):
        ScriptedTransferCube().predict(PolicyInput(state=np.zeros((1, 14), np.float32), info={"step": 0}))


def test_config_builds_the_expert() -> None:
    from hydra.utils import instantiate
    from omegaconf import OmegaConf

    cfg = OmegaConf.load(ROOT / "conf/policy/scripted.yaml")
    assert cfg.normalizer._target_ == "policies.normalize.Normalizer.identity"
    node = OmegaConf.masked_copy(cfg, [k for k in cfg if k != "normalizer"])
    policy = instantiate(node)()
    assert isinstance(policy, ScriptedTransferCube)
    assert policy.metadata.chunk_size == cfg.chunk_size
