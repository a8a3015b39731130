"""Real-time-chunking guidance math: the ONE place every policy takes it from.

Conventions (Black, Galliker, Levine 2025, arXiv 2506.07339; docs/rtc.md):

- Flow time ``tau`` runs from 0 (pure noise) to 1 (data); ``num_steps`` Euler steps of size
  ``1 / num_steps``, ``A <- A + v(A, tau) / num_steps``. (openpi uses the opposite, t = 1 noise:
  adapters must flip before calling in here.)
- All chunks are in the policy's *model space* (normalized), never robot units: the previous
  chunk ``prev`` handed back by the engine is the remainder of the chunk the model produced,
  zero-padded to H.
- A chunk is ``(H, action_dim)`` or batched ``(B, H, action_dim)``; weights are ``(H,)`` and
  broadcast over the action dimension (and the batch).

The soft mask ``W`` over chunk indices, with delay ``d`` (actions that will be executed from the
old chunk before the new one takes over, so the new chunk must agree there), execution horizon
``s`` (the last ``s`` actions of the new chunk are free) and chunk length ``H``::

    W_i = 1                                  for i < d
    W_i = c_i * (exp(c_i) - 1) / (e - 1)     for d <= i < H - s,   c_i = (H - s - i) / (H - s - d + 1)
    W_i = 0                                  for i >= H - s
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from policies.base import Schedule, capped_execute_horizon, capped_guided_end  # noqa: F401 - re-exported

logger = logging.getLogger(__name__)

SCHEDULES = tuple(s.value for s in Schedule)

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def padded_prev(prev: np.ndarray, horizon: int, action_dim: int, name: str = "prev") -> np.ndarray:
    """``prev`` as the ``(horizon, action_dim)`` float32 chunk the guidance math takes: a shorter
    remainder zero-padded at the end (the engine hands it padded; direct callers need not).
    ``ValueError`` naming ``name`` and the shape for anything else."""
    p = np.asarray(prev, dtype=np.float32)
    if p.ndim != 2 or p.shape[1] != action_dim or p.shape[0] > horizon:
        raise ValueError(f"{name} shape {p.shape}, expected (<= {horizon}, {action_dim})")
    if p.shape[0] == horizon:
        return p
    out = np.zeros((horizon, action_dim), np.float32)
    out[: p.shape[0]] = p
    return out


def prefix_weights(H: int, d: int, s: int, schedule: str = "exp") -> np.ndarray:
    """Inpainting weights ``W`` (shape ``(H,)``, float32, in [0, 1]) for one guided inference.

    ``d`` is the delay in ticks (actions the new chunk must reproduce from the old one), ``s`` the
    execution horizon in ticks (trailing actions left free). Schedules: ``exp`` (paper default),
    ``linear`` (``W_i = c_i``), ``ones`` (1 up to ``H - s``), ``zeros`` (hard masking: 1 for
    ``i < d``, else 0). ``d`` is clamped into ``[0, H - s]`` so a delay longer than the guided
    region never indexes past it.
    """
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown guidance schedule {schedule!r}; expected one of {SCHEDULES}")
    if H <= 0:
        raise ValueError(f"chunk length H must be positive, got {H}")
    if not 0 <= s <= H:
        raise ValueError(f"execution horizon s={s} must be within [0, H={H}]")
    if d < 0:
        raise ValueError(f"delay d={d} must be >= 0")
    end = H - s  # indices >= end are free
    d = min(d, end)
    idx = np.arange(H, dtype=np.float64)
    w = np.zeros(H, dtype=np.float64)
    if schedule == "zeros":
        w[:d] = 1.0
        return w.astype(np.float32)
    if schedule == "ones":
        w[:end] = 1.0
        return w.astype(np.float32)
    c = (end - idx) / (end - d + 1)
    mid = (idx >= d) & (idx < end)
    if schedule == "exp":
        w[mid] = c[mid] * np.expm1(c[mid]) / (math.e - 1.0)
    else:  # linear
        w[mid] = c[mid]
    w[:d] = 1.0
    return w.astype(np.float32)


def guidance_weight(tau: float, beta: float) -> float:
    """Guidance strength ``w(tau) = min(beta, (tau^2 + (1 - tau)^2) / (tau (1 - tau)))``.

    The unclipped term diverges at both ends; it is ``beta`` at ``tau = 0`` (and at ``tau = 1``,
    which the Euler sampler never evaluates). ``beta = 0`` turns guidance off.
    """
    tau = float(tau)
    if beta <= 0.0:
        return 0.0
    if tau <= 0.0 or tau >= 1.0:
        return float(beta)
    return float(min(beta, (tau * tau + (1.0 - tau) ** 2) / (tau * (1.0 - tau))))


def blend(prev: np.ndarray | torch.Tensor, new: np.ndarray | torch.Tensor, weights) -> np.ndarray | torch.Tensor:
    """The non-differentiable fallback: ``W * prev + (1 - W) * new`` over the chunk axis.

    ``weights`` is ``(H,)``; ``prev``/``new`` are ``(..., H, action_dim)`` in model space.
    """
    if isinstance(new, torch.Tensor):
        w = torch.as_tensor(weights, dtype=new.dtype, device=new.device)[:, None]
        prev_t = torch.as_tensor(prev, dtype=new.dtype, device=new.device)
        return w * prev_t + (1.0 - w) * new
    w = np.asarray(weights, dtype=np.float32)[:, None]
    out = w * np.asarray(prev, dtype=np.float32) + (1.0 - w) * np.asarray(new, dtype=np.float32)
    return out.astype(np.float32)


def euler_sample(velocity_fn: VelocityFn, noise: torch.Tensor, num_steps: int) -> torch.Tensor:
    """Plain (unguided) Euler integration of ``dA/dtau = v(A, tau)`` from tau = 0 (noise) to 1."""
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    a = noise
    dt = 1.0 / num_steps
    for k in range(num_steps):
        tau = torch.full((), k * dt, dtype=noise.dtype, device=noise.device)
        a = a + dt * velocity_fn(a, tau)
    return a


def vjp_step(
    velocity_fn: VelocityFn, a: torch.Tensor, tau: torch.Tensor, tau_f: float, y: torch.Tensor, w_col: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One flow step's velocity ``v`` and RTC correction ``g``: the VJP of ``W * (Y - A1_hat)`` through
    ``A1_hat = A + (1 - tau) v(A, tau)`` with respect to ``A`` (one reverse pass). ``w_col`` broadcasts
    the prefix weights over the action dim; both results are detached. Shared by the single and the
    batched guided samplers, so the guidance math exists once."""
    with torch.enable_grad():
        a_req = a.detach().requires_grad_(True)
        v = velocity_fn(a_req, tau)
        a1_hat = a_req + (1.0 - tau_f) * v
        err = (w_col * (y - a1_hat)).detach()
        (g,) = torch.autograd.grad(a1_hat, a_req, grad_outputs=err)
    return v.detach(), g


