"""Batched real-time-chunking inference: B requests from different robots in ONE sampling call.

A fleet server gets requests that differ in everything RTC cares about: each robot has its own
delay ``d``, execution horizon ``s``, previous chunk, guidance kind and guidance strength. They still
share one network, so one batched call per Euler step serves them all:

- per-sample inpainting weights ``W`` as rows ``(B, H)`` (``prefix_weights`` of each request's own
  ``d``/``s``/schedule) and per-sample guidance strengths ``beta`` ``(B,)``;
- VJP guidance takes ONE reverse pass for the whole batch: the samples do not interact inside the
  model (attention, norms and MLPs act within a sample), so the gradient of
  ``sum_i <err_i, A1_hat_i>`` w.r.t. the batch holds each sample's own VJP;
- an unguided row (``guidance: none``, or a first chunk) has ``W = 0``: it gets no guidance term;
- ``blend`` is an unguided row blended toward ``prev`` after sampling;
- ``trained`` (prefix-conditioned, for checkpoints trained so) rows carry per-token flow times: their
  first ``d`` tokens sit clean at flow time 1 and are never integrated;
- ``select`` and ``bid`` requests sample a batch of candidates of their own (bid's from the policy
  and from its weak checkpoint) and keep one: they are not rows of the shared call. ``infer_batch``
  gives the ``bid`` requests to the policy's ``bid_inference_batch`` together where it has one (the
  flow policy: two sampling calls for all of them), and runs the others alone through
  ``guided_inference``.

So a request in a batch gets the chunk it would get alone (same noise), to float tolerance: only the
order of floating-point sums inside batched matrix products differs. The math for one chunk stays in
``policies.guidance``; this module is its batched form and the batch bookkeeping.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from policies.base import Guidance, PolicyInput, missing_capability, policy_info
from policies.guidance import blend, guidance_weight, padded_prev, prefix_weights, vjp_step
from policies.runner import Guide

log = logging.getLogger(__name__)

VelocityFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

# Guidance that draws several candidates per request and keeps one (select: K from the policy; bid: N
# from the policy and N from its weak checkpoint): such a request is already a batch of its own, so
# ``plan_batch`` refuses it as a row; ``infer_batch`` runs it alone through ``guided_inference``, or
# (bid) with the other bid requests through the policy's ``bid_inference_batch``.
SAMPLES_OWN_BATCH = (Guidance.SELECT, Guidance.BID)


@dataclass(frozen=True)
class BatchRequest:
    """One robot's request in model space: the normalized input and the ``Guide`` every transport
    carries (None, or ``guidance: none``, asks for a plain chunk; else the chunk continues
    ``guide.prev_model``, zero-padded to H, as ``Policy.guided_inference``). ``noise``
    ``(H, action_dim)`` replaces the policy's draw (reproducibility, tests)."""

    inp: PolicyInput
    guide: Guide | None = None
    noise: np.ndarray | None = None

    @property
    def kind(self) -> Guidance:
        return guide_kind(self.guide)


def guide_kind(guide: Guide | None) -> Guidance:
    """The guidance a request applies (one without a guide is unguided)."""
    return Guidance.NONE if guide is None else Guidance(guide.guidance)


