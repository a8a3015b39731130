"""Our observation <-> an openpi-style request dict, by configuration (no code per robot).

openpi's robot adapters read different layouts, e.g. ALOHA a *nested* dict
``{"state": (14,), "images": {"cam_high": (3, H, W) uint8, ...}, "prompt": str}``, DROID a flat dict
whose keys contain slashes and whose state comes from two keys
``{"observation/joint_position": (7,), "observation/gripper_position": (1,), "observation/exterior_image_1_left":
(H, W, 3) uint8, ...}``. ``ObsKeyMap`` says where each of our parts goes:

- ``state``: key for the proprio state in robot units, newest sample ``(state_dim,)`` float32 (or the
  whole history ``(T, state_dim)`` with ``state_history=True``); or a mapping key -> ``[start, stop]``
  that sends the slice ``state[start:stop]`` under each key (several state keys, e.g. DROID's joint and
  gripper positions);
- ``images``: our camera name -> key; the frame is uint8 ``(3, H, W)`` (``image_layout=chw``, our native
  layout) or ``(H, W, 3)`` (``hwc``); with more than one frame per camera the frames stack on a leading axis;
- ``prompt``: key for the language instruction (``None``: none sent);
- ``info``: key for privileged extras (``None``: not sent; our scripted policy needs them);
- ``nested``: ``True`` makes ``/`` in every key a level of nesting (``images/cam_high`` ->
  ``{"images": {"cam_high": ...}}``, what ALOHA reads); ``False`` (default) keeps keys flat with their
  slashes, as openpi's DROID and LIBERO examples send them.

The same map decodes a request on our server (inference/serve.py), so ``policy=openpi_remote`` against
``python -m inference.serve`` works with the defaults on both ends.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_STATE_KEY = "observation/state"
DEFAULT_IMAGE_KEY = "observation/images/{camera}"
DEFAULT_PROMPT_KEY = "prompt"
LAYOUTS = ("chw", "hwc")
FIELDS = ("state", "images", "prompt", "info", "image_layout", "state_history", "nested")


def _state_slices(state: Any, state_dim: int | None) -> str | tuple[tuple[str, int, int], ...]:
    """``obs_keys.state`` as a key, or as ``((key, start, stop), ...)`` ordered by start."""
    if isinstance(state, str):
        return state
    if not isinstance(state, Mapping) or not state:
        raise ValueError(f"obs_keys.state: expected a key or a mapping key -> [start, stop], got {state!r}")
    out = []
    for key, span in state.items():
        if (
            not isinstance(span, Sequence)
            or isinstance(span, str)
            or len(span) != 2
            or not all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in span)
        ):
            raise ValueError(f"obs_keys.state.{key}: expected [start, stop] (ints), got {span!r}")
        start, stop = int(span[0]), int(span[1])
        if not 0 <= start < stop or (state_dim is not None and stop > state_dim):
            bound = f" <= state_dim={state_dim}" if state_dim is not None else ""
            raise ValueError(f"obs_keys.state.{key}: [{start}, {stop}] is not a slice 0 <= start < stop{bound}")
        out.append((str(key), start, stop))
    out.sort(key=lambda item: item[1])
    for (k0, _, stop0), (k1, start1, _) in zip(out, out[1:]):
        if start1 < stop0:
            raise ValueError(f"obs_keys.state: slices of {k0!r} and {k1!r} overlap")
    return tuple(out)


@dataclass(frozen=True)
class ObsKeyMap:
    state: str | tuple[tuple[str, int, int], ...] = DEFAULT_STATE_KEY
    images: Mapping[str, str] = field(default_factory=dict)
    prompt: str | None = DEFAULT_PROMPT_KEY
    info: str | None = None
    image_layout: str = "chw"
    state_history: bool = False
    nested: bool = False

    def __post_init__(self) -> None:
        if self.image_layout not in LAYOUTS:
            raise ValueError(f"obs_keys.image_layout={self.image_layout!r}; expected one of {LAYOUTS}")

    @classmethod
    def from_config(
        cls, cfg: Mapping[str, Any] | None, camera_names: tuple[str, ...] = (), state_dim: int | None = None
    ) -> ObsKeyMap:
        """Build from a config dict; cameras without an explicit key get ``observation/images/<name>``."""
        cfg = dict(cfg or {})
        unknown = set(cfg) - set(FIELDS)
        if unknown:
            raise ValueError(f"obs_keys: unknown entries {sorted(unknown)} (accepted: {', '.join(FIELDS)})")
        images = {str(k): str(v) for k, v in dict(cfg.pop("images", None) or {}).items()}
        for cam in camera_names:
            images.setdefault(cam, DEFAULT_IMAGE_KEY.format(camera=cam))
        extra = [c for c in images if camera_names and c not in camera_names]
        if extra:
            raise ValueError(f"obs_keys.images maps cameras {extra} that camera_names {list(camera_names)} lacks")
        state = _state_slices(cfg.pop("state", DEFAULT_STATE_KEY), state_dim)
        if not isinstance(state, str) and cfg.get("state_history"):
            raise ValueError("obs_keys.state_history=true needs a single state key, not slices")
        return cls(state=state, images=images, **cfg)

    def as_dict(self) -> dict[str, Any]:
        state = self.state if isinstance(self.state, str) else {k: [a, b] for k, a, b in self.state}
        return {
            "state": state,
            "images": dict(self.images),
            "prompt": self.prompt,
            "info": self.info,
            "image_layout": self.image_layout,
            "state_history": self.state_history,
            "nested": self.nested,
        }

    # ------------------------------------------------------------------ keys -> places in the dict
    def _put(self, out: dict[str, Any], key: str, value: Any) -> None:
        if not self.nested:
            out[key] = value
            return
        *parents, leaf = key.split("/")
        node = out
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"obs_keys: key {key!r} nests under {part!r}, which another key sets to a value")
        node[leaf] = value

    def _has(self, request: Mapping[str, Any], key: str) -> bool:
        try:
            self._get(request, key)
        except KeyError:
            return False
        return True

    def _get(self, request: Mapping[str, Any], key: str) -> Any:
        if not self.nested:
            return request[key]
        node: Any = request
        for part in key.split("/"):
            if not isinstance(node, Mapping) or part not in node:
                raise KeyError(key)
            node = node[part]
        return node

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
        out: dict[str, Any] = {}
        if isinstance(self.state, str):
            self._put(out, self.state, state if self.state_history else state[-1])
        else:
            for key, start, stop in self.state:
                if stop > state.shape[-1]:
                    raise ValueError(
                        f"obs_keys.state.{key}: [{start}, {stop}] exceeds the state's {state.shape[-1]} dims"
                    )
                self._put(out, key, np.ascontiguousarray(state[-1, start:stop]))
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
            self._put(out, key, np.ascontiguousarray(frames[0] if frames.shape[0] == 1 else frames))
        if self.prompt is not None and prompt is not None:
            self._put(out, self.prompt, str(prompt))
        if self.info is not None and info:
            self._put(out, self.info, wire_safe(info))
        return out

    # ------------------------------------------------------------------ server side
    def decode(
        self, request: Mapping[str, Any]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], str | None, dict[str, Any]]:
        """Request dict -> (state_hist (T, D) float32, camera -> (N, 3, H, W) uint8, prompt, info)."""
        keys = [self.state] if isinstance(self.state, str) else [k for k, _, _ in self.state]
        for key in keys:
            if not self._has(request, key):
                raise KeyError(f"request lacks the state key {key!r} (got keys {sorted(map(str, request))})")
        if isinstance(self.state, str):
            state = np.asarray(self._get(request, self.state), dtype=np.float32)
        else:
            expect = 0
            parts = []
            for key, start, stop in self.state:
                if start != expect:
                    raise ValueError(
                        f"obs_keys.state: dims [{expect}, {start}) come from no key; cannot rebuild the state"
                    )
                part = np.asarray(self._get(request, key), dtype=np.float32).reshape(-1)
                if part.shape[0] != stop - start:
                    raise ValueError(
                        f"request key {key!r} has {part.shape[0]} values; obs_keys.state.{key} expects {stop - start}"
                    )
                parts.append(part)
                expect = stop
            state = np.concatenate(parts)
        if state.ndim == 1:
            state = state[None]
        images = {}
        for cam, key in self.images.items():
            if not self._has(request, key):
                raise KeyError(f"request lacks image key {key!r} for camera {cam!r}")
            frames = np.asarray(self._get(request, key))
            if frames.dtype != np.uint8:
                raise TypeError(f"image {key!r}: expected uint8, got {frames.dtype}")
            if frames.ndim == 3:
                frames = frames[None]
            if frames.ndim != 4:
                raise ValueError(f"image {key!r}: expected 3 or 4 dims, got shape {frames.shape}")
            if self.image_layout == "hwc":
                frames = np.moveaxis(frames, -1, 1)
            images[cam] = np.ascontiguousarray(frames)
        prompt = (
            self._get(request, self.prompt) if self.prompt is not None and self._has(request, self.prompt) else None
        )
        info = (
            dict(self._get(request, self.info) or {}) if self.info is not None and self._has(request, self.info) else {}
        )
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