def guided_euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    prev: torch.Tensor | np.ndarray | None,
    weights: torch.Tensor | np.ndarray | None,
    num_steps: int,
    beta: float,
) -> torch.Tensor:
    """Euler sampling with RTC's VJP (pseudo-inverse) guidance toward ``prev`` on the weighted prefix.

    Per step at flow time ``tau = k / num_steps``::

        A1_hat   = A + (1 - tau) * v(A, tau)           # one-step estimate of the clean chunk
        g        = (dA1_hat/dA)^T [W * (prev - A1_hat)]  # one reverse-mode pass
        v_guided = v + w(tau) * g                       # w(tau) = guidance_weight(tau, beta)
        A        = A + v_guided / num_steps

    ``velocity_fn(A, tau)`` must be differentiable w.r.t. ``A``. Gradients are switched on locally
    (``torch.enable_grad``), so this works under an outer ``torch.no_grad``; it cannot work under
    ``torch.inference_mode`` (autograd is disabled there and its tensors cannot be saved for
    backward), so that raises ``RuntimeError``. With ``beta == 0``, ``prev is None`` or all-zero
    weights no reverse pass is run and the result equals :func:`euler_sample` bit for bit.
    Returns a detached tensor.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    guided = prev is not None and weights is not None and beta > 0.0
    if guided:
        w_t = torch.as_tensor(np.asarray(weights) if not isinstance(weights, torch.Tensor) else weights)
        w_t = w_t.to(dtype=noise.dtype, device=noise.device)
        guided = bool((w_t != 0).any())
    if not guided:
        with torch.no_grad():
            return euler_sample(velocity_fn, noise, num_steps).detach()
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "guided_euler_sample needs autograd for its VJP but torch.inference_mode is active; "
            "call it under torch.no_grad() instead"
        )
    if noise.is_inference() or (isinstance(prev, torch.Tensor) and prev.is_inference()):
        raise RuntimeError(
            "guided_euler_sample got an inference-mode tensor (created under torch.inference_mode); "
            "autograd cannot use it — build inputs under torch.no_grad() instead"
        )
    y = torch.as_tensor(prev).to(dtype=noise.dtype, device=noise.device)
    if y.shape[-2:] != noise.shape[-2:]:
        raise ValueError(f"prev chunk shape {tuple(y.shape)} does not match noise {tuple(noise.shape)}")
    if w_t.shape != (noise.shape[-2],):
        raise ValueError(f"weights shape {tuple(w_t.shape)} != (H,) = ({noise.shape[-2]},)")
    w_col = w_t[:, None]
    dt = 1.0 / num_steps
    a = noise.detach()
    for k in range(num_steps):
        tau_f = k * dt
        tau = torch.full((), tau_f, dtype=noise.dtype, device=noise.device)
        v, g = vjp_step(velocity_fn, a, tau, tau_f, y, w_col)
        a = a + dt * (v + guidance_weight(tau_f, beta) * g)
    return a.detach()


def prefix_conditioned_sample(
    velocity_fn: VelocityFn, noise: torch.Tensor, prev: torch.Tensor | np.ndarray, d: int, num_steps: int
) -> torch.Tensor:
    """Training-time RTC (Black, Ren, Equi, Levine 2025, arXiv 2512.05964): Euler sampling with
    the first ``d`` actions fixed to ``prev[:d]`` at flow time 1, the others integrated as usual.

    The model must have been trained with such clean prefixes (``FlowModelConfig.train_prefix_max``):
    ``velocity_fn(A, tau)`` then gets per-token flow times ``tau`` of shape ``(1, H)``. No reverse
    pass: the cost is one unguided inference. ``d == 0`` gives :func:`euler_sample`'s chunk for the
    same noise (every token at the same flow time), and ``A[:d] == prev[:d]`` exactly.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    h = noise.shape[-2]
    if not 0 <= d < h:
        raise ValueError(f"prefix length d={d} must be within [0, H={h})")
    y = torch.as_tensor(prev).to(dtype=noise.dtype, device=noise.device)
    if y.shape[-2:] != noise.shape[-2:]:
        raise ValueError(f"prev chunk shape {tuple(y.shape)} does not match noise {tuple(noise.shape)}")
    clean = torch.arange(h, device=noise.device) < d  # (H,)
    free = (~clean).to(noise.dtype)[:, None]
    a = torch.where(clean[:, None], y, noise)
    dt = 1.0 / num_steps
    for k in range(num_steps):
        tau = torch.where(
            clean,
            torch.ones((), dtype=noise.dtype, device=noise.device),
            torch.full((), k * dt, dtype=noise.dtype, device=noise.device),
        )[None]
        a = a + dt * free * velocity_fn(a, tau)
    return a.detach()


