"""Observation history: the last ``state_history`` proprio samples and ``num_img_obs`` frames
per camera taken every ``img_obs_every`` control ticks, as the policy expects them.

Kept on the control side (one per run); RTC copies its arrays into shared memory as they are.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from robots.base import Observation


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
        self._frames: dict[str, deque[np.ndarray]] = {}
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
            ring = self._frames.get(name)
            if ring is None:
                ring = self._frames[name] = deque([frame.image] * self._span, maxlen=self._span)
            else:
                ring.append(frame.image)
        self._last = obs

    def snapshot(self) -> HistorySnapshot:
        if self._last is None:
            raise RuntimeError("observation history is empty")
        images = {
            name: np.stack(list(ring)[:: -self.img_obs_every][::-1][-self.num_img_obs :])
            for name, ring in self._frames.items()
        }
        return HistorySnapshot(
            state=np.stack(self._states),
            images=images,
            timestamp=self._last.timestamp,
            image_times={k: f.capture_time for k, f in self._last.images.items()},
        )

    @property
    def last(self) -> Observation | None:
        return self._last
