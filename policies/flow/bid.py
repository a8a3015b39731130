"""The weak policy of bidirectional decoding (``guidance: bid``, ``policy.bid_weak_checkpoint``).

Bidirectional decoding (Liu et al. 2024) contrasts the policy's samples with those of a weaker
policy: an earlier checkpoint of the same model, whose mistakes the strong samples should stay away
from (``policies.guidance.bid_select``). This module loads that checkpoint next to the strong one,
checks that it answers the same observation with chunks of the same shape, and samples it.

Both networks must describe the same model space for their chunks to be compared. An earlier
checkpoint of the same training run has the same normalization statistics and needs nothing; where
the two ``stats.json`` differ (a checkpoint trained on another draw of the same data), the weak
network's input state and output chunks are mapped through robot units into the strong
checkpoint's space, exactly (the normalization is affine per dimension).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from policies.flow.checkpoint import STATS, load_model_named, resolve_path
from policies.flow.model import FlowModel, FlowModelConfig
from policies.guidance import euler_sample
from policies.normalize import Normalizer

BUNDLED_DIR = "policies/flow/checkpoints"  # where a bare checkpoint name is looked up


def resolve_checkpoint(value: str | Path) -> Path:
    """A checkpoint directory from a path (relative ones against the repository root) or from the
    name of a checkpoint bundled in ``policies/flow/checkpoints/`` (``transfer_cube_prefix``)."""
    path = resolve_path(value)
    if path.is_dir():
        return path
    bundled = resolve_path(BUNDLED_DIR) / str(value)
    return bundled if bundled.is_dir() else path


def _stats(directory: Path) -> Normalizer | None:
    """The checkpoint's normalizer, or None where it has no ``stats.json``."""
    path = directory / STATS
    return Normalizer.from_file(path) if path.is_file() else None


def _same_stats(a: Path, b: Path) -> bool:
    pa, pb = a / STATS, b / STATS
    if not (pa.is_file() and pb.is_file()):
        return True  # nothing says the spaces differ: taken as the same
    return json.loads(pa.read_text()) == json.loads(pb.read_text())


class WeakPolicy:
    """The weak checkpoint, loaded on ``device`` and frozen; samples chunks in the strong model's space.

    ``load`` raises ``ValueError`` for a checkpoint that is missing, cannot be loaded, or whose
    chunk size, action and state dims, cameras or image size differ from the strong model's.
    """

    def __init__(
        self,
        checkpoint: Path,
        model: FlowModel,
        state_map: Callable[[np.ndarray], np.ndarray] | None,
        action_map: Callable[[np.ndarray], np.ndarray] | None,
    ) -> None:
        self.checkpoint = checkpoint
        self.model = model
        self.state_map = state_map  # strong model space -> weak model space (None: the same space)
        self.action_map = action_map  # weak model space -> strong model space
        self.model.eval()
        self.model.requires_grad_(False)

    @classmethod
    def load(
        cls, value: str | Path, strong: FlowModelConfig, strong_checkpoint: Path, device: torch.device | str = "cpu"
    ) -> WeakPolicy:
        checkpoint = resolve_checkpoint(value)
        model, _ = load_model_named(
            checkpoint, f"weak checkpoint {value!r} ({checkpoint})", f"weak checkpoint {checkpoint}"
        )
        check_compatible(model.cfg, strong, checkpoint, strong_checkpoint)
        state_map = action_map = None
        if not _same_stats(checkpoint, strong_checkpoint):
            weak_norm, strong_norm = _stats(checkpoint), _stats(strong_checkpoint)

            def state_map(s: np.ndarray) -> np.ndarray:
                return weak_norm.to_model("state", strong_norm.to_robot("state", s))

            def action_map(a: np.ndarray) -> np.ndarray:
                return strong_norm.to_model("action", weak_norm.to_robot("action", a))

        return cls(checkpoint, model.to(device), state_map, action_map)

    def sample(
        self,
        state: torch.Tensor,
        images: torch.Tensor,
        noise: torch.Tensor,
        num_steps: int,
        autocast: Callable[[], Any],
        repeats: int = 1,
    ) -> np.ndarray:
        """``noise.shape[0]`` plain chunks ``(N, H, action_dim)`` float32 in the strong model's space,
        sampled in one batch with each observation encoded once: for one observation (``state``
        ``(1, state_dim)`` in the strong model's space, ``images`` ``(1, cams, 3, h, w)``), or for B of
        them with ``repeats`` chunks each (``N = B * repeats``, observation i's chunks in a row)."""
        with torch.inference_mode():
            if self.state_map is not None:
                state = torch.as_tensor(self.state_map(state.cpu().numpy()), device=state.device)
            with autocast():
                prefix = self.model.encode_prefix(state, images).repeat(repeats)

            def velocity(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
                with autocast():
                    return self.model.velocity(prefix, a, tau).float()

            chunks = euler_sample(velocity, noise, num_steps).float().cpu().numpy()
        return chunks if self.action_map is None else self.action_map(chunks)


def check_compatible(
    weak: FlowModelConfig, strong: FlowModelConfig, weak_checkpoint: Any, strong_checkpoint: Any
) -> None:
    """The weak checkpoint must read the same observation and write chunks of the same shape as the
    strong one: ``ValueError`` naming the first field that differs."""
    for name in ("chunk_size", "action_dim", "state_dim", "camera_names", "image_size"):
        w, s = getattr(weak, name), getattr(strong, name)
        if tuple(np.atleast_1d(w)) != tuple(np.atleast_1d(s)):
            raise ValueError(
                f"weak checkpoint {weak_checkpoint} has {name}={w!r} but the policy's checkpoint "
                f"{strong_checkpoint} has {name}={s!r} (they must match)"
            )