def capped_prefix_weights(H: int, d: int, s: int, cap_ticks: int | None, schedule: str = "exp") -> np.ndarray:
    """:func:`prefix_weights` with the soft-guided region ending ``cap_ticks`` actions past the
    delay instead of at ``H - s``: 1 for ``i < d``, the schedule's decay over ``d <= i < end``,
    0 from ``end = min(H - s, d + cap_ticks)`` on. ``cap_ticks = 0`` is the hard mask; a cap of
    ``H - s - d`` or more (or ``None``) is the paper's region."""
    return prefix_weights(H, d, capped_execute_horizon(H, d, s, cap_ticks), schedule)


def identity_correction(a1_hat: torch.Tensor, prev: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """The guidance correction without the Jacobian: the weighted error ``W * (prev - A1_hat)``
    itself. LeRobot's RTC (0.6) computes this: it evaluates the velocity before marking the noisy
    chunk as requiring gradients, so the reverse pass through ``A1_hat = A + (1 - tau) v`` sees
    ``dA1_hat/dA = I``. ``weights`` is ``(H,)``; ``prev``/``a1_hat`` are ``(..., H, action_dim)``."""
    w = torch.as_tensor(weights, dtype=a1_hat.dtype, device=a1_hat.device)[:, None]
    return w * (torch.as_tensor(prev, dtype=a1_hat.dtype, device=a1_hat.device) - a1_hat)


def identity_guided_euler_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    prev: torch.Tensor | np.ndarray | None,
    weights: torch.Tensor | np.ndarray | None,
    num_steps: int,
    beta: float,
) -> torch.Tensor:
    """Euler sampling with RTC guidance whose correction skips the Jacobian (``guidance: identity``)::

        A1_hat   = A + (1 - tau) * v(A, tau)
        v_guided = v + w(tau) * W * (prev - A1_hat)        # identity_correction, no reverse pass
        A        = A + v_guided / num_steps

    Same schedule, weights and ``w(tau) = guidance_weight(tau, beta)`` as
    :func:`guided_euler_sample`, at the cost of an unguided inference; it works under
    ``torch.inference_mode``. With a velocity that does not depend on ``A`` both give the same
    chunk. ``beta == 0``, ``prev is None`` or all-zero weights give :func:`euler_sample`'s chunk.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    if prev is None or weights is None or beta <= 0.0:
        with torch.no_grad():
            return euler_sample(velocity_fn, noise, num_steps).detach()
    w_t = torch.as_tensor(weights).to(dtype=noise.dtype, device=noise.device)
    y = torch.as_tensor(prev).to(dtype=noise.dtype, device=noise.device)
    if y.shape[-2:] != noise.shape[-2:]:
        raise ValueError(f"prev chunk shape {tuple(y.shape)} does not match noise {tuple(noise.shape)}")
    if w_t.shape != (noise.shape[-2],):
        raise ValueError(f"weights shape {tuple(w_t.shape)} != (H,) = ({noise.shape[-2]},)")
    dt = 1.0 / num_steps
    a = noise.detach()
    with torch.no_grad():
        for k in range(num_steps):
            tau_f = k * dt
            v = velocity_fn(a, torch.full((), tau_f, dtype=noise.dtype, device=noise.device))
            a1_hat = a + (1.0 - tau_f) * v
            a = a + dt * (v + guidance_weight(tau_f, beta) * identity_correction(a1_hat, y, w_t))
    return a.detach()


def coherence_costs(
    candidates: torch.Tensor | np.ndarray, prev: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray
) -> np.ndarray:
    """How far each of K candidate chunks strays from the previous chunk's unexecuted rest:
    ``sum_i W_i * ||candidate_i - prev_i||^2`` over the chunk axis (``(K,)`` float64).

    ``candidates`` ``(K, H, action_dim)``, ``prev`` ``(H, action_dim)`` (model space, zero-padded to
    H), ``weights`` the soft mask ``(H,)`` (:func:`prefix_weights`): the committed actions and the
    ones right after weigh most, the free tail not at all. This is the backward-coherence term of
    bidirectional decoding (Liu et al. 2024) with RTC's mask as its decay."""
    c, y, w = (
        np.asarray(x.detach().cpu() if isinstance(x, torch.Tensor) else x, np.float64)
        for x in (candidates, prev, weights)
    )
    if c.ndim != 3 or c.shape[1:] != y.shape:
        raise ValueError(f"candidates shape {c.shape} does not match prev {y.shape} as (K, H, action_dim)")
    if w.shape != (c.shape[1],):
        raise ValueError(f"weights shape {w.shape} != (H,) = ({c.shape[1]},)")
    return np.einsum("h,kh->k", w, ((c - y[None]) ** 2).sum(axis=-1))


