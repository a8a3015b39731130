"""The gym control tasks (tasks/gym_control): the swing-up experts on the real Gymnasium /
dm_control envs, their demonstrations, the state-only flow recipe and the bundled checkpoints."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("gymnasium")
pytest.importorskip("shimmy")

from policies.base import PolicyInput  # noqa: E402
from policies.flow.checkpoint import resolve_path  # noqa: E402
from tasks.gym_control.demos import record_demos  # noqa: E402
from tasks.gym_control.experts import episode_direction, make_expert  # noqa: E402
from tasks.gym_control.rollout import run_episode  # noqa: E402
from tasks.gym_control.tasks import TASKS, flatten_observation, get_task, make_env  # noqa: E402

TASK_NAMES = sorted(TASKS)
CHECKPOINTS = [f"gym_{t}{v}" for t in TASK_NAMES for v in ("", "_prefix", "_early", "_continuation")]


@pytest.mark.parametrize("name", TASK_NAMES)
def test_expert_succeeds_under_action_noise(name: str) -> None:
    task = get_task(name)
    expert = make_expert(name)
    env = make_env(task)
    try:
        for seed in range(3):
            expert.reset(seed)
            ep = run_episode(task, expert.chunk, seed, env=env)
            assert ep.ticks == 200
            assert ep.success, (name, seed, ep.episode_return)
    finally:
        env.close()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_both_kick_directions_succeed_from_the_same_start(name: str) -> None:
    """The expert is multimodal: from one start it can swing up either way, and both ways work."""
    task = get_task(name)
    firsts = []
    for direction in (1.0, -1.0):
        expert = make_expert(name, direction=direction)
        expert.reset(5)
        env = make_env(task)
        obs, _ = env.reset(seed=5)
        firsts.append(float(expert.chunk(flatten_observation(obs, env.observation_space))[0, 0]))
        env.close()
        expert.reset(5)
        assert run_episode(task, expert.chunk, 5).success, (name, direction)
    assert firsts[0] > 0 > firsts[1]


def test_episode_direction_draws_both_ways_from_the_seed() -> None:
    draws = [episode_direction(s) for s in range(40)]
    assert set(draws) == {1.0, -1.0}
    assert draws == [episode_direction(s) for s in range(40)]  # a function of the seed
    expert = make_expert("pendulum")
    expert.reset(3)
    assert expert.direction == episode_direction(3)


@pytest.mark.parametrize("name", TASK_NAMES)
def test_plan_is_what_the_expert_then_does(name: str) -> None:
    """Without noise, the chunk planned at tick t continues as the chunk planned at t + 1: the
    rollout model is the env's own dynamics, so the labels are plans the expert carries out."""
    task = get_task(name)
    expert = make_expert(name)
    expert.reset(2)
    env = make_env(task)
    obs, _ = env.reset(seed=2)
    prev = None
    for _ in range(60):
        chunk = expert.chunk(flatten_observation(obs, env.observation_space))
        assert chunk.shape == (8, 1)
        assert np.all(chunk >= env.action_space.low) and np.all(chunk <= env.action_space.high)
        if prev is not None:
            np.testing.assert_allclose(chunk[:-1], prev[1:], atol=1e-3)
        prev = chunk
        obs, *_ = env.step(chunk[0].astype(env.action_space.dtype))
    env.close()


@pytest.mark.parametrize("name", TASK_NAMES)
def test_demos_shapes_and_round_trip(name: str, tmp_path) -> None:
    from tasks.transfer_cube.demos import Demos

    demos = record_demos(name, episodes=2, seed_offset=500, chunk_size=8)
    state_dim = {"pendulum": 3, "cartpole_swingup": 5}[name]
    n = len(demos.states)
    assert n == 400 and demos.states.shape == (n, state_dim) and demos.actions.shape == (n, 8, 1)
    assert demos.images.shape[:2] == (n, 0) and demos.camera_names == ()
    assert sorted(set(demos.episode.tolist())) == [0, 1]
    assert demos.step.tolist()[:3] == [0, 1, 2]
    assert (demos.successes, demos.attempts) == (2, 2)
    assert np.all(np.isfinite(demos.actions)) and np.all(np.isfinite(demos.states))
    demos.save(tmp_path / "d.npz")
    back = Demos.load(tmp_path / "d.npz")
    np.testing.assert_array_equal(back.actions, demos.actions)
    np.testing.assert_array_equal(back.states, demos.states)


@settings(max_examples=30, deadline=None)
@given(st.lists(st.floats(-5, 5, allow_nan=False), min_size=5, max_size=5))
def test_dict_observation_flattens_in_space_order(values: list[float]) -> None:
    import gymnasium as gym

    space = gym.spaces.Dict({"velocity": gym.spaces.Box(-9, 9, (2,)), "position": gym.spaces.Box(-9, 9, (3,))})
    obs = {"position": np.array(values[:3]), "velocity": np.array(values[3:])}
    keys = list(space.spaces)
    expected = np.concatenate([obs[k] for k in keys]).astype(np.float32)
    np.testing.assert_array_equal(flatten_observation(obs, space), expected)
    np.testing.assert_array_equal(flatten_observation(np.array(values), space), np.float32(values))


