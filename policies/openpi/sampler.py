"""openpi's flow sampler, driven from our (RTC-guidable) Euler loop.

Time conventions — the one thing to get right here:

- openpi (``PI0Pytorch.sample_actions``): ``x_t = t * noise + (1 - t) * actions``, the network
  predicts ``u = noise - actions``, and sampling runs from ``t = 1`` (noise) to ``t = 0`` (data)
  with ``dt = -1 / n``: ``x <- x + dt * v_openpi(x, t)``.
- ours (policies/guidance.py, the RTC paper): ``A_tau = tau * data + (1 - tau) * noise``, tau from
  0 (noise) to 1 (data), ``A <- A + v(A, tau) / n``.

Substituting ``t = 1 - tau`` gives the same path, and ``dA/dtau = -dx/dt``, so

    v_ours(A, tau) = -v_openpi(A, t = 1 - tau)

With that mapping our unguided Euler loop visits openpi's times 1, 1 - 1/n, ..., 1/n and
reproduces ``sample_actions`` step for step (tests/test_openpi_adapter.py checks it against a
stand-in denoiser with openpi's convention, and that the unmapped version does not). Guidance
(``guided_euler_sample``) then works in our convention unchanged, in openpi's *model* space
(normalized, padded actions), never in robot units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from policies.guidance import euler_sample, guided_euler_sample


@dataclass
class OpenPIPrefix:
    """What every denoising step reuses: the state, the prefix padding mask, the prefix KV cache."""

    state: Any
    prefix_pad_masks: Any
    past_key_values: Any
    batch_size: int


def openpi_prefix(model: Any, observation: Any) -> OpenPIPrefix:
    """The preamble of openpi's ``PI0Pytorch.sample_actions``: embed images + prompt once, cache KV."""
    from openpi.models_pytorch.pi0_pytorch import make_att_2d_masks

    images, img_masks, lang_tokens, lang_masks, state = model._preprocess_observation(observation, train=False)
    prefix_embs, prefix_pad_masks, prefix_att_masks = model.embed_prefix(images, img_masks, lang_tokens, lang_masks)
    prefix_att_2d_masks = make_att_2d_masks(prefix_pad_masks, prefix_att_masks)
    prefix_position_ids = torch.cumsum(prefix_pad_masks, dim=1) - 1
    prefix_att_2d_masks_4d = model._prepare_attention_masks_4d(prefix_att_2d_masks)
    model.paligemma_with_expert.paligemma.language_model.config._attn_implementation = "eager"
    _, past_key_values = model.paligemma_with_expert.forward(
        attention_mask=prefix_att_2d_masks_4d,
        position_ids=prefix_position_ids,
        past_key_values=None,
        inputs_embeds=[prefix_embs, None],
        use_cache=True,
    )
    return OpenPIPrefix(state, prefix_pad_masks, past_key_values, int(state.shape[0]))


PrefixFn = Callable[[Any, Any], OpenPIPrefix]


class NotDifferentiableError(RuntimeError):
    """The model's denoising step cannot be differentiated w.r.t. its noisy actions (a compiled or
    ``no_grad`` denoiser, parameters outside autograd): the caller may blend instead. Any other error
    from the guided sampler (a shape mismatch, a NaN) is a bug and propagates unchanged."""


# What torch says when the graph from x_t to the velocity is cut (autograd.grad on a detached output).
_DETACHED_MESSAGES = ("does not require grad", "does not have a grad_fn", "One of the differentiated Tensors appears")


class OpenPIFlowSampler:
    """Samples openpi's action expert with our Euler loop, optionally with RTC VJP guidance.

    ``model`` is openpi's ``PI0Pytorch`` (anything with ``denoise_step(state, prefix_pad_masks,
    past_key_values, x_t, timestep)`` in openpi's convention); ``prefix_fn`` builds the per-
    observation prefix (default: openpi's own preamble).
    """

    def __init__(self, model: Any, num_steps: int = 10, prefix_fn: PrefixFn = openpi_prefix) -> None:
        if num_steps <= 0:
            raise ValueError(f"num_inference_steps must be positive, got {num_steps}")
        self.model = model
        self.num_steps = int(num_steps)
        self.prefix_fn = prefix_fn

    def prefix(self, observation: Any) -> OpenPIPrefix:
        with torch.no_grad():
            return self.prefix_fn(self.model, observation)

    def velocity(self, prefix: OpenPIPrefix) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """Our ``v(A, tau)`` from openpi's ``denoise_step``: t = 1 - tau, sign flipped."""

        def v(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            t = (1.0 - tau).to(dtype=torch.float32).expand(prefix.batch_size)
            v_openpi = self.model.denoise_step(prefix.state, prefix.prefix_pad_masks, prefix.past_key_values, a, t)
            if a.requires_grad and torch.is_grad_enabled() and not v_openpi.requires_grad:
                # e.g. a compiled/no_grad denoiser: the VJP would silently use an identity Jacobian
                raise NotDifferentiableError("openpi denoise_step output is detached from x_t")
            return -v_openpi.to(a.dtype)

        return v

    def sample(self, observation: Any, noise: torch.Tensor) -> torch.Tensor:
        """Unguided: equals openpi's ``sample_actions(device, observation, noise, num_steps)``."""
        prefix = self.prefix(observation)
        with torch.no_grad():
            return euler_sample(self.velocity(prefix), noise, self.num_steps)

    def guided_sample(
        self, observation: Any, noise: torch.Tensor, prev: torch.Tensor | np.ndarray, weights: np.ndarray, beta: float
    ) -> torch.Tensor:
        """RTC guidance toward ``prev`` (openpi model space, (B, H, D) or (H, D)) on the weighted prefix.

        Raises ``NotDifferentiableError`` when the model cannot be differentiated (the caller blends
        instead); anything else (e.g. ``prev`` or ``weights`` not matching the noise) raises as the bug it is.
        """
        prefix = self.prefix(observation)
        prev_t = torch.as_tensor(np.asarray(prev, dtype=np.float32) if not isinstance(prev, torch.Tensor) else prev)
        prev_t = prev_t.to(device=noise.device, dtype=noise.dtype)
        if prev_t.ndim == noise.ndim - 1:
            prev_t = prev_t.expand_as(noise)
        try:
            with torch.no_grad():
                return guided_euler_sample(self.velocity(prefix), noise, prev_t, weights, self.num_steps, beta)
        except RuntimeError as exc:
            if isinstance(exc, NotDifferentiableError) or not any(m in str(exc) for m in _DETACHED_MESSAGES):
                raise
            raise NotDifferentiableError(str(exc)) from exc