def pairwise_coherence_costs(candidates: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray) -> np.ndarray:
    """:func:`coherence_costs` between every two of K candidates, ``(K, K)`` float64 (symmetric,
    zero diagonal): the same weighted squared distance, with candidate ``j`` in the place of ``prev``."""
    c = np.asarray(candidates.detach().cpu() if isinstance(candidates, torch.Tensor) else candidates, np.float64)
    if c.ndim != 3:
        raise ValueError(f"candidates shape {c.shape} is not (K, H, action_dim)")
    return np.stack([coherence_costs(c, c[j], weights) for j in range(c.shape[0])], axis=1)


def prev_is_stale(
    candidates: torch.Tensor | np.ndarray, prev: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray
) -> bool:
    """Whether the previous chunk's rest is an outlier among K fresh samples for the current
    observation: farther (:func:`coherence_costs`) from its nearest candidate than any candidate is
    from its own nearest other candidate.

    Why: when the world has not changed, the previous chunk is one more sample of the same plans
    (its rest and the candidates describe the same future ticks), so it is the farthest of the
    K + 1 from its nearest neighbour with probability about 1/(K + 1): the test has no threshold
    to tune. When the world changed under it (the cube jumped), every fresh sample re-plans for
    the world the cameras show now and the old plan stands apart from all of them; keeping the
    candidate closest to it would then favour the samples that react latest. A multimodal policy's
    candidates fall into modes, and a previous chunk in a mode that is still sampled has a near
    neighbour there, so it is not stale. With K < 2 there is no spread to compare with: False."""
    c = np.asarray(candidates.detach().cpu() if isinstance(candidates, torch.Tensor) else candidates, np.float64)
    to_prev = coherence_costs(c, prev, weights)
    if c.shape[0] < 2:
        return False
    pairs = pairwise_coherence_costs(c, weights)
    np.fill_diagonal(pairs, np.inf)
    return bool(to_prev.min() > pairs.min(axis=1).max())