def test_state_only_recipe_trains_and_writes_control_hz(tmp_path) -> None:
    """The bundled recipe with a gym task's demos: a state-only model, the early checkpoint, control_hz."""
    pytest.importorskip("lightning_fabric")
    from omegaconf import OmegaConf

    from policies.flow.checkpoint import load_model
    from tasks.transfer_cube.train import train

    cfg = OmegaConf.load(resolve_path("conf/train/gym_pendulum.yaml"))
    cfg.pop("hydra")
    cfg.output_dir, cfg.early_output_dir = str(tmp_path / "final"), str(tmp_path / "early")
    cfg.optim.max_steps, cfg.optim.early_checkpoint_step, cfg.optim.batch_size = 6, 3, 8
    cfg.model.train_prefix_max, cfg.model.stale_prefix_prob = 3, 0.5
    out = train(cfg, record_demos("pendulum", episodes=1, chunk_size=8))
    for d in (out, tmp_path / "early"):
        model, meta = load_model(d)
        assert model.cfg.camera_names == () and (model.cfg.state_dim, model.cfg.action_dim) == (3, 1)
        assert not hasattr(model, "image_encoder")
        assert meta["control_hz"] == 20.0
    assert json.loads((out / "config.json").read_text())["meta"]["train_steps"] == 6
    assert load_model(tmp_path / "early")[1]["train_steps"] == 3


@pytest.mark.parametrize("checkpoint", CHECKPOINTS)
def test_bundled_checkpoint_gives_finite_chunks(checkpoint: str) -> None:
    from policies.flow.policy import FlowPolicy

    path = f"policies/flow/checkpoints/{checkpoint}"
    variant = next((v for v in ("_prefix", "_early", "_continuation") if checkpoint.endswith(v)), "")
    task = get_task(checkpoint.removeprefix("gym_").removesuffix(variant))
    meta = json.loads((resolve_path(path) / "config.json").read_text())["meta"]
    assert meta["control_hz"] == task.hz
    env = make_env(task)
    obs, _ = env.reset(seed=0)
    state = flatten_observation(obs, env.observation_space)
    env.close()
    policy = FlowPolicy(
        checkpoint=path, device="cpu", camera_names=[], chunk_size=8, action_dim=1, state_dim=len(state)
    )
    policy.warmup()
    inp = PolicyInput(state=state[None].astype(np.float32))
    chunk = policy.predict(inp)
    assert chunk.shape == (8, 1) and np.all(np.isfinite(chunk))
    guided = policy.guided_inference(inp, chunk, delay=2, execute_horizon=2)
    assert guided.shape == (8, 1) and np.all(np.isfinite(guided))
    assert policy.metadata.supports_trained == (variant in ("_prefix", "_continuation"))
    if policy.metadata.supports_trained:  # the committed actions are kept exactly
        trained = policy.guided_inference(inp, chunk, delay=2, execute_horizon=2, guidance="trained")
        np.testing.assert_allclose(trained[:2], chunk[:2], atol=1e-5)


@pytest.mark.parametrize(
    "name,env_id,env_kwargs,state_dim",
    [
        ("pendulum", "Pendulum-v1", {}, 3),
        ("cartpole_swingup", "dm_control/cartpole-swingup-v0", {"environment_kwargs": {"control_timestep": 0.05}}, 5),
    ],
)
def test_expert_policy_swings_up_on_the_gym_robot(name, env_id, env_kwargs, state_dim) -> None:
    """policy=gym_expert on robot=gym in lockstep, chunks of 8 executed 4 at a time, with the task's noise."""
    from robots.gym import GymRobot
    from tasks.gym_control.policy import GymExpertPolicy

    task = get_task(name)
    policy = GymExpertPolicy(task=name, chunk_size=8, action_dim=1, state_dim=state_dim, camera_names=[])
    assert policy.metadata.needs_privileged and policy.metadata.state_dim == state_dim
    robot = GymRobot(
        env_id=env_id,
        env_kwargs=env_kwargs,
        realtime=False,
        action_noise_std=task.action_noise_std,
        success="return",
        success_return=task.success_return,
    )
    try:
        firsts = []
        for seed in (0, 1, 2, 3):
            robot.home(seed)
            obs = robot.read()
            first = None
            while not (obs.info["terminated"] or obs.info["truncated"]):
                chunk = policy.predict(PolicyInput(state=obs.state[None], info=obs.info))
                assert chunk.shape == (8, 1)
                first = float(chunk[0, 0]) if first is None else first
                for action in chunk[:4]:
                    robot.send(action)
                    obs = robot.read()
            firsts.append(first)
            assert obs.info["success"], (name, seed, obs.info["episode_return"])
        if name == "cartpole_swingup":  # starts at rest: the first command is the kick, and both ways occur
            assert {np.sign(f) for f in firsts} == {1.0, -1.0}
    finally:
        robot.stop()
