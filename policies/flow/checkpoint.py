"""Checkpoint directory layout for the flow policy.

A checkpoint is a directory with ``model.safetensors`` (weights), ``config.json`` (the
:class:`FlowModelConfig` under ``"model"`` plus free-form ``"meta"`` such as training settings and
``meta.control_hz``, the rate in Hz the training data was recorded at) and ``stats.json`` (normalization statistics, written by ``policies.normalize.Normalizer.save``).
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

from policies.control_rate import ControlRate, positive_hz, read_json
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
    directory: str | Path, model: FlowModel, normalizer: Any | None = None, meta: dict[str, Any] | None = None
) -> Path:
    """Write weights (float32 safetensors), config.json and, if given, stats.json. ``meta`` should
    carry ``control_hz`` (the data's rate): a run at another ``robot.hz`` is then refused at start."""
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


def control_rate(directory: str | Path) -> ControlRate | None:
    """The control rate the checkpoint was trained at: config.json's ``meta.control_hz``, else the
    data rate its recorded training settings name (``meta.config.data.hz``); None when neither says.
    A ``control_hz`` that is not a positive number is a ValueError (a broken checkpoint, not an unknown rate)."""
    path = resolve_path(directory) / CONFIG
    data = read_json(path)
    if not isinstance(data, dict):
        return None
    meta = data.get("meta") if isinstance(data.get("meta"), dict) else {}
    if "control_hz" in meta:
        hz = positive_hz(meta["control_hz"])
        if hz is None:
            raise ValueError(f"{path}: meta.control_hz={meta['control_hz']!r} is not a positive number of Hz")
        return ControlRate(hz, f"{path} (meta.control_hz)")
    recorded: Any = data
    for key in ("meta", "config", "data", "hz"):
        recorded = recorded.get(key) if isinstance(recorded, dict) else None
    hz = positive_hz(recorded)
    return ControlRate(hz, f"{path} (meta.config.data.hz)") if hz is not None else None


def load_model(directory: str | Path, map_location: str | torch.device = "cpu") -> tuple[FlowModel, dict[str, Any]]:
    """Build the model from config.json and load its weights (strict)."""
    cfg, meta = load_config(directory)
    model = FlowModel(cfg)
    weights = resolve_path(directory) / WEIGHTS
    if not weights.is_file():
        raise FileNotFoundError(f"flow checkpoint weights not found: {weights}")
    model.load_state_dict(load_file(str(weights), device=str(map_location)))
    return model, meta


def load_model_named(directory: Path, missing: str, broken: str) -> tuple[FlowModel, dict[str, Any]]:
    """``load_model`` on the CPU with one ValueError line per way a checkpoint can be unusable:
    ``"<missing>: <what is absent>"`` or ``"<broken> cannot be loaded: <why>"`` (truncated weights,
    a corrupt config.json, wrong tensors), so a start-time check can name the key that pointed here."""
    try:
        return load_model(directory, map_location="cpu")
    except FileNotFoundError as exc:
        raise ValueError(f"{missing}: {exc}") from None
    except Exception as exc:  # noqa: BLE001 - truncated weights, corrupt config.json, wrong tensors
        raise ValueError(
            f"{broken} cannot be loaded: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
        ) from None


def stats_path(directory: str | Path = DEFAULT_CHECKPOINT) -> Path:
    return resolve_path(directory) / STATS
