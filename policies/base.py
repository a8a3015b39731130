"""The policy contract (a Protocol: no base class to inherit).

A policy works in its *model space*: normalized state in, normalized action chunk out. The engine
owns normalization (``policies.normalize``) so that RTC can hand the previous chunk back to the
policy in the same space the model produced it (docs/rtc.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, Protocol, runtime_checkable

import numpy as np

from services.guidance import Guidance


class Schedule(StrEnum):
    """Soft-mask schedule over the ``H - d - s`` intermediate actions (``algorithm.schedule``);
    ``zeros`` is the hard mask (only the first ``d`` actions guided)."""

    EXP = "exp"
    LINEAR = "linear"
    ONES = "ones"
    ZEROS = "zeros"


# Guidance a policy may lack, and the ``PolicyMetadata`` flag that says it has it (the others -- vjp
# through ``supports_vjp``, blend, none -- every policy with ``guided_inference`` takes).
GUIDANCE_CAPABILITY: dict[Guidance, str] = {
    Guidance.TRAINED: "supports_trained",
    Guidance.IDENTITY: "supports_identity",
    Guidance.SELECT: "supports_select",
    Guidance.BID: "supports_bid",
}


def capability_flag(guidance: Guidance | str) -> str | None:
    """The ``PolicyMetadata`` flag ``guidance`` needs (None: every guided policy takes it, or it is
    not a guidance kind at all, which the caller's own check names)."""
    return GUIDANCE_CAPABILITY.get(Guidance(guidance)) if guidance in tuple(Guidance) else None


def missing_capability(policy: Any, guidance: Guidance | str) -> str | None:
    """Why ``policy`` cannot run ``guidance`` (one line naming its metadata flag), or None if it can."""
    flag = capability_flag(guidance)
    if flag is None or getattr(getattr(policy, "metadata", None), flag, False):
        return None
    return f"policy {type(policy).__name__} does not support guidance={guidance} (metadata.{flag} is False)"


@dataclass(frozen=True)
class PolicyMetadata:
    """What the engine must know about a policy before running it.

    ``chunk_size`` is H (actions per chunk); ``state_history`` the number of past proprio samples
    it takes; ``num_img_obs`` the number of frames per camera; ``image_size`` (height, width).
    """

    chunk_size: int
    action_dim: int
    state_dim: int
    camera_names: tuple[str, ...] = ()
    image_size: tuple[int, int] | None = None
    state_history: int = 1
    num_img_obs: int = 1
    supports_vjp: bool = False
    needs_privileged: bool = False
    supports_trained: bool = False  # ``guidance: trained`` (the model was trained with clean action prefixes)
    supports_identity: bool = False  # ``guidance: identity`` (a flow/diffusion sampler it can guide step by step)
    supports_select: bool = False  # ``guidance: select`` (it can sample several chunks for one observation)
    supports_bid: bool = (
        False  # ``guidance: bid`` (it samples several chunks, and has a weak policy to contrast them with)
    )


@dataclass
class PolicyInput:
    """One observation in model space.

    state: (state_history, state_dim) float32, normalized.
    images: camera name -> (num_img_obs, 3, H, W) float32 in [0, 1].
    info: privileged extras (sim state) for policies with ``needs_privileged``; else empty.
    """

    state: np.ndarray
    images: dict[str, np.ndarray] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)


@runtime_checkable
class Policy(Protocol):
    metadata: PolicyMetadata

    def predict(self, obs: PolicyInput) -> np.ndarray:
        """Return a chunk (chunk_size, action_dim) float32 in model space."""
        ...

    def guided_inference(
        self,
        obs: PolicyInput,
        prev_chunk: np.ndarray,
        delay: int,
        execute_horizon: int,
        guidance: Guidance = "vjp",
        schedule: Schedule = "exp",
        max_guidance_weight: float = 5.0,
    ) -> np.ndarray:
        """Return a chunk that continues ``prev_chunk`` (model space, zero-padded to H).

        ``delay`` (d) actions of the new chunk will be executed before it takes over, so they
        should match ``prev_chunk[:d]``; the last ``execute_horizon`` (s) are free.
        """
        ...

    def warmup(self) -> None: ...

    def freeze(self) -> None: ...


def capped_guided_end(H: int, d: int, s: int, cap_ticks: int | None) -> int:
    """Where the soft-guided region ends when it is capped at ``cap_ticks`` actions past the delay:
    ``min(H - s, d + cap_ticks)`` (``None``: the paper's ``H - s``). A cap keeps the committed
    actions and the next few consistent while leaving the rest of the overlap free to react to a
    world that changed since the previous chunk was planned."""
    if cap_ticks is not None and cap_ticks < 0:
        raise ValueError(f"guided-region cap {cap_ticks} must be >= 0 (or None: no cap)")
    if not 0 <= s <= H:
        raise ValueError(f"execution horizon s={s} must be within [0, H={H}]")
    end = H - s
    return end if cap_ticks is None else min(end, max(0, d) + int(cap_ticks))


def capped_execute_horizon(H: int, d: int, s: int, cap_ticks: int | None) -> int:
    """The execution horizon to hand a policy's ``guided_inference`` so that its soft-guided region
    is capped at ``cap_ticks`` past the delay: ``H - capped_guided_end(...)``. The region's end
    (``H - s``) is the only place the horizon enters the weights, so any policy that builds them
    with ``policies.guidance.prefix_weights`` gets the capped mask without knowing about the cap."""
    return H - capped_guided_end(H, d, s, cap_ticks)


def policy_info(policy: Any) -> dict[str, Any]:
    """What a policy reported with its last chunk (``last_info()``: e.g. bidirectional decoding's
    choice, a remote policy's server time); empty for a policy that reports nothing."""
    info = getattr(policy, "last_info", None)
    return dict(info()) if callable(info) else {}
