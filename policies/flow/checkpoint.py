"""Checkpoint directory layout for the flow policy.

A checkpoint is a directory with ``model.safetensors`` (weights), ``config.json`` (the
:class:`FlowModelConfig` under ``"model"`` plus free-form ``"meta"`` such as training settings)
and ``stats.json`` (normalization statistics, written by ``policies.normalize.Normalizer.save``).
Relative paths are resolved against the repository root, not the working directory, so a Hydra
run directory as cwd does not break the bundled default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from policies.flow.model import FlowModel, FlowModelConfig

logger = logging.getLogger(__name__)

REPO_ROOT = Path(__file__).resolve().parents[2]
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
STATS = "stats.json"
DEFAULT_CHECKPOINT = "policies/flow/checkpoints/transfer_cube"


def resolve_path(path: str | Path) -> Path:
    """Absolute path; a relative one is taken relative to the repository root."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else REPO_ROOT / p


def save_checkpoint(
    directory: str | Path,
    model: FlowModel,
    normalizer: Any | None = None,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Write weights (float32 safetensors), config.json and, if given, stats.json."""
    out = resolve_path(directory)
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().float().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(out / WEIGHTS))
    (out / CONFIG).write_text(json.dumps({"model": model.cfg.to_dict(), "meta": meta or {}}, indent=2))
    if normalizer is not None:
        normalizer.save(out / STATS)
    logger.info("saved flow checkpoint to %s", out)
    return out


def load_config(directory: str | Path) -> tuple[FlowModelConfig, dict[str, Any]]:
    path = resolve_path(directory) / CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"flow checkpoint config not found: {path}")
    data = json.loads(path.read_text())
    return FlowModelConfig.from_dict(data["model"]), data.get("meta", {})


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[FlowModel, dict[str, Any]]:
    """Build the model from config.json and load its weights (strict)."""
    cfg, meta = load_config(directory)
    model = FlowModel(cfg)
    weights = resolve_path(directory) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"flow checkpoint weights not found: {weights}")
    model.load_state_dict(load_file(str(weights), device=str(map_location)))
    return model, meta


def stats_path(directory: str | Path = DEFAULT_CHECKPOINT) -> Path:
    return resolve_path(directory) / STATS
