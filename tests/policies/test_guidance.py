"""RTC guidance math (policies/guidance.py) against closed forms.

The sampler is checked on an analytic flow: data x1 ~ N(mu, sd^2) per coordinate, noise
x0 ~ N(0, 1), x_tau = tau*x1 + (1-tau)*x0 (tau = 0 noise). Its exact marginal velocity is linear in
A, so the guided Euler result has an independent closed-form recursion (written here in numpy with
the Jacobian by hand), which a sign flip of g or a reversed time convention cannot match.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from policies.guidance import blend, euler_sample, guidance_weight, guided_euler_sample, padded_prev, prefix_weights

H, D = 8, 3


# --- prefix weights ------------------------------------------------------------------------------
def test_exp_weights_match_worked_example() -> None:
    # H=8, d=2, s=3 worked out by hand from the formula in policies/guidance.py
    w = prefix_weights(8, 2, 3, "exp")
    np.testing.assert_allclose(w, [1, 1, 0.488, 0.189, 0.041, 0, 0, 0], atol=1e-3)


@pytest.mark.parametrize("H_,d,s", [(8, 2, 3), (50, 5, 25), (16, 0, 4), (32, 7, 10), (10, 3, 0)])
def test_weights_formula_all_schedules(H_: int, d: int, s: int) -> None:
    i = np.arange(H_)
    c = (H_ - s - i) / (H_ - s - d + 1)
    mid = (i >= d) & (i < H_ - s)
    expected_exp = np.where(i < d, 1.0, np.where(mid, c * (np.exp(c) - 1) / (math.e - 1), 0.0))
    expected_lin = np.where(i < d, 1.0, np.where(mid, c, 0.0))
    np.testing.assert_allclose(prefix_weights(H_, d, s, "exp"), expected_exp, atol=1e-6)
    np.testing.assert_allclose(prefix_weights(H_, d, s, "linear"), expected_lin, atol=1e-6)
    np.testing.assert_array_equal(prefix_weights(H_, d, s, "ones"), (i < H_ - s).astype(np.float32))
    np.testing.assert_array_equal(prefix_weights(H_, d, s, "zeros"), (i < d).astype(np.float32))
    w = prefix_weights(H_, d, s, "exp")
    assert w.dtype == np.float32 and w.shape == (H_,)
    assert np.all(np.diff(w) <= 1e-7), "weights must not increase along the chunk"


def test_weights_reject_bad_arguments() -> None:
    with pytest.raises(ValueError, match="schedule"):
        prefix_weights(8, 2, 3, "cosine")
    with pytest.raises(ValueError):
        prefix_weights(8, -1, 3)
    with pytest.raises(ValueError):
        prefix_weights(8, 2, 9)
    # a delay beyond the guided region is clamped, never indexes past it
    np.testing.assert_array_equal(prefix_weights(8, 7, 3, "exp"), [1, 1, 1, 1, 1, 0, 0, 0])


def test_guidance_weight() -> None:
    assert guidance_weight(0.0, 5.0) == 5.0
    assert guidance_weight(0.5, 5.0) == pytest.approx(2.0)  # (0.25+0.25)/0.25
    assert guidance_weight(0.9, 5.0) == pytest.approx(min(5.0, (0.81 + 0.01) / 0.09))
    assert guidance_weight(0.3, 100.0) == pytest.approx((0.09 + 0.49) / 0.21)
    assert guidance_weight(0.3, 0.0) == 0.0


def test_blend() -> None:
    rng = np.random.default_rng(0)
    prev, new = rng.normal(size=(H, D)).astype(np.float32), rng.normal(size=(H, D)).astype(np.float32)
    w = prefix_weights(H, 2, 3)
    out = blend(prev, new, w)
    np.testing.assert_allclose(out, w[:, None] * prev + (1 - w[:, None]) * new, atol=1e-6)
    np.testing.assert_array_equal(out[:2], prev[:2])
    np.testing.assert_array_equal(out[-3:], new[-3:])
    out_t = blend(torch.from_numpy(prev), torch.from_numpy(new), w)
    np.testing.assert_allclose(out_t.numpy(), out, atol=1e-6)


# --- analytic Gaussian flow ----------------------------------------------------------------------
MU, SD = 1.5, 0.5


def coeffs(tau: float) -> tuple[float, float]:
    """v(x, tau) = a*x + b for the Gaussian flow above (exact E[x1 - x0 | x_tau])."""
    var = tau * tau * SD * SD + (1 - tau) ** 2
    a = (tau * SD * SD - (1 - tau)) / var
    return a, MU - a * tau * MU


def gaussian_velocity(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
    a, b = coeffs(float(tau))
    return a * x + b


def reference_guided(noise: np.ndarray, y: np.ndarray, w: np.ndarray, n: int, beta: float) -> np.ndarray:
    """Closed-form recursion of guided Euler on the linear field (Jacobian by hand)."""
    x = noise.astype(np.float64).copy()
    wc = w[:, None].astype(np.float64)
    for k in range(n):
        tau = k / n
        a, b = coeffs(tau)
        v = a * x + b
        a1_hat = x + (1 - tau) * v
        jac = 1 + (1 - tau) * a  # d a1_hat / d x, elementwise
        g = jac * wc * (y - a1_hat)
        wt = beta if tau == 0 else min(beta, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))
        x = x + (v + wt * g) / n
    return x


def test_unguided_euler_samples_the_data_distribution() -> None:
    """tau = 0 is noise, tau = 1 data: a reversed time convention does not land on N(mu, sd)."""
    gen = torch.Generator().manual_seed(0)
    noise = torch.randn(4000, H, D, generator=gen, dtype=torch.float64)
    x = euler_sample(gaussian_velocity, noise, 50).numpy()
    assert abs(x.mean() - MU) < 0.03
    assert abs(x.std() - SD) < 0.03


@pytest.mark.parametrize("n,beta", [(10, 5.0), (5, 10.0), (20, 1.0)])
def test_guided_matches_closed_form(n: int, beta: float) -> None:
    rng = np.random.default_rng(1)
    noise = rng.normal(size=(H, D))
    y = MU + SD * rng.normal(size=(H, D))
    w = prefix_weights(H, 2, 3).astype(np.float64)
    got = guided_euler_sample(
        gaussian_velocity, torch.from_numpy(noise), torch.from_numpy(y), torch.from_numpy(w), n, beta
    )
    np.testing.assert_allclose(got.numpy(), reference_guided(noise, y, w, n, beta), atol=1e-10)


def test_guidance_pulls_the_prefix_onto_prev_and_leaves_the_tail_free() -> None:
    rng = np.random.default_rng(2)
    noise = torch.from_numpy(rng.normal(size=(64, H, D)))
    y = torch.from_numpy(MU + SD * rng.normal(size=(H, D)))
    d, s = 2, 3
    w = torch.from_numpy(prefix_weights(H, d, s).astype(np.float64))
    free = euler_sample(gaussian_velocity, noise, 10)
    guided = guided_euler_sample(gaussian_velocity, noise, y, w, 10, beta=10.0)
    err_free = (free[:, :d] - y[:d]).abs().mean().item()
    err_guided = (guided[:, :d] - y[:d]).abs().mean().item()
    # measured: err_free ~0.53, err_guided ~0.006 (a sign-flipped g diverges away from y instead)
    assert err_guided < 0.1 * err_free
    # independent coordinates: W = 0 rows are untouched, exactly
    torch.testing.assert_close(guided[:, H - s :], free[:, H - s :], rtol=0, atol=1e-12)


def test_beta_zero_equals_unguided() -> None:
    noise = torch.randn(H, D, generator=torch.Generator().manual_seed(3))
    y = torch.randn(H, D)
    w = torch.from_numpy(prefix_weights(H, 2, 3))
    torch.testing.assert_close(
        guided_euler_sample(gaussian_velocity, noise, y, w, 10, beta=0.0),
        euler_sample(gaussian_velocity, noise, 10),
        rtol=0,
        atol=0,
    )


def test_works_under_outer_no_grad_and_refuses_inference_mode() -> None:
    rng = np.random.default_rng(4)
    noise, y = torch.from_numpy(rng.normal(size=(H, D))), torch.from_numpy(rng.normal(size=(H, D)))
    w = torch.from_numpy(prefix_weights(H, 2, 3).astype(np.float64))
    ref = reference_guided(noise.numpy(), y.numpy(), w.numpy(), 10, 5.0)
    with torch.no_grad():
        got = guided_euler_sample(gaussian_velocity, noise, y, w, 10, 5.0)
    np.testing.assert_allclose(got.numpy(), ref, atol=1e-10)
    assert not got.requires_grad
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        guided_euler_sample(gaussian_velocity, noise, y, w, 10, 5.0)


def test_guidance_through_a_nonlinear_network_uses_its_jacobian() -> None:
    """With a real (nonlinear) module the VJP equals J^T e computed by torch.autograd.functional."""
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Linear(D, 16), torch.nn.Tanh(), torch.nn.Linear(16, D)).double()

    def vel(x: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
        return net(x) * (1 + tau)

    noise, y = torch.randn(H, D, dtype=torch.float64), torch.randn(H, D, dtype=torch.float64)
    w = torch.from_numpy(prefix_weights(H, 2, 3).astype(np.float64))
    n, beta = 4, 5.0
    x = noise.clone()
    for k in range(n):
        tau = k / n
        f = lambda z: z + (1 - tau) * vel(z, torch.tensor(tau, dtype=torch.float64))  # noqa: E731
        a1 = f(x)
        _, g = torch.autograd.functional.vjp(f, x, w[:, None] * (y - a1))
        x = x + (vel(x, torch.tensor(tau, dtype=torch.float64)) + guidance_weight(tau, beta) * g) / n
    got = guided_euler_sample(vel, noise, y, w, n, beta)
    torch.testing.assert_close(got, x.detach(), rtol=1e-9, atol=1e-9)


# --- a capped guided region and guidance without the Jacobian -------------------------------------
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from policies.guidance import (  # noqa: E402
    capped_execute_horizon,
    capped_prefix_weights,
    identity_correction,
    identity_guided_euler_sample,
)


@st.composite
def chunk_layouts(draw):
    h = draw(st.integers(1, 64))
    s = draw(st.integers(0, h))
    d = draw(st.integers(0, h))
    cap = draw(st.integers(0, h + 2))
    return h, d, s, cap


@settings(max_examples=300, deadline=None)
@given(chunk_layouts(), st.sampled_from(["exp", "linear", "ones", "zeros"]))
def test_capped_weights_end_cap_ticks_past_the_delay(layout, schedule: str) -> None:
    h, d, s, cap = layout
    w = capped_prefix_weights(h, d, s, cap, schedule)
    end = min(h - s, d + cap)
    assert w.shape == (h,) and w.dtype == np.float32
    np.testing.assert_array_equal(w[: min(d, h - s)], 1.0)  # the committed actions stay pinned
    np.testing.assert_array_equal(w[end:], 0.0)  # free past the cap (and past H - s)
    assert np.all(np.diff(w) <= 1e-7)
    # the same decay as the paper's mask whose region ends at ``end``
    np.testing.assert_array_equal(w, prefix_weights(h, d, h - end, schedule))
    if d + cap >= h - s:  # a cap at or beyond H - s is no cap
        np.testing.assert_array_equal(w, prefix_weights(h, d, s, schedule))
    if cap == 0:  # a zero cap is the hard mask
        np.testing.assert_array_equal(w, prefix_weights(h, d, s, "zeros"))
    assert capped_execute_horizon(h, d, s, cap) == h - end
    np.testing.assert_array_equal(capped_prefix_weights(h, d, s, None, schedule), prefix_weights(h, d, s, schedule))


def test_capped_weights_worked_example_and_bad_cap() -> None:
    # H=50, d=4, s=12: the paper's region runs to 38; capped at 6 past the delay it ends at 10
    w = capped_prefix_weights(50, 4, 12, 6, "exp")
    assert np.all(w[:4] == 1) and np.all(w[4:10] > 0) and np.all(w[10:] == 0)
    assert np.count_nonzero(prefix_weights(50, 4, 12, "exp")) == 38
    with pytest.raises(ValueError, match="cap"):
        capped_prefix_weights(50, 4, 12, -1)


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_identity_correction_is_the_weighted_error(h: int, a: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    a1_hat, prev = (torch.from_numpy(rng.normal(size=(2, h, a))) for _ in range(2))
    w = torch.from_numpy(rng.uniform(size=h))
    got = identity_correction(a1_hat, prev, w)
    np.testing.assert_allclose(got.numpy(), w.numpy()[:, None] * (prev.numpy() - a1_hat.numpy()), atol=1e-12)


def reference_identity(noise: np.ndarray, y: np.ndarray, w: np.ndarray, n: int, beta: float) -> np.ndarray:
    """Closed-form recursion of identity-guided Euler on the linear field (no Jacobian factor)."""
    x = noise.astype(np.float64).copy()
    wc = w[:, None].astype(np.float64)
    for k in range(n):
        tau = k / n
        a, b = coeffs(tau)
        v = a * x + b
        a1_hat = x + (1 - tau) * v
        wt = beta if tau == 0 else min(beta, (tau**2 + (1 - tau) ** 2) / (tau * (1 - tau)))
        x = x + (v + wt * wc * (y - a1_hat)) / n
    return x


@settings(max_examples=40, deadline=None)
@given(st.integers(1, 20), st.floats(0.5, 10.0), st.integers(0, H), st.integers(0, 2**31 - 1))
def test_identity_guided_matches_closed_form_and_differs_from_vjp(n: int, beta: float, d: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    noise = rng.normal(size=(H, D))
    y = MU + SD * rng.normal(size=(H, D))
    w = prefix_weights(H, d, 3).astype(np.float64)
    args = (torch.from_numpy(noise), torch.from_numpy(y), torch.from_numpy(w), n, beta)
    got = identity_guided_euler_sample(gaussian_velocity, *args)
    np.testing.assert_allclose(got.numpy(), reference_identity(noise, y, w, n, beta), atol=1e-10)
    if n >= 2 and w.any():  # the Gaussian field's Jacobian is not the identity: VJP guidance differs
        vjp = guided_euler_sample(gaussian_velocity, *args).numpy()
        assert np.abs(vjp - got.numpy()).max() > 1e-6


def test_identity_equals_vjp_when_the_velocity_ignores_the_chunk() -> None:
    """Where dA1_hat/dA is the identity (a velocity that does not depend on A) both corrections agree."""
    rng = np.random.default_rng(3)
    field = torch.from_numpy(rng.normal(size=(H, D)))
    const = lambda a, tau: field * (1.0 + float(tau)) + 0.0 * a  # noqa: E731
    noise, y = torch.from_numpy(rng.normal(size=(H, D))), torch.from_numpy(rng.normal(size=(H, D)))
    w = torch.from_numpy(prefix_weights(H, 2, 3).astype(np.float64))
    np.testing.assert_allclose(
        identity_guided_euler_sample(const, noise, y, w, 10, 5.0).numpy(),
        guided_euler_sample(const, noise, y, w, 10, 5.0).numpy(),
        atol=1e-12,
    )


def test_identity_guidance_needs_no_autograd_and_beta_zero_is_unguided() -> None:
    rng = np.random.default_rng(4)
    noise, y = torch.from_numpy(rng.normal(size=(H, D))), torch.from_numpy(rng.normal(size=(H, D)))
    w = torch.from_numpy(prefix_weights(H, 2, 3).astype(np.float64))
    with torch.inference_mode():  # no reverse pass: it runs where VJP guidance cannot
        out = identity_guided_euler_sample(gaussian_velocity, noise.clone(), y.clone(), w.clone(), 10, 5.0)
    assert np.abs(out.numpy()[:2] - y.numpy()[:2]).mean() < np.abs(noise.numpy()[:2] - y.numpy()[:2]).mean()
    plain = euler_sample(gaussian_velocity, noise, 10)
    np.testing.assert_array_equal(
        identity_guided_euler_sample(gaussian_velocity, noise, y, w, 10, 0.0).numpy(), plain.numpy()
    )
    with pytest.raises(ValueError, match="weights shape"):
        identity_guided_euler_sample(gaussian_velocity, noise, y, w[:-1], 10, 5.0)


# --- guidance: select (best of K unguided samples by backward coherence) --------------------------
from policies.guidance import coherence_costs, select_coherent  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(1, 8), st.integers(1, 20), st.integers(1, 4), st.integers(0, 2**31 - 1), st.data())
def test_coherence_costs_are_the_weighted_squared_distance(k: int, h: int, a: int, seed: int, data) -> None:
    rng = np.random.default_rng(seed)
    cands, prev, w = rng.normal(size=(k, h, a)), rng.normal(size=(h, a)), rng.uniform(size=h)
    costs = coherence_costs(cands, prev, w)
    expected = [sum(w[i] * np.sum((c[i] - prev[i]) ** 2) for i in range(h)) for c in cands]
    np.testing.assert_allclose(costs, expected, rtol=1e-12, atol=1e-12)
    best = select_coherent(cands, prev, w)
    assert costs[best] == costs.min() and best == int(np.flatnonzero(costs == costs.min())[0])
    # the choice follows the candidate, not its position (continuous draws and W > 0: no ties)
    perm = np.asarray(data.draw(st.permutations(range(k))))
    assert np.array_equal(cands[perm][select_coherent(cands[perm], prev, w)], cands[best])
    # torch inputs give the same answer
    assert select_coherent(torch.from_numpy(cands), torch.from_numpy(prev), torch.from_numpy(w)) == best


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1), st.integers(0, 30), st.integers(0, 12))
def test_select_keeps_the_candidate_that_continues_prev(k: int, seed: int, d: int, s: int) -> None:
    """One candidate follows ``prev`` on the guided region (any tail), the others follow another
    mode: the follower is kept; a difference only in the free tail (W = 0) costs nothing."""
    rng = np.random.default_rng(seed)
    h, a = 32, 3
    prev = rng.normal(size=(h, a))
    w = prefix_weights(h, d, s)
    cands = prev[None] + 2.0 + rng.normal(size=(k, h, a)) * 0.1  # another mode: offset by 2 everywhere
    j = int(rng.integers(k))
    cands[j] = prev + rng.normal(size=(h, a)) * 0.1
    cands[j, w == 0] += 100.0  # the free tail does not count
    if w.any():
        assert select_coherent(cands, prev, w) == j
    else:  # nothing guided: every candidate costs 0, the first wins
        assert select_coherent(cands, prev, w) == 0


@settings(max_examples=100, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1), st.integers(1, 20), st.integers(0, 12))
def test_select_on_the_hard_mask_scores_only_the_committed_actions(k: int, seed: int, d: int, s: int) -> None:
    """``select_hard`` (schedule ``zeros``): a candidate that joins the ``d`` committed actions and
    then leaves the previous plan (a world that changed) beats candidates that follow the previous
    plan's rest but jump at the committed actions; where the whole guided region counts (``ones``)
    and outweighs the committed part, the plan-followers win."""
    rng = np.random.default_rng(seed)
    h, a = 32, 3
    d = min(d, h - s)
    prev = rng.normal(size=(h, a))
    cands = prev[None] + rng.normal(size=(k, h, a)) * 0.05  # all follow the previous plan ...
    cands[:, :d] += 1.0  # ... but jump where the committed actions run
    j = int(rng.integers(k))
    cands[j] = prev + 5.0  # a new plan from the first free action on
    cands[j, :d] = prev[:d] + rng.normal(size=(d, a)) * 0.05  # that joins the committed actions
    assert select_coherent(cands, prev, prefix_weights(h, d, s, "zeros")) == j
    if 25 * (h - s - d) > 2 * d:  # the new plan's offset (5 per dim) over the region after d outweighs the jumps
        assert select_coherent(cands, prev, prefix_weights(h, d, s, "ones")) != j


@given(st.integers(1, 12), st.integers(1, 4), st.data())
def test_padded_prev_zero_pads_a_remainder_and_names_a_wrong_shape(h: int, a: int, data) -> None:
    n = data.draw(st.integers(0, h))
    rest = np.arange(n * a, dtype=np.float64).reshape(n, a) + 1.0
    out = padded_prev(rest, h, a)
    assert out.shape == (h, a) and out.dtype == np.float32
    np.testing.assert_array_equal(out[:n], rest)
    np.testing.assert_array_equal(out[n:], 0.0)
    for bad in (np.zeros((h + 1, a)), np.zeros((h, a + 1)), np.zeros(h)):
        with pytest.raises(ValueError, match=r"^prev shape .*expected \(<= "):
            padded_prev(bad, h, a)


from policies.guidance import gated_select, pairwise_coherence_costs, prev_is_stale  # noqa: E402


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 8), st.integers(1, 12), st.integers(1, 3), st.integers(0, 2**31 - 1))
def test_pairwise_costs_are_coherence_costs_against_each_candidate(k: int, h: int, a: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    cands, w = rng.normal(size=(k, h, a)), rng.uniform(size=h)
    pairs = pairwise_coherence_costs(cands, w)
    assert pairs.shape == (k, k)
    for j in range(k):
        np.testing.assert_allclose(pairs[:, j], coherence_costs(cands, cands[j], w), rtol=1e-12)
    np.testing.assert_allclose(pairs, pairs.T, rtol=1e-12)
    np.testing.assert_array_equal(np.diag(pairs), 0.0)


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 8), st.integers(0, 2**31 - 1), st.integers(0, 20), st.integers(0, 12), st.floats(0.5, 50.0))
def test_the_stale_gate_passes_a_previous_chunk_in_a_sampled_mode_and_stops_one_that_left_every_mode(
    k: int, seed: int, d: int, s: int, jump: float
) -> None:
    """Fresh candidates in two modes (offset 0 or 3) around a plan: a previous chunk that one of them
    continues closely is not stale and select keeps a candidate of its mode; one moved off every
    mode by more than the modes' own spread (a plan for a world that changed) is stale, and the
    gated select keeps candidate 0 (naive's chunk) while the ungated one still picks the nearest."""
    rng = np.random.default_rng(seed)
    h, a = 32, 3
    w = prefix_weights(h, d, s)
    if not w.any():
        return  # nothing guided: every distance is 0, nothing to test
    plan = rng.normal(size=(h, a))
    modes = np.array([0.0, 3.0])[np.arange(k) % 2]  # both modes sampled at least once
    cands = plan[None] + modes[:, None, None] + rng.normal(size=(k, h, a)) * 0.05
    for j, mode in enumerate((0.0, 3.0)):  # candidate j is in this mode; prev continues it closely
        prev = cands[j] + rng.normal(size=(h, a)) * 1e-3
        assert not prev_is_stale(cands, prev, w)
        index, stale = gated_select(cands, prev, w)
        assert not stale and index == select_coherent(cands, prev, w) and modes[index] == mode
    # farther from both modes, in every dim, than the modes are from each other (K = 2: one sample a mode)
    up = rng.normal(size=(1, a)) > 0
    stale = plan + np.where(up, 6.5 + jump, -3.5 - jump)
    assert prev_is_stale(cands, stale, w)
    assert gated_select(cands, stale, w) == (0, True)
    assert select_coherent(cands, stale, w) == int(np.argmin(coherence_costs(cands, stale, w)))
    if k >= 4:  # two samples a mode: the spread is the modes' own noise, and halfway between them is stale
        assert prev_is_stale(cands, plan + 1.5, w)


@settings(max_examples=50, deadline=None)
@given(st.integers(2, 16), st.integers(0, 2**31 - 1))
def test_a_previous_chunk_drawn_like_the_candidates_is_called_stale_about_once_in_k_plus_1(k: int, seed: int) -> None:
    """Exchangeability: when the previous chunk is one more draw from the candidates' distribution
    (an unchanged world), it is the farthest of the K + 1 from its nearest neighbour, and called
    stale, with probability 1/(K + 1) (ties have probability 0); over 400 draws the rate stays
    within 5 standard errors of that, so the gate has no threshold to tune."""
    rng = np.random.default_rng(seed)
    h, a, n = 8, 2, 400
    w = prefix_weights(h, 2, 2)
    hits = sum(prev_is_stale(draw[1:], draw[0], w) for draw in rng.normal(size=(n, k + 1, h, a)))
    p = 1.0 / (k + 1)
    assert abs(hits / n - p) <= 5 * math.sqrt(p * (1 - p) / n), (hits, n, p)


def test_the_stale_gate_needs_two_candidates_and_checks_shapes() -> None:
    w = np.ones(5)
    assert not prev_is_stale(np.zeros((1, 5, 3)), np.full((5, 3), 100.0), w)  # K = 1: nothing to compare
    assert gated_select(np.zeros((1, 5, 3)), np.full((5, 3), 100.0), w) == (0, False)
    with pytest.raises(ValueError, match="candidates shape"):
        prev_is_stale(np.zeros((2, 5, 3)), np.zeros((5, 2)), w)
    with pytest.raises(ValueError, match="candidates shape"):
        pairwise_coherence_costs(np.zeros((5, 3)), w)


def test_coherence_costs_reject_mismatched_shapes() -> None:
    with pytest.raises(ValueError, match="candidates shape"):
        coherence_costs(np.zeros((2, 5, 3)), np.zeros((5, 2)), np.ones(5))
    with pytest.raises(ValueError, match="weights shape"):
        coherence_costs(np.zeros((2, 5, 3)), np.zeros((5, 3)), np.ones(4))
