"""Our observation <-> an openpi-style request dict, by configuration (no code per robot).

openpi servers take a flat dict whose keys depend on the checkpoint's robot adapter, e.g. ALOHA
``{"state": (14,), "images": {"cam_high": (3, H, W) uint8, ...}, "prompt": str}`` or DROID/LIBERO
``{"observation/state": ..., "observation/image": (H, W, 3) uint8, "prompt": ...}``. A key may
contain ``/`` to mean nesting only when ``nested=True``; openpi's examples send flat keys with
slashes, so the default is flat.

``ObsKeyMap`` says where each of our parts goes:

- ``state``: key for the proprio state in robot units, newest sample ``(state_dim,)`` float32, or
  the whole history ``(T, state_dim)`` with ``state_history=True``;
- ``images``: our camera name -> key; the frame is uint8 ``(3, H, W)`` (``image_layout=chw``, our
  native layout) or ``(H, W, 3)`` (``hwc``, what most openpi adapters expect); with more than one
  frame per camera the frames stack on a leading axis;
- ``prompt``: key for the language instruction (``None``: none sent);
- ``info``: key for privileged extras (``None``: not sent; our scripted policy needs them).

The same map decodes a request on our server (inference/serve.py), so ``policy=openpi_remote``
against ``python -m inference.serve`` works with the defaults on both ends.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

DEFAULT_STATE_KEY = "observation/state"
DEFAULT_IMAGE_KEY = "observation/images/{camera}"
DEFAULT_PROMPT_KEY = "prompt"
LAYOUTS = ("chw", "hwc")


@dataclass(frozen=True)
class ObsKeyMap:
    state: str = DEFAULT_STATE_KEY
    images: Mapping[str, str] = field(default_factory=dict)
    prompt: str | None = DEFAULT_PROMPT_KEY
    info: str | None = None
    image_layout: str = "chw"
    state_history: bool = False

    def __post_init__(self) -> None:
        if self.image_layout not in LAYOUTS:
            raise ValueError(f"obs_keys.image_layout={self.image_layout!r}; expected one of {LAYOUTS}")

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any] | None, camera_names: tuple[str, ...] = ()) -> "ObsKeyMap":
        """Build from a config dict; cameras without an explicit key get ``observation/images/<name>``."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - {"state", "images", "prompt", "info", "image_layout", "state_history"}
        if unknown:
            raise ValueError(f"obs_keys: unknown entries {sorted(unknown)} "
                             "(accepted: state, images, prompt, info, image_layout, state_history)")
        images = {str(k): str(v) for k, v in dict(cfg.pop("images", None) or {}).items()}
        for cam in camera_names:
            images.setdefault(cam, DEFAULT_IMAGE_KEY.format(camera=cam))
        extra = [c for c in images if camera_names and c not in camera_names]
        if extra:
            raise ValueError(f"obs_keys.images maps cameras {extra} that camera_names {list(camera_names)} lacks")
        return cls(images=images, **cfg)

    def as_dict(self) -> dict[str, Any]:
        return {"state": self.state, "images": dict(self.images), "prompt": self.prompt, "info": self.info,
                "image_layout": self.image_layout, "state_history": self.state_history}

    # ------------------------------------------------------------------ client side
    def encode(
        self,
        state_hist: np.ndarray,
        images: Mapping[str, np.ndarray] | None = None,
        prompt: str | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> dict[str, Any]:
        """Robot-space observation -> request dict.

        state_hist: (T, state_dim) robot units; images: camera -> (N, 3, H, W) uint8.
        """
        state = np.asarray(state_hist, dtype=np.float32)
        if state.ndim == 1:
            state = state[None]
        out: dict[str, Any] = {self.state: state if self.state_history else state[-1]}
        for cam, key in self.images.items():
            if images is None or cam not in images:
                raise KeyError(f"observation has no image from camera {cam!r} (obs_keys.images maps it to {key!r})")
            frames = np.asarray(images[cam])
            if frames.ndim == 3:
                frames = frames[None]
            if frames.dtype != np.uint8:
                raise TypeError(f"camera {cam!r}: expected uint8 frames, got {frames.dtype}")
            if self.image_layout == "hwc":
                frames = np.moveaxis(frames, 1, -1)
            out[key] = np.ascontiguousarray(frames[0] if frames.shape[0] == 1 else frames)
        if self.prompt is not None and prompt is not None:
            out[self.prompt] = str(prompt)
        if self.info is not None and info:
            out[self.info] = wire_safe(info)
        return out

    # ------------------------------------------------------------------ server side
    def decode(self, request: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], str | None, dict[str, Any]]:
        """Request dict -> (state_hist (T, D) float32, camera -> (N, 3, H, W) uint8, prompt, info)."""
        if self.state not in request:
            raise KeyError(f"request lacks the state key {self.state!r} (got keys {sorted(map(str, request))})")
        state = np.asarray(request[self.state], dtype=np.float32)
        if state.ndim == 1:
            state = state[None]
        images = {}
        for cam, key in self.images.items():
            if key not in request:
                raise KeyError(f"request lacks image key {key!r} for camera {cam!r}")
            frames = np.asarray(request[key])
            if frames.dtype != np.uint8:
                raise TypeError(f"image {key!r}: expected uint8, got {frames.dtype}")
            if frames.ndim == 3:
                frames = frames[None]
            if frames.ndim != 4:
                raise ValueError(f"image {key!r}: expected 3 or 4 dims, got shape {frames.shape}")
            if self.image_layout == "hwc":
                frames = np.moveaxis(frames, -1, 1)
            images[cam] = np.ascontiguousarray(frames)
        prompt = request.get(self.prompt) if self.prompt is not None else None
        info = dict(request.get(self.info) or {}) if self.info is not None else {}
        return state, images, prompt, info


def images_to_uint8(images: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Model-space float [0, 1] frames (what ``PolicyInput`` carries) back to uint8 for the wire."""
    out = {}
    for name, frames in images.items():
        arr = np.asarray(frames)
        if arr.dtype == np.uint8:
            out[name] = arr
        else:
            out[name] = np.clip(arr * 255.0 + 0.5, 0, 255).astype(np.uint8)
    return out


def wire_safe(tree: Any) -> Any:
    """Keep only what msgpack-numpy can carry (numbers, str, bool, None, numeric arrays, lists, dicts)."""
    if isinstance(tree, Mapping):
        out = {}
        for k, v in tree.items():
            safe = wire_safe(v)
            if safe is not _SKIP:
                out[str(k)] = safe
        return out
    if isinstance(tree, (list, tuple)):
        items = [wire_safe(v) for v in tree]
        return [v for v in items if v is not _SKIP]
    if isinstance(tree, np.ndarray):
        return tree if tree.dtype.kind in "biuf" else _SKIP
    if isinstance(tree, np.generic):
        return tree.item() if tree.dtype.kind in "biuf" else _SKIP
    if tree is None or isinstance(tree, (bool, int, float, str)):
        return tree
    return _SKIP


_SKIP = object()
