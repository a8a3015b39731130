"""Bidirectional decoding (``guidance: bid``): the scoring as a pure function (policies/guidance.py,
hypothesis properties that a wrong distance, sign, mean or mask would break) and the flow policy's
bid inference with a real weak checkpoint (policies/flow/bid.py).

The flow tests train a tiny model on a synthetic task (the chunk is a ramp read from the state plus
an unobservable whole-chunk offset: several modes) and keep the checkpoint of step 10 as the weak
one, an earlier checkpoint of the same run as the method prescribes.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from policies.base import PolicyInput
from policies.flow import FlowModel, FlowModelConfig, FlowPolicy
from policies.flow.bid import WeakPolicy, resolve_checkpoint
from policies.flow.checkpoint import resolve_path, save_checkpoint
from policies.guidance import bid_costs, bid_select, euler_sample, prefix_weights
from policies.normalize import Normalizer


def _chunks(rng: np.random.Generator, n: int, h: int, a: int) -> np.ndarray:
    return rng.normal(size=(n, h, a))


def _brute_forward(cands: np.ndarray, weak: np.ndarray | None) -> np.ndarray:
    """The forward term written out with loops (an implementation independent of the vectorised one)."""
    k = len(cands)
    out = np.zeros(k)
    for i in range(k):
        dist = lambda x, y: sum(float(np.linalg.norm(x[t] - y[t])) for t in range(len(x)))  # noqa: E731
        pos = [dist(cands[i], cands[j]) for j in range(k) if j != i]
        neg = [dist(cands[i], w) for w in (weak if weak is not None else [])]
        out[i] = (np.mean(pos) if pos else 0.0) - (np.mean(neg) if neg else 0.0)
    return out


layouts = st.tuples(
    st.integers(2, 7), st.integers(0, 5), st.integers(2, 10), st.integers(1, 3), st.integers(0, 2**31 - 1)
)


# --- the pure scoring --------------------------------------------------------------------------------
@settings(max_examples=150, deadline=None)
@given(layouts, st.integers(0, 10), st.integers(0, 10), st.booleans())
def test_the_costs_follow_the_candidates_under_any_permutation(layout, d, s, with_prev) -> None:
    """Reordering the candidates reorders their costs and keeps the choice (the same chunk, up to a
    tie in total cost); reordering the weak samples changes nothing."""
    k, m, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands, weak = _chunks(rng, k, h, a), _chunks(rng, m, h, a)
    prev = rng.normal(size=(h, a)) if with_prev else None
    w = prefix_weights(h, min(d, h), min(s, h))
    perm = rng.permutation(k)
    base = bid_select(cands, prev, w, weak)
    moved = bid_select(cands[perm], prev, w, weak)
    np.testing.assert_allclose(moved.backward, base.backward[perm], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(moved.forward, base.forward[perm], rtol=1e-10, atol=1e-10)
    assert moved.total[moved.index] == pytest.approx(base.total[base.index], abs=1e-9)
    if np.sort(base.total)[1] - base.total.min() > 1e-9:  # a unique minimum: the very same chunk
        np.testing.assert_array_equal(cands[perm][moved.index], cands[base.index])
    shuffled = bid_select(cands, prev, w, weak[rng.permutation(m)])
    np.testing.assert_allclose(shuffled.total, base.total, rtol=1e-10, atol=1e-10)


@settings(max_examples=150, deadline=None)
@given(layouts, st.floats(0.01, 100.0), st.booleans())
def test_a_common_shift_changes_nothing_and_a_common_scale_scales_both_terms(layout, scale, with_prev) -> None:
    """Moving every chunk (candidates, weak samples, prev) by the same offset leaves every cost as it
    was, and scaling them all by ``c`` scales both terms by ``c``: the two terms are measured in the
    same units, so neither dominates just because the actions are large or small (a squared term
    beside an unsquared one would fail this), and the choice does not depend on the units."""
    k, m, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands, weak = _chunks(rng, k, h, a), _chunks(rng, m, h, a)
    prev = rng.normal(size=(h, a)) if with_prev else None
    w = prefix_weights(h, 1, h // 2)
    base = bid_select(cands, prev, w, weak)
    offset = rng.normal(size=(h, a)) * 10
    shifted = bid_select(cands + offset, None if prev is None else prev + offset, w, weak + offset)
    np.testing.assert_allclose(shifted.total, base.total, rtol=1e-9, atol=1e-9)
    scaled = bid_select(cands * scale, None if prev is None else prev * scale, w, weak * scale)
    np.testing.assert_allclose(scaled.backward, base.backward * scale, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(scaled.forward, base.forward * scale, rtol=1e-9, atol=1e-9)
    if np.sort(base.total)[1] - base.total.min() > 1e-6 * max(1.0, np.abs(base.total).max()):
        assert scaled.index == shifted.index == base.index


@settings(max_examples=150, deadline=None)
@given(layouts)
def test_the_forward_term_is_the_mean_distance_to_the_others_minus_that_to_the_weak_samples(layout) -> None:
    """Against a loop-by-loop computation; with neither prev nor weak samples the kept candidate is
    the medoid (least mean distance to the others), and duplicating the weak set changes nothing
    (a mean, not a sum)."""
    k, m, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands, weak = _chunks(rng, k, h, a), _chunks(rng, m, h, a)
    backward, forward = bid_costs(cands, None, None, weak)
    np.testing.assert_array_equal(backward, 0.0)
    np.testing.assert_allclose(forward, _brute_forward(cands, weak), rtol=1e-10, atol=1e-10)
    medoid = bid_select(cands, None, None, None)
    np.testing.assert_allclose(medoid.forward, _brute_forward(cands, None), rtol=1e-10)
    assert medoid.index == int(np.argmin(_brute_forward(cands, None)))
    doubled = bid_costs(cands, None, None, np.concatenate([weak, weak]))[1]
    np.testing.assert_allclose(doubled, forward, rtol=1e-10, atol=1e-10)


def test_a_chunk_between_two_modes_is_not_kept_the_larger_modes_is() -> None:
    """Four samples in one mode, two in another and one at the samples' mean: an unsquared distance
    keeps a chunk of the larger mode, where a squared one (distance to the mean) would keep the
    average of the two modes, a plan no demonstration had."""
    h, a = 6, 2
    direction = np.ones((h, a)) / np.sqrt(h * a)
    offsets = np.array([0.0, 0.0, 0.0, 0.0, 10.0, 10.0, 20.0 / 6.0])  # the last: the mean of all seven
    cands = offsets[:, None, None] * direction[None]
    cands[:4] += np.arange(4)[:, None, None] * 1e-3 * direction  # not exact duplicates
    choice = bid_select(cands, None, None, None)
    assert choice.index < 4, choice.total
    squared = [np.mean([((cands[i] - cands[j]) ** 2).sum() for j in range(7) if j != i]) for i in range(7)]
    assert int(np.argmin(squared)) == 6  # what the squared rule would have kept


@settings(max_examples=150, deadline=None)
@given(layouts, st.integers(1, 6), st.integers(0, 4), st.integers(0, 6))
def test_a_candidate_that_continues_prev_has_the_least_backward_cost(layout, d, s, j) -> None:
    """A candidate equal to ``prev`` on the chunk scores 0 on the backward term, every other one more
    (where it differs on a weighted index); with two candidates and no weak samples the forward terms
    are equal, so the one nearer ``prev`` under the mask is kept."""
    k, m, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands = _chunks(rng, k, h, a)
    j %= k
    w = prefix_weights(h, min(d, h - min(s, h - 1)), min(s, h - 1))
    assume(w.any())
    backward, _ = bid_costs(cands, cands[j], w, None)
    assert backward[j] == 0.0 and np.all(backward >= 0)
    assert np.all(np.delete(backward, j) > 0)
    prev = cands[j] + rng.normal(size=(h, a)) * 0.01
    pair = cands[[j, (j + 1) % k]]
    choice = bid_select(pair, prev, w, None)
    assert choice.forward[0] == pytest.approx(choice.forward[1])
    near = [sum(w[t] * np.linalg.norm(c[t] - prev[t]) for t in range(h)) for c in pair]
    assert choice.index == int(np.argmin(near))


@settings(max_examples=150, deadline=None)
@given(layouts, st.integers(0, 6))
def test_a_weak_sample_on_a_candidate_penalises_exactly_that_candidate(layout, k_near) -> None:
    """A weak sample equal to candidate ``i`` lowers every other candidate's cost by its distance to
    ``i`` and leaves ``i``'s as it was: ``i`` loses ground against each of them."""
    k, _, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands = _chunks(rng, k, h, a)
    prev, w = rng.normal(size=(h, a)), prefix_weights(h, 1, 1)
    i = k_near % k
    without = bid_select(cands, prev, w, None)
    with_weak = bid_select(cands, prev, w, cands[i : i + 1])
    dist_to_i = np.zeros(k)
    for j in range(k):
        dist_to_i[j] = sum(float(np.linalg.norm(cands[j][t] - cands[i][t])) for t in range(h))
    np.testing.assert_allclose(without.total - with_weak.total, dist_to_i, rtol=1e-9, atol=1e-9)
    assert with_weak.total[i] == pytest.approx(without.total[i])
    # a candidate the weak policy also proposes is kept only if it wins by more than its distance to the rest
    if with_weak.index == i:
        assert without.index == i


