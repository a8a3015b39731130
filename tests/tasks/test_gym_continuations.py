"""Exact continuations for training-time RTC on the gym tasks: the expert's plan after committed
actions (``SwingUpExpert.chunk_after``), the labels built from it
(``tasks.gym_control.continuations``), the flow loss that trains on them, and the expert policy
that uses them as the perfect-model ceiling of inpainting."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

pytest.importorskip("gymnasium")

from policies.base import PolicyInput  # noqa: E402
from policies.flow import FlowModel  # noqa: E402
from tasks.gym_control.continuations import continuation_labels  # noqa: E402
from tasks.gym_control.experts import make_expert  # noqa: E402
from tasks.gym_control.policy import GymExpertPolicy  # noqa: E402
from tasks.transfer_cube.demos import Demos  # noqa: E402
from tests.policies.test_flow_policy import CFG, H, synthetic_batch  # noqa: E402


def pendulum_state(th: float, thd: float) -> np.ndarray:
    return np.array([np.cos(th), np.sin(th), thd], np.float32)


@settings(max_examples=40)
@given(st.floats(-np.pi, np.pi), st.floats(-6.0, 6.0), st.integers(1, 7))
def test_the_experts_own_prefix_gives_back_its_own_plan(th: float, thd: float, d: int) -> None:
    """Committing the first d actions of the expert's own plan changes nothing: no noise, exact model."""
    expert = make_expert("pendulum")
    expert.phase.done = True  # past the opening kick
    plan = expert.chunk(pendulum_state(th, thd))
    expert.phase.done = True
    after = expert.chunk_after(pendulum_state(th, thd), plan[:d])
    np.testing.assert_allclose(after, plan, atol=1e-5)


def test_a_foreign_prefix_is_kept_and_the_rest_replanned_from_where_it_leads() -> None:
    expert = make_expert("pendulum")
    expert.phase.done = True
    state = pendulum_state(0.2, 0.0)  # near the top: the balance law
    committed = np.full((3, 1), 2.0, np.float32)  # full torque, against the law's correction
    after = expert.chunk_after(state, committed)
    np.testing.assert_array_equal(after[:3], committed)
    assert not np.allclose(after[3:], expert.chunk(state)[3:])  # re-planned, not the plain plan's tail
    q = np.array([0.2, 0.0])
    for u in committed[:, 0]:
        q = expert._step(q, float(u))
    expert.phase.done = True
    np.testing.assert_allclose(after[3], expert.chunk(pendulum_state(*q))[0], atol=1e-5)


def _pendulum_demos(ticks: int = 12) -> Demos:
    """One episode of the expert, every tick (labels its clean plans), with a push (+0.5 rad/s)
    after tick 5 so that chunks planned before it differ from the plans after it."""
    expert = make_expert("pendulum")
    expert.reset(10_000)
    q = np.array([0.3, 0.0])  # near the top: the balance law's actions are continuous, so a push shows
    expert.phase.done = True
    states, actions = [], []
    for t in range(ticks):
        s = pendulum_state(*q)
        plan = expert.chunk(s)
        states.append(s)
        actions.append(plan)
        q = expert._step(q, float(plan[0, 0])) + (np.array([0.0, 0.5]) if t == 5 else 0.0)
    n = len(states)
    return Demos(
        states=np.stack(states),
        images=np.zeros((n, 0, 3, 0, 0), np.uint8),
        actions=np.stack(actions),
        episode=np.zeros(n, np.int32),
        camera_names=(),
        successes=1,
        attempts=1,
        step=np.arange(n, dtype=np.int32),
    )


def test_continuation_labels_start_with_an_earlier_chunks_actions() -> None:
    demos = _pendulum_demos()
    labels = continuation_labels(demos, "pendulum", max_prefix=4, seed_offset=10_000, max_stale_ticks=4, seed=3)
    assert labels.shape == (len(demos.states), 5, H, 1) and labels.dtype == np.float32
    np.testing.assert_array_equal(labels[:, 0], demos.actions)  # entry 0: the own label
    np.testing.assert_array_equal(labels[0, 1:], np.repeat(demos.actions[:1], 4, axis=0))  # tick 0: nothing earlier
    across_the_kick = 0
    for i in range(1, len(demos.states)):
        for d in range(1, 5):
            # the first d actions are some earlier chunk's actions for ticks i..i+d-1
            ks = [
                k
                for k in range(1, min(4, H - d, i) + 1)
                if np.array_equal(labels[i, d, :d], demos.actions[i - k, k : k + d])
            ]
            assert ks, (i, d)
            if i > 5 and min(ks) > i - 6 and not np.allclose(labels[i, d, :d], demos.actions[i, :d]):
                # committed before the push after tick 5, planned after it: the rest is re-planned, not the own tail
                across_the_kick += 1
                assert not np.allclose(labels[i, d, d:], demos.actions[i, d:]), (i, d)
    assert across_the_kick > 0


def test_the_loss_on_continuation_labels_equal_to_the_plain_labels_is_the_plain_prefix_loss() -> None:
    cfg = dataclasses.replace(CFG, train_prefix_max=3)
    torch.manual_seed(0)
    model = FlowModel(cfg)
    state, images, actions = synthetic_batch(16, torch.Generator().manual_seed(1))
    plain = model.loss(state, images, actions, generator=torch.Generator().manual_seed(2))
    same = actions[:, None].expand(-1, 4, -1, -1).clone()
    cont = model.loss(state, images, actions, generator=torch.Generator().manual_seed(2), continuation_labels=same)
    assert float(cont.detach()) == pytest.approx(float(plain.detach()), rel=1e-6)
    other = same.clone()
    other[:, 1:] += 1.0  # every prefix length's labels differ from the plain ones
    moved = model.loss(state, images, actions, generator=torch.Generator().manual_seed(2), continuation_labels=other)
    assert float(moved.detach()) != pytest.approx(float(plain.detach()), rel=1e-3)


def test_the_expert_policy_inpaints_exactly_under_consistency_guidance() -> None:
    policy = GymExpertPolicy(task="pendulum")
    obs = PolicyInput(state=pendulum_state(0.3, 0.5), images={}, info={"episode": 0, "step": 40})
    committed = np.full((8, 1), -1.0, np.float32)
    naive = policy.guided_inference(obs, committed, delay=3, execute_horizon=3, guidance="none")
    guided = policy.guided_inference(obs, committed, delay=3, execute_horizon=3, guidance="vjp")
    np.testing.assert_array_equal(guided[:3], committed[:3])
    assert not np.allclose(naive[:3], committed[:3])
