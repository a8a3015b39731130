"""Per-key normalization between robot space and a policy's model space.

Modes (per key): ``zscore`` (x - mean) / (std + eps); ``minmax`` to [-1, 1]; ``quantile`` to
[-1, 1] by q01/q99 (as pi0.5 does, robust to outliers); ``identity``. Images are scaled from uint8
to float32 [0, 1]. Stats files hold, for the keys ``state`` and ``action``, the arrays mean, std,
min, max, q01, q99 (JSON, NPZ with ``<key>.<stat>`` names, or safetensors with the same names).

No key is ever identity by omission: a key is normalized only by the mode it was given (``modes``,
or the stats file's own ``modes``), and ``require`` refuses a key without one. A stats file that lost
its ``action`` entry must not quietly send model-unit actions to a robot.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from policies.base import PolicyInput

REPO_ROOT = Path(__file__).resolve().parents[1]
MODES = ("zscore", "minmax", "quantile", "identity")
STATS = ("mean", "std", "min", "max", "q01", "q99")
KEYS = ("state", "action")
_NEEDS = {"zscore": ("mean", "std"), "minmax": ("min", "max"), "quantile": ("q01", "q99"), "identity": ()}


class NormalizerError(ValueError):
    """Stats are missing, malformed or do not match the data's dimension."""