def select_coherent(
    candidates: torch.Tensor | np.ndarray, prev: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray
) -> int:
    """Index of the candidate with the lowest :func:`coherence_costs` (the first on a tie), so a
    sampled plan that keeps the previous chunk's strategy wins over one that switches, while every
    candidate was sampled for the current observation (a changed world changes all of them)."""
    return int(np.argmin(coherence_costs(candidates, prev, weights)))


def gated_select(
    candidates: torch.Tensor | np.ndarray, prev: torch.Tensor | np.ndarray, weights: torch.Tensor | np.ndarray
) -> tuple[int, bool]:
    """``(index, stale)``: :func:`select_coherent`, unless :func:`prev_is_stale`; then candidate 0
    (the one sampled from the caller's noise: a plain sample, which with that noise is the chunk
    naive asynchronous execution would run), so a plan made for a world that has since changed picks nothing."""
    if prev_is_stale(candidates, prev, weights):
        return 0, True
    return select_coherent(candidates, prev, weights), False


def stepwise_distances(a: torch.Tensor | np.ndarray, b: torch.Tensor | np.ndarray) -> np.ndarray:
    """Euclidean distance between every chunk of ``a`` ``(K, H, action_dim)`` and every chunk of ``b``
    ``(M, H, action_dim)`` at each chunk index: ``(K, M, H)`` float64, ``||a_k,i - b_m,i||_2``."""
    x, y = (np.asarray(v.detach().cpu() if isinstance(v, torch.Tensor) else v, np.float64) for v in (a, b))
    if x.ndim != 3 or y.ndim != 3 or x.shape[1:] != y.shape[1:]:
        raise ValueError(f"chunk sets {x.shape} and {y.shape} are not (K, H, action_dim) and (M, H, action_dim)")
    return np.sqrt(((x[:, None] - y[None]) ** 2).sum(axis=-1))


@dataclass(frozen=True)
class BidChoice:
    """What :func:`bid_select` chose: the kept candidate's ``index`` and each candidate's two terms
    (``(K,)`` float64; ``total = backward + forward``, whose argmin is ``index``)."""

    index: int
    backward: np.ndarray
    forward: np.ndarray

    @property
    def total(self) -> np.ndarray:
        return self.backward + self.forward


