"""Batched RTC inference (policies/batched.py): a request in a batch gets the chunk it gets alone.

Real flow checkpoints on the CPU; each request carries its own noise so the single and the batched
call see the same draw. Rows differ in observation, delay, horizon, previous chunk, guidance kind
and strength.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from policies.base import Guidance, PolicyInput, Schedule
from policies.batched import BatchRequest, batched_guided_sample, infer_batch, plan_batch
from policies.flow.policy import FlowPolicy
from policies.guidance import guided_euler_sample, identity_guided_euler_sample
from policies.runner import Guide, PolicyRunner

pytestmark = pytest.mark.timeout(240)
TOL = 2e-4  # float32 sums in a different order (batched matrix products)


@pytest.fixture(scope="module")
def policy() -> FlowPolicy:
    torch.set_num_threads(1)
    return FlowPolicy(device="cpu", num_steps=5)


@pytest.fixture(scope="module")
def prefix_policy() -> FlowPolicy:
    return FlowPolicy(checkpoint="policies/flow/checkpoints/transfer_cube_prefix", device="cpu", num_steps=5)


def _request(
    policy: FlowPolicy,
    rng: np.random.Generator,
    guidance: Guidance,
    d: int,
    s: int,
    beta: float = 5.0,
    schedule: Schedule = Schedule.EXP,
) -> BatchRequest:
    m = policy.metadata
    h, w = m.image_size
    inp = PolicyInput(
        state=rng.normal(size=(1, m.state_dim)).astype(np.float32),
        images={c: rng.uniform(size=(1, 3, h, w)).astype(np.float32) for c in m.camera_names},
    )
    prev = None if guidance == Guidance.NONE else rng.normal(size=(m.chunk_size - s, m.action_dim)).astype(np.float32)
    noise = rng.normal(size=(m.chunk_size, m.action_dim)).astype(np.float32)
    guide = None if prev is None else Guide(prev, d, s, guidance, schedule, beta)
    return BatchRequest(inp, guide, noise)


def _alone(policy: FlowPolicy, req: BatchRequest) -> np.ndarray:
    if req.kind == Guidance.NONE:
        return policy.predict(req.inp, noise=req.noise)
    g = req.guide
    return policy.guided_inference(
        req.inp,
        g.prev_model,
        g.delay_ticks,
        g.execute_horizon,
        guidance=g.guidance,
        schedule=g.schedule,
        max_guidance_weight=g.max_guidance_weight,
        noise=req.noise,
    )


def test_each_guided_request_in_a_mixed_batch_equals_the_request_alone(policy):
    rng = np.random.default_rng(0)
    reqs = [
        _request(policy, rng, Guidance.VJP, d=3, s=20),
        _request(policy, rng, Guidance.VJP, d=7, s=10, beta=2.0, schedule=Schedule.LINEAR),
        _request(policy, rng, Guidance.NONE, d=0, s=25),
        _request(policy, rng, Guidance.BLEND, d=5, s=25),
        _request(policy, rng, Guidance.VJP, d=0, s=25),
        _request(policy, rng, Guidance.IDENTITY, d=4, s=15),
    ]
    batch = policy.guided_inference_batch(reqs)
    assert len(batch) == len(reqs)
    for i, (req, got) in enumerate(zip(reqs, batch)):
        want = _alone(policy, req)
        assert got.shape == want.shape == (policy.metadata.chunk_size, policy.metadata.action_dim)
        np.testing.assert_allclose(got, want, atol=TOL, rtol=0, err_msg=f"row {i} ({req.kind}, {req.guide})")
    # the rows really differ (different observations, delays, previous chunks): no row copied another
    assert min(np.abs(batch[0] - batch[1]).max(), np.abs(batch[0] - batch[4]).max()) > 1e-2


def test_identity_and_vjp_rows_of_the_same_request_differ_only_by_the_jacobian(policy):
    """The same input, noise and prev as a VJP row and an identity row in one batch: each equals its
    own single-chunk sampler, and they differ (the model's Jacobian is not the identity)."""
    rng = np.random.default_rng(5)
    vjp = _request(policy, rng, Guidance.VJP, d=6, s=20)
    ident = BatchRequest(vjp.inp, dataclasses.replace(vjp.guide, guidance=Guidance.IDENTITY), vjp.noise)
    got_vjp, got_id = policy.guided_inference_batch([vjp, ident])
    np.testing.assert_allclose(got_vjp, _alone(policy, vjp), atol=TOL, rtol=0)
    np.testing.assert_allclose(got_id, _alone(policy, ident), atol=TOL, rtol=0)
    d = vjp.guide.delay_ticks
    assert np.abs(got_vjp[:d] - got_id[:d]).max() > 10 * TOL


def test_a_guided_row_is_not_the_unguided_chunk(policy):
    """The weights reach the VJP: the same input and noise, guided and unguided in one batch, differ
    on the guided prefix and agree within float tolerance on no index there."""
    rng = np.random.default_rng(1)
    req = _request(policy, rng, Guidance.VJP, d=8, s=20)
    plain = BatchRequest(req.inp, None, noise=req.noise)
    guided, unguided = policy.guided_inference_batch([req, plain])
    d = req.guide.delay_ticks
    assert np.abs(guided[:d] - unguided[:d]).max(axis=1).min() > 10 * TOL
    np.testing.assert_allclose(unguided, policy.predict(req.inp, noise=req.noise), atol=TOL, rtol=0)


def test_trained_prefix_rows_share_a_batch_with_vjp_rows(prefix_policy):
    rng = np.random.default_rng(2)
    reqs = [
        _request(prefix_policy, rng, Guidance.TRAINED, d=4, s=25),
        _request(prefix_policy, rng, Guidance.VJP, d=6, s=15),
        _request(prefix_policy, rng, Guidance.TRAINED, d=30, s=10),  # clipped to train_prefix_max
        _request(prefix_policy, rng, Guidance.NONE, d=0, s=25),
    ]
    batch = prefix_policy.guided_inference_batch(reqs)
    for i, (req, got) in enumerate(zip(reqs, batch)):
        np.testing.assert_allclose(got, _alone(prefix_policy, req), atol=TOL, rtol=0, err_msg=f"row {i}")
    np.testing.assert_array_equal(batch[0][:4], reqs[0].guide.prev_model[:4])  # the clean prefix is kept exactly


def test_trained_row_on_an_untrained_checkpoint_is_refused_by_name(policy):
    rng = np.random.default_rng(3)
    req = _request(policy, rng, Guidance.TRAINED, d=2, s=25)
    with pytest.raises(ValueError, match="batch row 0: guidance=trained"):
        plan_batch([req], 50, 14, train_prefix_max=0)


def test_batch_math_without_guided_rows_runs_no_reverse_pass():
    """All-zero weights: the batched sampler is plain Euler, and works under inference_mode."""
    calls = []

    def v(a, tau):
        calls.append(a.requires_grad)
        return -a

    noise = torch.randn(3, 6, 2)
    zeros = torch.zeros(3, 6)
    with torch.inference_mode():
        out = batched_guided_sample(
            v, noise, torch.zeros_like(noise), zeros, torch.zeros(3), torch.zeros(3, 6, dtype=torch.bool), 4
        )
    assert not any(calls)
    np.testing.assert_allclose(out.numpy(), (noise * 0.75**4).numpy(), rtol=1e-6)


def test_batch_math_matches_the_single_chunk_guidance_per_row():
    """Against ``policies.guidance.guided_euler_sample`` on a per-sample velocity field (no model):
    rows with different weights and strengths in one call."""
    torch.manual_seed(0)
    mix = torch.randn(2, 2)

    def v(a, tau):
        return torch.tanh(a @ mix) * (1.0 + tau)

    noise, prev = torch.randn(3, 8, 2), torch.randn(3, 8, 2)
    weights = torch.stack([torch.linspace(1, 0, 8), torch.zeros(8), torch.ones(8)])
    betas = torch.tensor([5.0, 5.0, 1.5])
    with torch.no_grad():
        out = batched_guided_sample(v, noise, prev, weights, betas, torch.zeros(3, 8, dtype=torch.bool), 6)
        for i in range(3):
            alone = guided_euler_sample(v, noise[i : i + 1], prev[i : i + 1], weights[i], 6, float(betas[i]))
            np.testing.assert_allclose(out[i].numpy(), alone[0].numpy(), atol=1e-6)


def test_batch_math_identity_rows_match_the_identity_sampler_without_a_reverse_pass():
    """Identity rows against ``policies.guidance.identity_guided_euler_sample``; a batch of identity
    and unguided rows only never asks for a gradient (it runs under inference_mode)."""
    torch.manual_seed(1)
    mix = torch.randn(2, 2)
    calls = []

    def v(a, tau):
        calls.append(a.requires_grad)
        return torch.tanh(a @ mix) * (1.0 + tau)

    noise, prev = torch.randn(3, 8, 2), torch.randn(3, 8, 2)
    weights = torch.stack([torch.linspace(1, 0, 8), torch.zeros(8), torch.ones(8)])
    betas = torch.tensor([5.0, 5.0, 1.5])
    with torch.inference_mode():
        out = batched_guided_sample(
            v,
            noise,
            prev,
            weights,
            betas,
            torch.zeros(3, 8, dtype=torch.bool),
            6,
            identity=torch.ones(3, dtype=torch.bool),
        )
        for i in range(3):
            alone = identity_guided_euler_sample(v, noise[i : i + 1], prev[i : i + 1], weights[i], 6, float(betas[i]))
            np.testing.assert_allclose(out[i].numpy(), alone[0].numpy(), atol=1e-6)
    assert calls and not any(calls)


class _Identity:
    def action_to_robot(self, chunk):
        return np.asarray(chunk) * 2.0


def _Runner(policy):  # noqa: N802 - a runner whose normalizer doubles the chunk, so the robot space shows
    return PolicyRunner(policy, _Identity())


def test_infer_batch_names_a_refused_row_and_serves_the_others(policy):
    rng = np.random.default_rng(4)
    good = _request(policy, rng, Guidance.VJP, d=3, s=25)
    bad = _request(policy, rng, Guidance.TRAINED, d=3, s=25)  # this checkpoint has no prefix training
    out = infer_batch(_Runner(policy), [good, bad])
    assert out[1].model is None and "does not support guidance=trained" in out[1].error
    assert out[0].error is None and out[0].batch_size == 1
    np.testing.assert_allclose(out[0].model, _alone(policy, good), atol=TOL, rtol=0)
    np.testing.assert_allclose(out[0].robot, 2.0 * out[0].model)


def test_infer_batch_runs_a_select_row_on_its_own_and_batches_the_others(policy, monkeypatch):
    """A ``select`` row samples its own K candidates as a batch: it is not planned into the shared
    batch (which has no such row kind) and the other rows still share one call."""
    rng = np.random.default_rng(5)
    vjp, plain = _request(policy, rng, Guidance.VJP, d=3, s=25), _request(policy, rng, Guidance.VJP, d=5, s=20)
    select = _request(policy, rng, Guidance.SELECT, d=3, s=25)
    with pytest.raises(ValueError, match="guidance=select samples a batch of candidates of its own"):
        plan_batch([select], policy.metadata.chunk_size, policy.metadata.action_dim, 0)
    calls = []
    batched = policy.guided_inference_batch
    monkeypatch.setattr(policy, "guided_inference_batch", lambda reqs: calls.append(len(reqs)) or batched(reqs))
    monkeypatch.setattr(policy, "select_samples", 4)
    out = infer_batch(_Runner(policy), [vjp, select, plain])
    assert calls == [2] and all(r.error is None for r in out), [r.error for r in out]
    np.testing.assert_allclose(out[0].model, _alone(policy, vjp), atol=TOL, rtol=0)
    np.testing.assert_allclose(out[2].model, _alone(policy, plain), atol=TOL, rtol=0)
    assert out[1].model.shape == (policy.metadata.chunk_size, policy.metadata.action_dim)
    assert np.isfinite(out[1].model).all()