def batched_guided_sample(
    velocity_fn: VelocityFn,
    noise: torch.Tensor,
    prev: torch.Tensor,
    weights: torch.Tensor,
    betas: torch.Tensor,
    clean: torch.Tensor,
    num_steps: int,
    identity: torch.Tensor | None = None,
) -> torch.Tensor:
    """Euler sampling of a batch with per-sample RTC guidance; ``policies.guidance`` per row.

    ``noise``/``prev`` ``(B, H, A)``; ``weights`` ``(B, H)`` (a zero row: no guidance for that
    sample); ``betas`` ``(B,)`` guidance strengths; ``clean`` ``(B, H)`` bool, the tokens of a
    trained-prefix row given clean at flow time 1 (``A = prev`` there, never integrated);
    ``identity`` ``(B,)`` bool, the guided rows whose correction skips the Jacobian
    (``guidance: identity``). Per step ``tau = k / num_steps``::

        A1_hat = A + (1 - tau) v(A, tau)
        g      = (dA1_hat/dA)^T [W * (prev - A1_hat)]    # VJP rows: one reverse pass for all of them
        g      = W * (prev - A1_hat)                     # identity rows: no reverse pass
        A      = A + free * (v + w_i(tau) g) / num_steps  # w_i(tau) = guidance_weight(tau, beta_i)

    With no VJP row no reverse pass is run. Returns a detached tensor.
    """
    if num_steps <= 0:
        raise ValueError(f"num_steps must be positive, got {num_steps}")
    b, h = noise.shape[:2]
    if prev.shape != noise.shape:
        raise ValueError(f"prev shape {tuple(prev.shape)} != noise shape {tuple(noise.shape)}")
    if weights.shape != (b, h) or clean.shape != (b, h) or betas.shape != (b,):
        raise ValueError(
            f"weights {tuple(weights.shape)} / clean {tuple(clean.shape)} must be (B, H) = ({b}, {h}) "
            f"and betas {tuple(betas.shape)} (B,)"
        )
    guided_rows = (weights != 0).any(dim=1) & (betas > 0)
    any_guided = bool(guided_rows.any())
    if identity is None:
        identity = torch.zeros((b,), dtype=torch.bool, device=noise.device)
    if identity.shape != (b,):
        raise ValueError(f"identity {tuple(identity.shape)} must be (B,) = ({b},)")
    id_rows = identity & guided_rows
    any_vjp = bool((guided_rows & ~identity).any())
    if any_vjp and torch.is_inference_mode_enabled():
        raise RuntimeError(
            "batched_guided_sample needs autograd for its VJP; call it under torch.no_grad(), not torch.inference_mode"
        )
    per_token = bool(clean.any())
    free = (~clean).to(noise.dtype)[..., None]
    w_col = weights.to(noise.dtype)[..., None]
    w_id = w_col * id_rows.to(noise.dtype)[:, None, None]  # identity rows' weights (others zero)
    w_vjp = w_col - w_id
    y = prev.to(noise.dtype)
    a = torch.where(clean[..., None], y, noise).detach()
    dt = 1.0 / num_steps
    for k in range(num_steps):
        tau_f = k * dt
        if per_token:
            tau = torch.where(
                clean,
                torch.ones((), dtype=noise.dtype, device=noise.device),
                torch.full((), tau_f, dtype=noise.dtype, device=noise.device),
            )
        else:
            tau = torch.full((), tau_f, dtype=noise.dtype, device=noise.device)
        if not any_guided:
            with torch.no_grad():
                v = velocity_fn(a, tau)
            a = a + dt * free * v
            continue
        if any_vjp:
            v, g = vjp_step(velocity_fn, a, tau, tau_f, y, w_vjp)
        else:
            with torch.no_grad():
                v = velocity_fn(a, tau)
            g = torch.zeros_like(a)
        g = g + w_id * (y - (a + (1.0 - tau_f) * v))  # identity_correction, per row
        w_tau = torch.tensor(
            [
                guidance_weight(tau_f, float(beta)) if row else 0.0
                for beta, row in zip(betas.tolist(), guided_rows.tolist())
            ],
            dtype=noise.dtype,
            device=noise.device,
        )[:, None, None]
        a = a + dt * free * (v + w_tau * g)
    return a.detach()


@dataclass(frozen=True)
class BatchPlan:
    """The per-row tensors of one batch in numpy (built before any torch work), and which rows are
    blended after sampling."""

    prev: np.ndarray  # (B, H, A) float32, zero-padded
    weights: np.ndarray  # (B, H) float32; zero rows: no guidance
    betas: np.ndarray  # (B,) float32
    clean: np.ndarray  # (B, H) bool: trained-prefix tokens
    identity: np.ndarray  # (B,) bool: guided rows without the Jacobian
    blend_weights: list[np.ndarray | None]  # per row: W of a blend row, else None


def plan_batch(
    requests: Sequence[BatchRequest], chunk_size: int, action_dim: int, train_prefix_max: int = 0
) -> BatchPlan:
    """Turn each request's guide (delay, execute horizon, guidance) into its rows; ``ValueError`` naming the row for a
    request the policy cannot serve (wrong ``prev`` shape, ``trained`` on an untrained checkpoint)."""
    b, h = len(requests), chunk_size
    prev = np.zeros((b, h, action_dim), np.float32)
    weights = np.zeros((b, h), np.float32)
    betas = np.zeros((b,), np.float32)
    clean = np.zeros((b, h), bool)
    identity = np.zeros((b,), bool)
    blends: list[np.ndarray | None] = [None] * b
    for i, req in enumerate(requests):
        kind, guide = req.kind, req.guide
        if kind == Guidance.NONE or guide is None:
            continue
        try:
            prev[i] = padded_prev(guide.prev_model, h, action_dim)
        except ValueError as exc:
            raise ValueError(f"batch row {i}: {exc}") from None
        if kind == Guidance.TRAINED:
            if train_prefix_max <= 0:
                raise ValueError(
                    f"batch row {i}: guidance=trained needs a checkpoint trained with action-prefix "
                    "conditioning (train_prefix_max > 0)"
                )
            d = max(0, min(int(guide.delay_ticks), h - int(guide.execute_horizon), train_prefix_max))
            clean[i, :d] = True
            continue
        w = prefix_weights(h, int(guide.delay_ticks), int(guide.execute_horizon), str(guide.schedule))
        if kind == Guidance.BLEND:
            blends[i] = w
        elif kind in (Guidance.VJP, Guidance.IDENTITY):
            weights[i] = w
            betas[i] = float(guide.max_guidance_weight)
            identity[i] = kind == Guidance.IDENTITY
        elif kind in SAMPLES_OWN_BATCH:
            raise ValueError(
                f"batch row {i}: guidance={kind} samples a batch of candidates of its own; it is run "
                "alone with guided_inference (infer_batch does), not as a row of a batched call"
            )
        else:
            raise ValueError(f"batch row {i}: unknown guidance {guide.guidance!r}")
    return BatchPlan(prev, weights, betas, clean, identity, blends)


