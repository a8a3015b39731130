"""The delay-sensitive sim task ``transfer_cube_shift`` and its multi-strategy expert, on the real
MuJoCo scene (lockstep, and the physics process in real time)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from policies.base import PolicyInput
from robots.sim import SimRobot, aloha
from tasks.transfer_cube.expert import ScriptedTransferCube

TASK = "transfer_cube_shift"
OFFSETS = (-0.08, 0.08)  # conf/train/flow_shift.yaml
EPISODE_TICKS = 220


def run_expert(robot: SimRobot, expert: ScriptedTransferCube, seed: int, react_after: int | None = 0) -> bool:
    """One lockstep episode, one expert action per tick. ``react_after`` ticks after the shift the
    expert learns of it (None: never; it keeps acting on the start pose)."""
    robot.home(seed)
    obs = robot.read()
    for _ in range(EPISODE_TICKS):
        info = obs.info
        if react_after is None or info["step"] < info["shift_tick"] + react_after:
            info = dict(info, shift_tick=-1)
        robot.send(expert.predict(PolicyInput(state=obs.state[None], info=info))[0])
        obs = robot.read()
        if obs.info["success"]:
            return True
    return False


def test_the_cube_jumps_once_at_the_drawn_tick_in_lockstep() -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    rng_ticks = []
    for seed in range(6):
        robot.home(seed)
        info = robot.read().info
        tick, moved, start = info["shift_tick"], info["cube_shift_pose"], info["cube_init_pose"]
        shift = aloha.TASKS[TASK]
        assert round(shift.first_s * 20) <= tick <= round(shift.last_s * 20)
        assert np.linalg.norm(moved[:2] - start[:2]) >= shift.min_distance_m
        assert aloha.CUBE_X_RANGE[0] <= moved[0] <= aloha.CUBE_X_RANGE[1]
        assert aloha.CUBE_Y_RANGE[0] <= moved[1] <= aloha.CUBE_Y_RANGE[1]
        rng_ticks.append(tick)
        for _ in range(tick - 1):
            robot.send(robot.spec.home)
        before = robot.read().info["cube_pose"]
        np.testing.assert_allclose(before[:2], start[:2], atol=2e-3)
        robot.send(robot.spec.home)
        after = robot.read().info
        assert after["step"] == tick
        np.testing.assert_allclose(after["cube_pose"][:3], moved[:3], atol=2e-3)
        for _ in range(10):  # it stays there (at rest on the table)
            robot.send(robot.spec.home)
        np.testing.assert_allclose(robot.read().info["cube_pose"][:2], moved[:2], atol=2e-3)
    assert len(set(rng_ticks)) > 1  # the moment is drawn per episode


def test_the_plain_task_has_no_shift_and_an_unknown_task_is_refused() -> None:
    robot = SimRobot(cameras={}, realtime=False)
    robot.home(0)
    assert robot.read().info["shift_tick"] == -1
    with pytest.raises(ValueError, match="unknown sim task"):
        SimRobot(cameras={}, realtime=False, task="transfer_cube_teleport")


def test_the_physics_process_moves_the_cube_too() -> None:
    robot = SimRobot(cameras={}, realtime=True, task=TASK, max_state_age_s=5.0)
    robot.home(3)
    robot.start()
    try:
        info = robot.read().info
        assert info["shift_tick"] > 0 and info["cube_shift_pose"] is not None
        deadline = time.monotonic() + 120.0  # a condition with a generous deadline (a loaded host is slow)
        while robot.read().info["step"] <= info["shift_tick"] + 2:
            assert time.monotonic() < deadline, "physics did not reach the shift tick"
            time.sleep(0.02)
        now = robot.read().info
        np.testing.assert_allclose(now["cube_pose"][:2], info["cube_shift_pose"][:2], atol=2e-3)
        assert now["shift_tick"] == info["shift_tick"]
    finally:
        robot.stop()


def test_expert_succeeds_and_acting_on_the_stale_pose_fails() -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    expert = ScriptedTransferCube(approach_offsets_m=OFFSETS)
    seeds = range(20)
    informed = [run_expert(robot, expert, s) for s in seeds]
    blind = [run_expert(robot, expert, s, react_after=None) for s in seeds]
    assert sum(informed) >= 19, informed  # the task's target: >= 95%
    assert sum(blind) <= 2, blind  # the stale observation reaches for an empty table


def test_expert_strategies_differ_and_are_reproducible() -> None:
    expert = ScriptedTransferCube(approach_offsets_m=OFFSETS)
    rng = np.random.default_rng(0)
    poses = [aloha.sample_cube_pose(rng) for _ in range(40)]
    picks = [expert.approach_for(p) for p in poses]
    assert set(picks) == set(OFFSETS) and 10 <= picks.count(OFFSETS[0]) <= 30
    assert [ScriptedTransferCube(approach_offsets_m=OFFSETS).approach_for(p) for p in poses] == picks
    # the two strategies are two different motions to the same grasp
    a, b = (expert.plan(poses[0], approach_x=x) for x in OFFSETS)
    pre_grasp = int(round(90 * 0.02 * 20))
    assert np.abs(a[pre_grasp, 7:13] - b[pre_grasp, 7:13]).max() > 0.2
    grasp = int(round(170 * 0.02 * 20))
    assert np.abs(a[grasp, 7:13] - b[grasp, 7:13]).max() < 0.05
    assert ScriptedTransferCube().approach_for(poses[0]) == 0.0  # one strategy: deterministic as before


def test_replanned_plan_keeps_the_past_blends_and_stays_within_limits() -> None:
    expert = ScriptedTransferCube(approach_offsets_m=OFFSETS, replan_s=0.5)
    rng = np.random.default_rng(1)
    start, moved = aloha.sample_cube_pose(rng), aloha.sample_cube_pose(rng)
    before, after = expert.plan(start), expert.plan(moved)
    tau = 20
    plan = expert.replanned(before, after, tau, 20.0)
    np.testing.assert_array_equal(plan[:tau], before[:tau])
    np.testing.assert_allclose(plan[tau + 10 :], after[tau:], atol=1e-5)  # 0.5 s late
    limit = np.full(14, np.deg2rad(5.0))
    limit[[6, 13]] = 0.1
    assert np.all(np.abs(np.diff(plan, axis=0)) <= limit + 1e-6)
    # predict switches plans at the shift tick, not before
    info = {"cube_init_pose": start, "cube_shift_pose": moved, "shift_tick": tau, "episode": 1, "hz": 20.0}
    for step, ref in ((tau - 1, before), (tau, plan), (tau + 5, plan)):
        chunk = expert.predict(PolicyInput(state=np.zeros((1, 14), np.float32), info=dict(info, step=step)))
        np.testing.assert_allclose(chunk[0], ref[step], atol=1e-6)


def test_demos_record_the_current_cube_and_a_late_reaction() -> None:
    from robots import gl

    gl.select_backend()
    from tasks.transfer_cube.demos import record_demos
    from tasks.transfer_cube.train import cube_xy_targets

    demos = record_demos(
        2, task=TASK, expert={"approach_offsets_m": list(OFFSETS)}, reaction_lag_max_ticks=12, sample_every=1
    )
    assert demos.cube_xy is not None and demos.cube_xy.shape == (len(demos.states), 2)
    # the aux target follows the cube: it jumps once per episode (and moves when carried)
    for e in np.unique(demos.episode):
        xy = demos.cube_xy[demos.episode == e]
        assert np.abs(np.diff(xy, axis=0)).max() > 0.04
    targets = cube_xy_targets(demos, 10_000)
    np.testing.assert_allclose(targets, (demos.cube_xy - [0.1, 0.5]) / 0.1, atol=1e-6)


# ------------------------------------------------------------------ the shipped policy and the study
SHIFT_CHECKPOINT = "policies/flow/checkpoints/transfer_cube_shift"


def test_the_shipped_shift_checkpoint_is_prefix_trained_on_the_task() -> None:
    import json

    from policies.flow.checkpoint import resolve_path

    ck = resolve_path(SHIFT_CHECKPOINT)
    config = json.loads((ck / "config.json").read_text())
    assert config["model"]["train_prefix_max"] >= 12  # covers the study's largest delay
    meta = config["meta"]
    assert meta["config"]["data"]["task"] == "transfer_cube_shift"
    assert len(meta["config"]["data"]["expert"]["approach_offsets_m"]) >= 2  # more than one strategy
    assert meta["data_s"] + meta["train_s"] <= 40 * 60  # the target: <= 40 min of CPU
    size = sum(p.stat().st_size for p in ck.iterdir())
    assert size <= 10e6, size  # the target: checkpoint <= 10 MB


@pytest.mark.slow
def test_rtc_study_experiment_runs_every_method_on_the_shift_task(tmp_path) -> None:
    import csv

    from inference.app import compose_run

    summary = compose_run(
        ["+experiment=rtc_study", "episodes=1", "algorithm.delays_ticks=[8]", "max_steps=40"], run_dir=tmp_path
    ).execute()
    rows = summary["table"]
    assert [r["method"] for r in rows] == [
        "sync",
        "naive",
        "blend",
        "rtc",
        "rtc_hard",
        "rtc_trained",
        "rtc_identity",
        "rtc_capped",
        "select",
        "select_hard",
    ]
    for r in rows:
        assert r["delay_ticks"] == 8 and r["episodes"] == 1 and r["inferences"] >= 2
        assert "time_to_success_s" in r  # nan: 40 ticks are too few to succeed
    assert [r["guidance"] for r in rows][-5:] == ["trained", "identity", "vjp", "select", "select"]
    assert rows[-1]["schedule"] == "zeros" and rows[-2]["schedule"] == "exp"  # select_hard: the hard mask
    written = list(csv.DictReader((tmp_path / "rtc_study.csv").open()))
    assert {"method", "delay_ticks", "episodes", "success_rate", "discontinuity_mean"} <= set(written[0])


@pytest.mark.slow
def test_the_shift_task_runs_in_real_time_with_training_time_rtc(tmp_path) -> None:
    import csv

    from inference.app import compose_run

    summary = compose_run(
        [
            "+experiment=shift_task",
            "algorithm.guidance=trained",
            "episodes=1",
            "max_steps=60",
            "report=false",
            "algorithm.max_chunk_jump=null",
            "algorithm.stop_on_success=false",
        ],
        run_dir=tmp_path,
    ).execute()
    assert summary.get("fault") is None and summary["ticks"] >= 60
    assert summary["guidance"] == "trained" and summary["execute_horizon"] == 12
    rows = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert sum(r["guidance"] == "trained" for r in rows) >= 2
