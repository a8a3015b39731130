"""Observation history: the last ``state_history`` proprio samples and ``num_img_obs`` frames
per camera taken every ``img_obs_every`` control ticks, as the policy expects them.

Kept on the control side (one per run). Frames from a camera process are views of its ring
(``Frame.intact``): with one frame per camera they are kept as they are and copied once, into the
snapshot (``copy_images_into`` writes straight into RTC's shared request block); a longer history
keeps frames across many camera periods, so it takes its own copy of each (``Frame.owned``).
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robots.base import Frame, Observation, StaleDataError


@dataclass
class HistorySnapshot:
    state: np.ndarray  # (state_history, state_dim) float32, oldest first, robot units
    images: dict[str, np.ndarray]  # name -> (num_img_obs, 3, H, W) uint8, oldest first
    timestamp: float  # capture time of the newest state
    image_times: dict[str, float]  # capture time of each camera's newest frame


class ObservationHistory:
    def __init__(self, state_history: int = 1, num_img_obs: int = 1, img_obs_every: int = 1) -> None:
        if state_history < 1 or num_img_obs < 1 or img_obs_every < 1:
            raise ValueError("history sizes must be >= 1")
        self.state_history = state_history
        self.num_img_obs = num_img_obs
        self.img_obs_every = img_obs_every
        self.reset()

    def reset(self) -> None:
        self._states: deque[np.ndarray] = deque(maxlen=self.state_history)
        span = (self.num_img_obs - 1) * self.img_obs_every + 1
        self._frames: dict[str, deque[Frame]] = {}
        self._span = span
        self._last: Observation | None = None

    def push(self, obs: Observation) -> None:
        """Add one control tick's observation. The first push fills the history by repetition,
        so a policy never sees zeros at episode start."""
        state = np.asarray(obs.state, dtype=np.float32)
        if not self._states:
            self._states.extend([state] * self.state_history)
        else:
            self._states.append(state)
        for name, frame in obs.images.items():
            if self._span > 1:
                frame = frame.owned()
            ring = self._frames.get(name)
            if ring is None:
                ring = self._frames[name] = deque([frame] * self._span, maxlen=self._span)
            else:
                ring.append(frame)
        self._last = obs

    def _selected(self, name: str) -> list[Frame]:
        """The frames the policy sees for camera ``name``, oldest first."""
        return list(self._frames[name])[:: -self.img_obs_every][::-1][-self.num_img_obs :]

    def copy_images_into(self, out: dict[str, np.ndarray]) -> None:
        """Copy each camera's frames into ``out[name]`` (``(num_img_obs, 3, H, W)``): the one copy
        a camera frame gets. ``StaleDataError`` if a producer began rewriting a frame's ring slot
        before the copy was done (the control thread stalled for several camera periods)."""
        for name, dst in out.items():
            frames = self._selected(name)
            for k, frame in enumerate(frames):
                np.copyto(dst[k], frame.image)
            for frame in frames:
                if not frame.intact():
                    raise StaleDataError(
                        f"camera {name}: frame {frame.index} was overwritten in its ring before "
                        "it was copied (the control thread stalled for several camera periods)"
                    )

    def snapshot(self, images: bool = True) -> HistorySnapshot:
        """State, frames (fresh arrays; ``images=False`` leaves them out) and times."""
        if self._last is None:
            raise RuntimeError("observation history is empty")
        frames: dict[str, np.ndarray] = {}
        if images:
            frames = {
                name: np.empty((self.num_img_obs, *ring[-1].image.shape), ring[-1].image.dtype)
                for name, ring in self._frames.items()
            }
            self.copy_images_into(frames)
        return HistorySnapshot(
            state=np.stack(self._states),
            images=frames,
            timestamp=self._last.timestamp,
            image_times={k: f.capture_time for k, f in self._last.images.items()},
        )

    @property
    def last(self) -> Observation | None:
        return self._last
