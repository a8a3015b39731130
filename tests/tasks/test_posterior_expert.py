"""The scripted expert's strategies on the sliding-cube task, and ``hidden_strategy: posterior``: the
expert acting as an ideally trained multimodal policy (it samples a strategy the arm's observed
motion has not ruled out, instead of reading the episode's draw), on the real MuJoCo scene."""

from __future__ import annotations

import numpy as np
import pytest

from policies.base import PolicyInput
from policies.guidance import coherence_costs, prefix_weights
from robots.sim import SimRobot
from tasks.transfer_cube.expert import DROP_S, ScriptedTransferCube

TASK = "transfer_cube_slide"
OFFSETS = (-0.06, 0.06)
HOVERS = (1.3, 1.5, 1.7, 1.9)
HZ = 20.0


def drawn(**kw) -> ScriptedTransferCube:
    return ScriptedTransferCube(approach_offsets_m=OFFSETS, hover_ends_s=HOVERS, **kw)


def observe(robot: SimRobot) -> PolicyInput:
    obs = robot.read()
    return PolicyInput(state=obs.state[None], info=obs.info)


def test_strategies_are_the_product_of_sides_and_hover_ends_indexed_by_the_draw() -> None:
    expert = drawn()
    assert expert.strategies() == [(x, h) for x in OFFSETS for h in HOVERS]
    picks = [expert.strategy_for(draw) for draw in (np.arange(8) + 0.5) / 8]
    assert picks == expert.strategies()  # a uniform draw picks each strategy with the same probability
    assert expert.approach_for(np.zeros(7), 0.99) == OFFSETS[1]
    # without hover ends the draw picks a side, as on the plain sliding task
    assert ScriptedTransferCube(approach_offsets_m=OFFSETS).strategy_for(0.2) == (OFFSETS[0], None)


def test_the_hover_hides_the_side_until_its_end_then_the_plans_part() -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    robot.home(0)
    info = robot.read().info
    expert = drawn()
    left, right = (
        expert.plan(info["cube_init_pose"], HZ, x, info["cube_velocity"], info["slide_until_s"], 1.5) for x in OFFSETS
    )
    end = int(round(1.5 * HZ))
    np.testing.assert_allclose(left[: end + 1], right[: end + 1], atol=1e-6)  # one path until the hover ends
    drop = end + int(round(DROP_S * HZ))
    assert np.abs(left[drop, 7:13] - right[drop, 7:13]).max() > 0.1  # beside the cube, on opposite sides


@pytest.mark.parametrize("seed", [0, 3])
def test_the_drawn_hovering_expert_transfers_the_sliding_cube(seed: int) -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    expert = drawn()
    robot.home(seed)
    for _ in range(200):
        obs = observe(robot)
        if obs.info["success"]:
            break
        robot.send(expert.predict(obs)[0])
    assert robot.read().info["success"], seed


def test_the_posterior_keeps_every_strategy_until_the_arm_shows_one() -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    robot.home(1)
    demonstrator, oracle = drawn(), drawn(hidden_strategy="posterior")
    obs = observe(robot)
    assert len(oracle.consistent_plans(obs)) == len(oracle.strategies())  # at home: nothing ruled out
    side, hover = demonstrator.strategy_for(obs.info["strategy_draw"])
    reveal = int(round((hover + DROP_S) * HZ))  # the demonstrator is beside the cube by then
    while obs.info["step"] < reveal:
        robot.send(demonstrator.predict(obs)[0])
        obs = observe(robot)
    truth = demonstrator._strategy_plan(obs.info, (side, hover))
    kept = oracle.consistent_plans(obs)
    assert len(kept) == 1 and np.array_equal(kept[0], truth)
    # predict follows it now; the same observation always gives the same chunk (seeded by episode and step)
    np.testing.assert_array_equal(oracle.predict(obs), truth[obs.info["step"] : obs.info["step"] + 50])


def test_posterior_samples_disagree_at_home_and_select_keeps_the_previous_strategy() -> None:
    robot = SimRobot(cameras={}, realtime=False, task=TASK)
    oracle = drawn(hidden_strategy="posterior")
    chunks = []
    for seed in range(8):  # the draw is seeded per episode and step: different episodes, different picks
        robot.home(seed)
        obs = observe(robot)
        chunks.append(tuple(np.round(oracle.predict(obs)[-1, 7:13], 4)))
    assert len(set(chunks)) >= 3
    robot.home(2)
    obs = observe(robot)
    candidates = np.stack([oracle._chunk(plan, 0) for plan in oracle.consistent_plans(obs)])
    weights = prefix_weights(50, 4, 12)
    overlap = 50 - 12  # the soft mask's region: strategies that part only after it tie, and either is kept
    for previous in candidates:  # whichever strategy the previous chunk had, select continues it
        chosen = oracle.guided_inference(obs, previous, 4, 12, "select", "exp")
        np.testing.assert_array_equal(chosen[:overlap], previous[:overlap])
        assert float(coherence_costs(chosen[None], previous, weights)[0]) == 0.0
    assert oracle.metadata.supports_select and not drawn().metadata.supports_select
    assert ScriptedTransferCube.supports_select_guidance({"hidden_strategy": "posterior"})
    assert not ScriptedTransferCube.supports_select_guidance({})


def test_a_bad_hidden_strategy_or_hover_end_is_refused() -> None:
    with pytest.raises(ValueError, match="hidden_strategy"):
        ScriptedTransferCube(hidden_strategy="oracle")
    with pytest.raises(ValueError, match="hover_ends_s"):
        ScriptedTransferCube(approach_offsets_m=OFFSETS, hover_ends_s=(0.5,))
    with pytest.raises(ValueError, match="hover_end_s"):
        drawn().plan(np.array([0.1, 0.5, 0.05, 1, 0, 0, 0]), HZ, 0.06, np.array([-0.03, 0, 0]), 2.6, 2.7)