@settings(max_examples=100, deadline=None)
@given(layouts)
def test_the_first_chunk_counts_the_forward_term_only(layout) -> None:
    """No previous chunk (``prev`` None) and a mask that is zero everywhere (``d = 0``, ``s = H``: what
    the planner asks for an episode's first chunk) give the same costs: no backward term."""
    k, m, h, a, seed = layout
    rng = np.random.default_rng(seed)
    cands, weak = _chunks(rng, k, h, a), _chunks(rng, m, h, a)
    first = bid_select(cands, np.zeros((h, a)), prefix_weights(h, 0, h), weak)
    none = bid_select(cands, None, None, weak)
    np.testing.assert_array_equal(first.backward, 0.0)
    np.testing.assert_allclose(first.total, none.total, rtol=1e-12)
    assert first.index == none.index


def test_shapes_that_do_not_fit_are_refused() -> None:
    c = np.zeros((3, 5, 2))
    with pytest.raises(ValueError, match="candidates"):
        bid_costs(np.zeros((5, 2)), None, None, None)
    with pytest.raises(ValueError, match="prev shape"):
        bid_costs(c, np.zeros((4, 2)), np.ones(5), None)
    with pytest.raises(ValueError, match="weights shape"):
        bid_costs(c, np.zeros((5, 2)), np.ones(4), None)
    with pytest.raises(ValueError, match="chunk sets"):
        bid_costs(c, None, None, np.zeros((2, 5, 3)))


