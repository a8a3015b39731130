"""Small policies and a recording robot for the RTC fault tests (tests/algorithms/test_rtc_runtime.py).

Referenced from configs by ``_target_`` (``policy._target_=tests.rtc_fault_policies.FaultPolicy``),
so the spawned inference process imports them by name like any other policy.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from typing import Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from robots.base import StaleDataError
from robots.sim import SimRobot


class FaultPolicy:
    """Moves every joint away from the measured pose by ``step_rad`` per chunk index, so a
    jump or a missing slew limit shows in the sent commands; then misbehaves as ``mode`` says
    from call ``after_calls`` on: ``sleep`` (``sleep_s`` per call: a hang, where that is longer than
    the run's bounds), ``nan_chunk`` (NaN chunks), ``huge`` (finite but absurd chunks, 1e6), ``raise``
    (an exception), ``raise_once`` (an exception once per run, marked by ``once_file``),
    ``stop_process`` (SIGSTOP of the process the policy runs in: all of it freezes, heartbeat thread
    included), ``kill_process`` (SIGKILL of that process, as the OOM killer does), ``ok`` (never);
    ``raise_at_build`` fails in the constructor. The last two act on the process itself: only for a
    policy in a process of its own (``algorithm=rtc``).
    ``offset``: every planned action is that far from the measured pose (a plain predict never
    continues the robot's motion). ``follow_prev``: guided inference inpaints toward ``prev`` with the
    RTC weights (``W * prev + (1 - W) * plain``), as a guided policy does. ``warmup_s``: a slow warm-up."""

    def __init__(
        self,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: list[str] | tuple[str, ...] = (),
        mode: str = "ok",
        after_calls: int = 2,
        sleep_s: float = 0.0,
        step_rad: float = 0.02,
        offset: float = 0.0,
        follow_prev: bool = False,
        warmup_s: float = 0.0,
        once_file: str = "",
        hold_action: list[float] | None = None,  # policy=hold's key (these tests build on that config); unused
    ) -> None:
        self.metadata = PolicyMetadata(
            chunk_size=chunk_size, action_dim=action_dim, state_dim=state_dim, camera_names=tuple(camera_names)
        )
        self.mode, self.after_calls, self.sleep_s, self.step_rad = mode, after_calls, sleep_s, step_rad
        self.offset, self.follow_prev, self.warmup_s = offset, follow_prev, warmup_s
        self.once_file = once_file  # raise_once: the first process to reach the call raises, later ones do not
        if mode == "raise_at_build":
            raise RuntimeError("FaultPolicy cannot load its weights")
        self.calls = 0

    def predict(self, obs: PolicyInput) -> np.ndarray:
        self.calls += 1
        current = np.asarray(obs.state[-1][: self.metadata.action_dim], dtype=np.float32)
        steps = self.step_rad * np.arange(1, self.metadata.chunk_size + 1, dtype=np.float32)[:, None]
        sign = 1.0 if (self.calls // 4) % 2 == 0 else -1.0
        chunk = current[None] + self.offset + sign * steps * np.ones_like(current)[None]
        if self.calls > self.after_calls:
            if self.mode == "sleep":
                time.sleep(self.sleep_s)
            elif self.mode == "nan_chunk":
                chunk[self.metadata.chunk_size // 2, 0] = np.nan
            elif self.mode == "huge":
                chunk[:] = 1e6
            elif self.mode == "stop_process":
                os.kill(os.getpid(), signal.SIGSTOP)
            elif self.mode == "kill_process":
                os.kill(os.getpid(), signal.SIGKILL)
            elif self.mode == "raise" or (self.mode == "raise_once" and not Path(self.once_file).exists()):
                if self.mode == "raise_once":
                    Path(self.once_file).touch()
                raise RuntimeError(f"FaultPolicy exploded on call {self.calls}")
        return chunk

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        plain = self.predict(obs)
        if not self.follow_prev:
            return plain
        from policies.guidance import prefix_weights

        w = prefix_weights(self.metadata.chunk_size, delay, execute_horizon, schedule)[:, None]
        return (w * np.asarray(prev_chunk, np.float32) + (1 - w) * plain).astype(np.float32)

    def warmup(self) -> None:
        time.sleep(self.warmup_s)

    def freeze(self) -> None:
        pass


class RecordingSimRobot(SimRobot):
    """SimRobot that writes every command it was sent to ``record_path`` (.npy) at ``stop()``, and
    the state of every read beside it (``reads_path(record_path)``): what a hold is checked against.

    ``refuse_send_after`` > 0: from that many accepted commands on, ``send`` raises
    ``StaleDataError`` as a ROS 2 robot does when its joint state went stale between read and send.
    """

    def __init__(
        self,
        *,
        record_path: str = "",
        refuse_send_after: int = 0,
        fail_read_at: int = 0,
        nan_state_at: int = 0,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.record_path = record_path
        self.refuse_send_after = refuse_send_after
        self.fail_read_at = fail_read_at  # this read (1-based) raises, as a camera still without a frame
        self.nan_state_at = nan_state_at  # from this read on the state holds a NaN (a broken encoder)
        self.reads = 0
        self.sent: list[np.ndarray] = []
        self.states: list[np.ndarray] = []

    def read(self):
        self.reads += 1
        if self.fail_read_at and self.reads == self.fail_read_at:
            raise StaleDataError("camera head: no frame newer than 0.5 s (the device has not delivered one)")
        obs = super().read()
        if self.nan_state_at and self.reads >= self.nan_state_at:
            obs.state = np.array(obs.state, copy=True)
            obs.state[3] = np.nan
        self.states.append(np.array(obs.state, dtype=np.float64))
        return obs

    def send(self, action: np.ndarray) -> None:
        if self.refuse_send_after and len(self.sent) >= self.refuse_send_after:
            raise StaleDataError("joint state is 0.600 s old (max_state_age_s 0.5)")
        self.sent.append(np.array(action, dtype=np.float64))
        super().send(action)

    def stop(self) -> None:
        super().stop()
        if self.record_path:
            np.save(Path(self.record_path), np.asarray(self.sent))
            np.save(reads_path(self.record_path), np.asarray(self.states))


def reads_path(record_path: str | Path) -> Path:
    """Where ``RecordingSimRobot`` keeps the states it read, beside the commands in ``record_path``."""
    path = Path(record_path)
    return path.with_name(f"{path.stem}_reads.npy")