def bid_costs(
    candidates: torch.Tensor | np.ndarray,
    prev: torch.Tensor | np.ndarray | None,
    weights: torch.Tensor | np.ndarray | None,
    weak: torch.Tensor | np.ndarray | None,
) -> tuple[np.ndarray, np.ndarray]:
    """The two criteria of bidirectional decoding (Liu et al. 2024) for K candidate chunks sampled
    from the policy, ``(backward, forward)``, each ``(K,)`` float64, lower is better.

    Distances are the paper's: the Euclidean norm of the action difference at each chunk index,
    summed over indices (not squared: a squared distance to a set is the distance to the set's
    mean plus a constant, so the forward term would favour a chunk that averages two modes of a
    multimodal policy over one inside the larger mode).

    - ``backward_k = sum_i W_i ||c_k,i - prev_i||``: agreement with the previous chunk's unexecuted
      rest. The paper decays its weight as ``rho^i`` over the overlap; here ``W`` is RTC's soft mask
      (:func:`prefix_weights` of the request's ``d``, ``s`` and schedule), as ``guidance: select``
      uses, so the two are comparable: 1 on the actions that execute while the model thinks,
      decaying to 0 at ``H - s``. Zero for every candidate when ``prev`` or ``weights`` is None
      (an episode's first chunk) or ``W = 0``.
    - ``forward_k = mean_{j != k} sum_i ||c_k,i - c_j,i|| - mean_m sum_i ||c_k,i - weak_m,i||``:
      close to the other strong samples (the positive set; a medoid rule, so a sample inside the
      policy's dominant mode wins over an outlier) and far from the ``weak`` policy's samples (the
      negative set; an earlier checkpoint's mistakes). The first mean is 0 with K = 1, the second
      with no weak samples (``weak`` None or empty).

    Shapes: ``candidates`` ``(K, H, action_dim)``, ``prev`` ``(H, action_dim)`` (model space,
    zero-padded to H), ``weights`` ``(H,)``, ``weak`` ``(M, H, action_dim)``.
    """
    c = np.asarray(candidates.detach().cpu() if isinstance(candidates, torch.Tensor) else candidates, np.float64)
    if c.ndim != 3 or c.shape[0] < 1:
        raise ValueError(f"candidates shape {c.shape} is not (K >= 1, H, action_dim)")
    k, h = c.shape[:2]
    backward = np.zeros(k, np.float64)
    if prev is not None and weights is not None:
        y = np.asarray(prev.detach().cpu() if isinstance(prev, torch.Tensor) else prev, np.float64)
        w = np.asarray(weights.detach().cpu() if isinstance(weights, torch.Tensor) else weights, np.float64)
        if y.shape != c.shape[1:]:
            raise ValueError(f"prev shape {y.shape} does not match the candidates' {c.shape[1:]}")
        if w.shape != (h,):
            raise ValueError(f"weights shape {w.shape} != (H,) = ({h},)")
        backward = stepwise_distances(c, y[None])[:, 0] @ w
    positive = stepwise_distances(c, c).sum(axis=-1)  # (K, K), zero diagonal
    forward = positive.sum(axis=1) / (k - 1) if k > 1 else np.zeros(k, np.float64)
    if weak is not None:
        n = np.asarray(weak.detach().cpu() if isinstance(weak, torch.Tensor) else weak, np.float64)
        if n.size:
            forward = forward - stepwise_distances(c, n).sum(axis=-1).mean(axis=1)
    return backward, forward


def bid_select(
    candidates: torch.Tensor | np.ndarray,
    prev: torch.Tensor | np.ndarray | None,
    weights: torch.Tensor | np.ndarray | None,
    weak: torch.Tensor | np.ndarray | None,
) -> BidChoice:
    """Bidirectional decoding's choice: the candidate with the lowest ``backward + forward``
    (:func:`bid_costs`; the paper sums the two criteria unweighted), the first on a tie."""
    backward, forward = bid_costs(candidates, prev, weights, weak)
    return BidChoice(int(np.argmin(backward + forward)), backward, forward)