# --- the flow policy's bid inference with a weak checkpoint ---------------------------------------
H, A, S, N = 8, 3, 4, 4
CFG = FlowModelConfig(
    chunk_size=H,
    action_dim=A,
    state_dim=S,
    camera_names=("head",),
    image_size=(16, 16),
    image_downsample=1,
    dim=32,
    heads=2,
    expert_layers=1,
    prefix_layers=1,
    cnn_channels=(8, 8),
    mlp_ratio=2,
)


def _batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    state = torch.randn(n, S, generator=gen)
    mode = torch.randn(n, 1, A, generator=gen)  # unobservable whole-chunk offset: the policy's modes
    actions = state[:, None, :A] + torch.linspace(0, 1, H)[None, :, None] * state[:, None, 3:4] + mode
    return state, torch.rand(n, 1, 3, 16, 16, generator=gen), actions


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """(strong, weak): one training run, saved at step 60 and, as the weak policy, at step 10 (short:
    these tests need two different networks of one run, not a good policy)."""
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = FlowModel(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    state, _, actions = _batch(256, gen)
    norm = Normalizer(
        Normalizer.compute_stats({"state": state.numpy(), "action": actions.reshape(-1, A).numpy()}),
        {"state": "zscore", "action": "zscore"},
    )
    root = tmp_path_factory.mktemp("bid_ckpts")
    for step in range(1, 61):
        loss = model.loss(*_batch(32, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step == 10:
            save_checkpoint(root / "weak", model, norm, meta={"step": step})
    save_checkpoint(root / "strong", model, norm, meta={"step": 60})
    return root / "strong", root / "weak"


def _obs(seed: int = 0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    return PolicyInput(
        state=np.array([[0.0, 0.5, -0.5, 1.0]], np.float32),
        images={"head": rng.random((1, 3, 16, 16), dtype=np.float32)},
    )


def test_bid_keeps_the_strong_sample_that_bid_select_chooses_from_the_policy_noise(checkpoints) -> None:
    """The chunk is one of the N strong samples, drawn from the policy's generator in a fixed order
    (the first as ``predict`` would draw it, then the other strong ones, then the weak ones): the
    samples rebuilt from the same generator state and scored by ``bid_select`` give the kept chunk
    and its index, and a second policy with the same seed gives the same chunk."""
    strong, weak = checkpoints
    policy = FlowPolicy(
        checkpoint=str(strong), seed=3, num_steps=5, bid_samples=N, select_samples=N, bid_weak_checkpoint=str(weak)
    )
    assert policy.metadata.supports_bid
    obs = _obs()
    prev = policy.predict(obs)[2:]
    w = prefix_weights(H, 2, 3)
    policy.reset_noise(11)
    out = policy.guided_inference(obs, prev, 2, 3, guidance="bid")
    info = policy.last_info()
    assert out.shape == (H, A) and out.dtype == np.float32 and np.isfinite(out).all()
    policy.reset_noise(11)
    samples = policy._candidates(obs, None)  # the same N draws, in the same order
    weak_noise = torch.randn((N, H, A), generator=policy._generator)
    state, images = policy._tensors(obs)
    weak_samples = policy.weak.sample(state, images, weak_noise, policy.num_steps, policy._autocast)
    padded = np.concatenate([prev, np.zeros((2, A), np.float32)])
    choice = bid_select(samples, padded, w, weak_samples)
    assert info["bid_index"] == choice.index
    np.testing.assert_allclose(out, samples[choice.index], atol=1e-6)
    assert info["bid_backward"] == pytest.approx(choice.backward[choice.index])
    assert info["bid_forward"] == pytest.approx(choice.forward[choice.index])
    twin = FlowPolicy(checkpoint=str(strong), seed=3, num_steps=5, bid_samples=N, bid_weak_checkpoint=str(weak))
    twin.reset_noise(11)
    np.testing.assert_array_equal(twin.guided_inference(obs, prev, 2, 3, guidance="bid"), out)
    twin.reset_noise(12)  # other draws, another chunk
    assert not np.array_equal(twin.guided_inference(obs, prev, 2, 3, guidance="bid"), out)
    policy.reset_noise(11)
    first = policy.guided_inference(obs, np.zeros((H, A), np.float32), 0, H, guidance="bid")
    assert policy.last_info()["bid_backward"] == 0.0  # no overlap: forward contrast only
    policy.reset_noise(11)
    np.testing.assert_allclose(first, samples[bid_select(samples, None, None, weak_samples).index], atol=1e-6)


def test_the_weak_policy_draws_on_the_weak_network(checkpoints) -> None:
    """The weak samples are the step-10 network's, not the strong one's: on the same noise they differ
    from the strong network's chunks, and the weak checkpoint loaded as the strong one reproduces them."""
    strong, weak = checkpoints
    policy = FlowPolicy(checkpoint=str(strong), num_steps=5, bid_weak_checkpoint=str(weak))
    as_strong = FlowPolicy(checkpoint=str(weak), num_steps=5)
    obs = _obs(1)
    noise = np.random.default_rng(2).normal(size=(H, A)).astype(np.float32)
    state, images = policy._tensors(obs)
    sampled = policy.weak.sample(state, images, torch.from_numpy(noise)[None], 5, policy._autocast)[0]
    np.testing.assert_allclose(sampled, as_strong.predict(obs, noise=noise), atol=1e-5)
    assert np.abs(sampled - policy.predict(obs, noise=noise)).max() > 1e-3


def test_a_weak_checkpoint_with_other_stats_is_mapped_into_the_policys_space(checkpoints, tmp_path) -> None:
    """A weak checkpoint normalized differently (its action mean shifted by ``delta``, its state stats
    the same) answers in its own space; mapped through robot units, its chunks are the same
    network's chunks moved by ``delta / std`` in the policy's space."""
    strong, _ = checkpoints
    other = tmp_path / "other_stats"
    shutil.copytree(strong, other)
    stats = json.loads((other / "stats.json").read_text())
    delta = 0.7
    stats["stats"]["action"]["mean"] = [v + delta for v in stats["stats"]["action"]["mean"]]
    (other / "stats.json").write_text(json.dumps(stats))
    policy = FlowPolicy(checkpoint=str(strong), num_steps=5, bid_weak_checkpoint=str(other))
    assert policy.weak.action_map is not None
    obs = _obs(2)
    noise = torch.from_numpy(np.random.default_rng(3).normal(size=(2, H, A)).astype(np.float32))
    state, images = policy._tensors(obs)
    mapped = policy.weak.sample(state, images, noise, 5, policy._autocast)
    with torch.inference_mode():
        prefix = policy.model.encode_prefix(state, images)
        own = euler_sample(lambda a, t: policy.model.velocity(prefix, a, t), noise, 5).numpy()
    std = np.asarray(stats["stats"]["action"]["std"]) + 1e-6
    np.testing.assert_allclose(mapped, own + delta / std, atol=1e-4)
    same = FlowPolicy(checkpoint=str(strong), num_steps=5, bid_weak_checkpoint=str(strong))
    assert same.weak.action_map is None and same.weak.state_map is None


def test_without_a_weak_checkpoint_bid_is_refused_and_a_mismatched_one_names_the_key(checkpoints, tmp_path) -> None:
    strong, _ = checkpoints
    plain = FlowPolicy(checkpoint=str(strong), num_steps=2)
    assert not plain.metadata.supports_bid and plain.weak is None
    with pytest.raises(ValueError, match="bid_weak_checkpoint"):
        plain.guided_inference(_obs(), np.zeros((H, A), np.float32), 1, 2, guidance="bid")
    longer = tmp_path / "longer"
    save_checkpoint(longer, FlowModel(FlowModelConfig.from_dict({**CFG.to_dict(), "chunk_size": H + 2})))
    with pytest.raises(ValueError, match=r"chunk_size=10 .*chunk_size=8") as err:
        FlowPolicy(checkpoint=str(strong), bid_weak_checkpoint=str(longer))
    assert getattr(err.value, "key", None) == "bid_weak_checkpoint"
    with pytest.raises(ValueError, match="bid_samples"):
        FlowPolicy(checkpoint=str(strong), bid_samples=1)


def test_a_bundled_checkpoint_is_found_by_its_name() -> None:
    assert resolve_checkpoint("transfer_cube_prefix") == resolve_path("policies/flow/checkpoints/transfer_cube_prefix")
    assert resolve_checkpoint("policies/flow/checkpoints/transfer_cube") == resolve_path(
        "policies/flow/checkpoints/transfer_cube"
    )
    assert not resolve_checkpoint("no_such_checkpoint").exists()
    with pytest.raises(ValueError, match="no_such_checkpoint"):
        WeakPolicy.load("no_such_checkpoint", CFG, resolve_path("policies/flow/checkpoints/transfer_cube"))


def test_the_fleet_batch_runs_bid_rows_by_themselves_and_the_other_rows_together(checkpoints) -> None:
    """``infer_batch`` (the fleet's batched call): a bid row is a batch of 2N samples of its own, so it
    is answered by the policy's batched bid inference (a chunk whose choice the row's ``info``
    reports), beside a VJP row and a plain row served by one batched call; ``plan_batch`` refuses a
    bid row with the reason."""
    from policies.base import Guidance
    from policies.batched import BatchRequest, infer_batch, plan_batch
    from policies.runner import Guide, PolicyRunner

    strong, weak = checkpoints
    policy = FlowPolicy(checkpoint=str(strong), num_steps=4, bid_samples=N, bid_weak_checkpoint=str(weak))
    runner = PolicyRunner(policy, Normalizer.identity())
    obs, prev = _obs(), np.zeros((H, A), np.float32)
    rows = [
        BatchRequest(obs, Guide(prev, 2, 3, Guidance.VJP)),
        BatchRequest(obs, Guide(prev + 1, 2, 3, Guidance.BID)),
        BatchRequest(obs),
    ]
    results = infer_batch(runner, rows)
    assert [r.error for r in results] == [None, None, None]
    assert all(r.model.shape == (H, A) and np.isfinite(r.model).all() for r in results)
    assert set(results[1].info) == {"bid_index", "bid_backward", "bid_forward"} and results[0].info == {}
    assert results[0].batch_size == 3
    with pytest.raises(ValueError, match="batch row 1: guidance=bid samples a batch of candidates of its own"):
        plan_batch(rows, H, A)
    plain = FlowPolicy(checkpoint=str(strong), num_steps=2)  # no weak checkpoint: the row is refused, the others run
    refused = infer_batch(PolicyRunner(plain, Normalizer.identity()), rows)
    assert "supports_bid" in refused[1].error and refused[0].error is None and refused[2].error is None


def test_bid_requests_batched_get_the_chunks_and_choices_they_get_alone(checkpoints) -> None:
    """``bid_inference_batch``: three requests (other observations, previous chunks, delays and
    horizons) in two sampling calls, each with the draws its single call makes (``_bid_noise`` from
    the same generator state), keep the sample the single call keeps, to float tolerance."""
    from policies.base import Guidance
    from policies.batched import BatchRequest
    from policies.runner import Guide

    strong, weak = checkpoints
    policy = FlowPolicy(checkpoint=str(strong), num_steps=4, bid_samples=N, bid_weak_checkpoint=str(weak))
    rng = np.random.default_rng(4)
    cells = [(2, 3), (0, H), (4, 2)]
    requests, alone = [], []
    for i, (d, s) in enumerate(cells):
        obs, prev = _obs(i), rng.normal(size=(H, A)).astype(np.float32)
        policy.reset_noise(20 + i)
        chunk = policy.guided_inference(obs, prev, d, s, guidance="bid")
        alone.append((chunk, policy.last_info()))
        policy.reset_noise(20 + i)
        draws = policy._bid_noise(None).numpy()
        requests.append(BatchRequest(obs, Guide(prev, d, s, Guidance.BID), draws))
    batched = policy.bid_inference_batch(requests)
    assert len(batched) == len(cells)
    for (chunk, info), (got, got_info) in zip(alone, batched):
        assert got_info["bid_index"] == info["bid_index"]
        np.testing.assert_allclose(got, chunk, atol=1e-5)
        assert got_info["bid_backward"] == pytest.approx(info["bid_backward"], abs=1e-5)
    assert len({i["bid_index"] for _, i in alone}) > 1 or not np.allclose(alone[0][0], alone[1][0])
    assert policy.bid_inference_batch([]) == []