def finish_blends(chunks: np.ndarray, plan: BatchPlan) -> list[np.ndarray]:
    """Per-row chunks, blend rows blended toward their ``prev`` (``policies.guidance.blend``)."""
    out = []
    for i, chunk in enumerate(chunks):
        w = plan.blend_weights[i]
        out.append(np.asarray(chunk, np.float32) if w is None else blend(plan.prev[i], chunk, w))
    return out


@dataclass(frozen=True)
class BatchResult:
    """One row's answer: chunks in model and robot space (float32 ``(H, A)``) or the error that kept
    this row out of the batch; ``policy_ms`` is the whole batch's call (shared by its rows);
    ``info``: what the policy reported with this row's chunk (e.g. bidirectional decoding's choice)."""

    model: np.ndarray | None
    robot: np.ndarray | None
    error: str | None
    policy_ms: float
    batch_size: int
    info: dict[str, float] = field(default_factory=dict)


def infer_batch(runner: Any, requests: Sequence[BatchRequest]) -> list[BatchResult]:
    """Run B normalized requests through the runner's policy: one ``guided_inference_batch`` call
    where the policy has it (the flow policy), else one call per row (policies without a batched
    sampler still serve a fleet, unbatched). A row the policy refuses gets its error; the others
    still run."""
    policy = runner.policy
    errors: list[str | None] = [missing_capability(policy, req.kind) for req in requests]
    ok = [i for i, e in enumerate(errors) if e is None]
    chunks: dict[int, np.ndarray] = {}
    infos: dict[int, dict[str, float]] = {}
    t0 = time.perf_counter()
    batched = getattr(policy, "guided_inference_batch", None)
    bid_batched = getattr(policy, "bid_inference_batch", None)
    bids = [i for i in ok if bid_batched is not None and requests[i].kind == Guidance.BID]
    # a select or bid row samples its own candidates as a batch (bid's from two networks): it runs on its
    # own, or the bid rows together
    single = [i for i in ok if i not in bids and (batched is None or requests[i].kind in SAMPLES_OWN_BATCH)]
    together = [i for i in ok if i not in single and i not in bids]
    if together:
        try:
            outs = batched([requests[i] for i in together])
            chunks = {i: out for i, out in zip(together, outs)}
        except ValueError as exc:  # a row the batch could not plan: run rows one by one to name it
            log.warning("batched inference refused the batch (%s); running its rows one by one", exc)
            single = [i for i in ok if i not in bids]
    if bids:
        try:
            for i, (chunk, info) in zip(bids, bid_batched([requests[i] for i in bids])):
                chunks[i], infos[i] = chunk, info
        except ValueError as exc:
            log.warning("batched bid refused the batch (%s); running its rows one by one", exc)
            single += bids
    for i in single:
        req = requests[i]
        try:
            if req.kind == Guidance.NONE:
                chunks[i] = policy.predict(req.inp)
            else:
                chunks[i] = runner.infer(req.inp, req.guide).model
                infos[i] = policy_info(policy)
        except ValueError as exc:
            errors[i] = str(exc)
    policy_ms = (time.perf_counter() - t0) * 1e3
    results = []
    for i in range(len(requests)):
        if i not in chunks:
            results.append(BatchResult(None, None, errors[i] or "no chunk", policy_ms, len(ok)))
            continue
        model = np.asarray(chunks[i], np.float32)
        robot = np.asarray(runner.normalizer.action_to_robot(model), np.float32) if model.ndim == 2 else model
        results.append(BatchResult(model, robot, None, policy_ms, len(ok), infos.get(i, {})))
    return results