class Normalizer:
    def __init__(
        self,
        stats: Mapping[str, Mapping[str, Any]] | None = None,
        modes: Mapping[str, str] | None = None,
        eps: float = 1e-6,
    ) -> None:
        self.modes = dict(modes or {})  # no default: a key without a mode cannot be normalized
        self.eps = float(eps)
        self.stats: dict[str, dict[str, np.ndarray]] = {}
        for key, mode in self.modes.items():
            if mode not in MODES:
                raise NormalizerError(f"normalizer mode for {key!r} is {mode!r}; expected one of {MODES}")
            missing = [s for s in _NEEDS[mode] if s not in (stats or {}).get(key, {})]
            if missing:
                raise NormalizerError(f"normalizer: stats for {key!r} lack {missing} needed by mode {mode!r}")
        for key, per_key in (stats or {}).items():
            self.stats[key] = {s: np.asarray(v, dtype=np.float64) for s, v in per_key.items()}

    # ----------------------------------------------------------------- construction
    @classmethod
    def identity(cls) -> Normalizer:
        """Robot space is model space for every key (policies that normalize inside, or none)."""
        return cls(modes={key: "identity" for key in KEYS})

    @classmethod
    def from_file(cls, path: str | Path, modes: Mapping[str, str] | None = None, eps: float = 1e-6) -> Normalizer:
        path = Path(path)
        if not path.is_absolute() and not path.is_file():
            # relative paths in configs are relative to the repository (like policy checkpoints),
            # so a run started from another directory still finds the bundled stats
            path = REPO_ROOT / path
        if not path.is_file():
            raise NormalizerError(f"normalizer: stats file {path} does not exist")
        if path.suffix == ".json":
            raw = json.loads(path.read_text())
            stats = raw.get("stats", raw)
            modes = modes or raw.get("modes")  # explicit modes replace the file's (no key is added either way)
        elif path.suffix == ".npz":
            with np.load(path) as data:
                stats = _unflatten({name: data[name] for name in data.files})
        elif path.suffix == ".safetensors":
            from safetensors.numpy import load_file

            stats = _unflatten(load_file(str(path)))
        else:
            raise NormalizerError(f"normalizer: unsupported stats file type {path.suffix!r} ({path})")
        return cls(stats, modes or {"state": "zscore", "action": "zscore"}, eps)

    @staticmethod
    def compute_stats(arrays: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
        """Stats per key over axis 0 of (N, D) arrays."""
        out = {}
        for key, values in arrays.items():
            x = np.asarray(values, dtype=np.float64).reshape(-1, np.shape(values)[-1])
            out[key] = {
                "mean": x.mean(0),
                "std": x.std(0),
                "min": x.min(0),
                "max": x.max(0),
                "q01": np.quantile(x, 0.01, axis=0),
                "q99": np.quantile(x, 0.99, axis=0),
            }
        return out

    def save(self, path: str | Path) -> None:
        path = Path(path)
        payload = {
            "modes": self.modes,
            "eps": self.eps,
            "stats": {k: {s: v.tolist() for s, v in st.items()} for k, st in self.stats.items()},
        }
        path.write_text(json.dumps(payload, indent=1))

    # ----------------------------------------------------------------- transforms
    def require(self, key: str, dim: int) -> None:
        """Fail at start if ``key`` cannot be normalized at dimension ``dim``: it has a mode, and the
        stats that mode needs, at that dimension."""
        mode = self.mode(key)
        for stat in _NEEDS[mode]:
            arr = self.stats[key][stat]
            if arr.shape[-1] != dim:
                raise NormalizerError(f"normalizer: stats {key}.{stat} have dim {arr.shape[-1]}, data has dim {dim}")

    def mode(self, key: str) -> str:
        """``key``'s mode; a key without one is an error, never identity by default."""
        if key not in self.modes:
            raise NormalizerError(
                f"normalizer: no mode for {key!r} (modes given: {self.modes or 'none'}); give it one of {MODES}, "
                f"with the stats that mode needs"
            )
        return self.modes[key]

    def _scale_offset(self, key: str) -> tuple[np.ndarray | float, np.ndarray | float]:
        """(scale, offset) with model = (robot - offset) / scale."""
        mode = self.mode(key)
        st = self.stats.get(key, {})
        if mode == "zscore":
            return st["std"] + self.eps, st["mean"]
        if mode in ("minmax", "quantile"):
            lo, hi = (st["min"], st["max"]) if mode == "minmax" else (st["q01"], st["q99"])
            return (hi - lo) / 2.0 + self.eps, (hi + lo) / 2.0
        return 1.0, 0.0

    def to_model(self, key: str, x: np.ndarray) -> np.ndarray:
        scale, offset = self._scale_offset(key)
        return ((np.asarray(x, dtype=np.float64) - offset) / scale).astype(np.float32)

    def to_robot(self, key: str, x: np.ndarray) -> np.ndarray:
        scale, offset = self._scale_offset(key)
        return (np.asarray(x, dtype=np.float64) * scale + offset).astype(np.float32)

    def state_to_model(self, x: np.ndarray) -> np.ndarray:
        return self.to_model("state", x)

    def action_to_model(self, x: np.ndarray) -> np.ndarray:
        return self.to_model("action", x)

    def action_to_robot(self, x: np.ndarray) -> np.ndarray:
        return self.to_robot("action", x)

    @staticmethod
    def image_to_model(images: np.ndarray) -> np.ndarray:
        return np.asarray(images, dtype=np.float32) * (1.0 / 255.0)

    def policy_input(
        self,
        state_hist: np.ndarray,
        images: Mapping[str, np.ndarray] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> PolicyInput:
        """Robot-space history -> model-space ``PolicyInput``.

        state_hist: (T, state_dim) robot units; images: name -> (N, 3, H, W) uint8.
        """
        return PolicyInput(
            state=self.state_to_model(state_hist),
            images={k: self.image_to_model(v) for k, v in (images or {}).items()},
            info=dict(info or {}),
        )


def _unflatten(flat: Mapping[str, np.ndarray]) -> dict[str, dict[str, np.ndarray]]:
    out: dict[str, dict[str, np.ndarray]] = {}
    for name, value in flat.items():
        key, _, stat = name.rpartition(".")
        if not key or stat not in STATS:
            raise NormalizerError(f"normalizer: unexpected entry {name!r} in stats file")
        out.setdefault(key, {})[stat] = np.asarray(value)
    return out
