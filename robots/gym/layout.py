"""How a Gymnasium observation becomes the robot's state vector and camera images (pure logic).

An observation space is a tree: ``Box`` leaves, possibly under (nested) ``Dict`` spaces. Each leaf has
a path (``"position"``, ``"pixels/top"``; a plain ``Box`` observation is the one leaf ``""``). A leaf
is an *image* when it is a ``uint8`` Box of shape (H, W, 3): images are camera sources, never state.

The state is the selected non-image leaves, each raveled, concatenated in the selected order, as
float32. With ``state_keys`` null every non-image leaf is selected in the space's own key order
(Gymnasium's ``Dict`` sorts the keys of a plain dict, so that is alphabetical for most suites).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


class LayoutError(ValueError):
    """The observation space (or the keys asked of it) cannot make a state vector."""


@dataclass(frozen=True)
class Leaf:
    path: str  # "" for a plain Box observation, "a/b" inside Dicts
    shape: tuple[int, ...]
    dtype: str

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def is_image(self) -> bool:
        return self.dtype == "uint8" and len(self.shape) == 3 and self.shape[-1] == 3


def leaves(space: Any, prefix: str = "") -> list[Leaf]:
    """The Box leaves of a (nested Dict of) Box observation space, in the space's key order."""
    from gymnasium import spaces

    if isinstance(space, spaces.Box):
        return [Leaf(prefix, tuple(int(n) for n in space.shape), str(np.dtype(space.dtype)))]
    if isinstance(space, spaces.Dict):
        out: list[Leaf] = []
        for key, sub in space.spaces.items():
            out += leaves(sub, f"{prefix}/{key}" if prefix else str(key))
        return out
    raise LayoutError(
        f"observation space {type(space).__name__} at {prefix or 'the top'!r} is not a Box or a Dict of Boxes"
    )


@dataclass(frozen=True)
class StateLayout:
    """The leaves that make the state, in order; ``state_dim`` their total size."""

    selected: tuple[Leaf, ...]
    images: tuple[str, ...]  # the paths of image leaves (camera sources)

    @property
    def state_dim(self) -> int:
        return sum(leaf.size for leaf in self.selected)

    @property
    def keys(self) -> tuple[str, ...]:
        return tuple(leaf.path for leaf in self.selected)

    def flatten(self, obs: Any) -> np.ndarray:
        """The state vector of observation ``obs`` (float32, ``state_dim`` long)."""
        parts = [np.asarray(lookup(obs, leaf.path), dtype=np.float32).reshape(-1) for leaf in self.selected]
        return np.concatenate(parts) if parts else np.zeros(0, dtype=np.float32)


def state_layout(space: Any, state_keys: Sequence[str] | None) -> StateLayout:
    """The layout for ``space`` with ``state_keys`` (None: every non-image leaf, in order)."""
    found = leaves(space)
    by_path = {leaf.path: leaf for leaf in found}
    images = tuple(leaf.path for leaf in found if leaf.is_image)
    if state_keys is None:
        selected = tuple(leaf for leaf in found if not leaf.is_image)
    else:
        if found == [by_path.get("")]:
            raise LayoutError("the observation is a single Box: it has no keys to select (leave state_keys null)")
        unknown = [k for k in state_keys if k not in by_path]
        if unknown:
            raise LayoutError(f"{unknown} not in the observation (keys: {', '.join(by_path)})")
        if len(set(state_keys)) != len(state_keys):
            raise LayoutError(f"{list(state_keys)} names a key twice")
        selected = tuple(by_path[k] for k in state_keys)
    if not selected:
        raise LayoutError(f"no state: the observation has only images ({', '.join(images)})")
    return StateLayout(selected, images)


def lookup(obs: Any, path: str) -> Any:
    """The value at ``path`` ("" = the observation itself) of a (nested) dict observation."""
    if path == "":
        return obs
    value = obs
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            raise KeyError(f"observation has no {path!r}")
        value = value[part]
    return value


def to_chw(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """An (H, W, 3) uint8 image as (3, ``height``, ``width``) uint8 (resized with area averaging)."""
    import cv2

    image = np.asarray(image)
    if image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"expected an (H, W, 3) image, got shape {image.shape}")
    if image.dtype != np.uint8:
        image = np.clip(image, 0, 255).astype(np.uint8)
    if image.shape[:2] != (height, width):
        shrink = image.shape[0] >= height and image.shape[1] >= width
        image = cv2.resize(image, (width, height), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    return np.ascontiguousarray(image.transpose(2, 0, 1))
