"""Real-time chunking bookkeeping as pure code: no processes, no clocks, no I/O.

Run by the one control loop of every execution mode (``algorithms/loop.py``), so a property test of
this module is a test of all of them. Conventions (the RTC paper's Algorithm 1,
Black, Galliker, Levine 2025; docs/rtc.md):

* Time is counted in control ticks. ``t`` is the number of ticks since the current chunk became
  current, *including* underrun ticks, so ``chunk[t]`` is always the action planned for this tick
  (time-aligned, never shifted by a late chunk).
* An inference is triggered once ``t >= execute_horizon``. At that moment the snapshot records
  ``s = t`` and ``prev = chunk[s:]`` zero-padded to ``H`` in the model's normalized space; the new
  chunk is predicted from the observation of that same tick, so ``new[i]`` is planned for tick
  ``snapshot_tick + i``.
* Merge: when the new chunk arrives ``d_actual`` ticks after the snapshot (``d_actual = t - s``),
  the ticks in between executed ``prev[:d_actual]`` from the old chunk and the new chunk continues at
  index ``d_actual`` (paper: ``t <- t - s``).
* Underrun: ``t >= H`` and no new chunk: the caller holds its last safe command. Never extrapolate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


def check_execute_horizon(execute_horizon: int, chunk_size: int, key: str = "algorithm.execute_horizon") -> None:
    """The one range check of the execute horizon (s): at least one action of a chunk runs before the
    next inference starts, and no more than the chunk holds. ``ValueError`` naming ``key``."""
    if not 1 <= int(execute_horizon) <= int(chunk_size):
        raise ValueError(f"{key}={execute_horizon} must be in [1, policy.chunk_size={chunk_size}]")


class ChunkRejected(ValueError):
    """A chunk that must not be executed (wrong shape, NaN/inf)."""


def validate_chunk(chunk: np.ndarray, chunk_size: int, action_dim: int) -> np.ndarray:
    """Return ``chunk`` as float32 (H, A) or raise ``ChunkRejected`` with the reason."""
    arr = np.asarray(chunk)
    if arr.shape != (chunk_size, action_dim):
        raise ChunkRejected(f"chunk shape {arr.shape}, expected {(chunk_size, action_dim)}")
    if not np.all(np.isfinite(arr)):
        bad = int(np.count_nonzero(~np.isfinite(arr)))
        raise ChunkRejected(f"chunk has {bad} non-finite values")
    return arr.astype(np.float32, copy=False)


def prev_remainder(chunk_model: np.ndarray, s: int) -> np.ndarray:
    """``chunk[s:]`` zero-padded at the end to the chunk length H (model space, float32).

    ``s >= H`` gives all zeros (nothing left to continue).
    """
    chunk_model = np.asarray(chunk_model, dtype=np.float32)
    horizon = chunk_model.shape[0]
    out = np.zeros_like(chunk_model)
    s = max(0, int(s))
    if s < horizon:
        out[: horizon - s] = chunk_model[s:]
    return out


def clip_delay(delay: int, s: int, chunk_size: int) -> int:
    """Delay handed to guided inference: at least 0 and at most the ``H - s`` actions left in prev."""
    return int(max(0, min(int(delay), chunk_size - int(s))))


class DelayEstimator:
    """``d = max(Q)`` over the last ``window`` observed delays (ticks), the delay estimate of docs/rtc.md.

    The window is bounded so a compile/warm-up spike ages out; the first ``warmup_excluded``
    observations (the first inferences after start or restart) are not recorded at all. Before any
    observation is recorded the estimate is ``initial_delay_ticks``.
    """

    def __init__(self, window: int, initial_delay_ticks: int, warmup_excluded: int = 0) -> None:
        if window < 1:
            raise ValueError(f"delay window must be >= 1, got {window}")
        if initial_delay_ticks < 0 or warmup_excluded < 0:
            raise ValueError("initial_delay_ticks and warmup_excluded must be >= 0")
        self.window = int(window)
        self.initial_delay_ticks = int(initial_delay_ticks)
        self.warmup_excluded = int(warmup_excluded)
        self.queue: deque[int] = deque(maxlen=self.window)
        self.seen = 0

    def reset(self) -> None:
        self.queue.clear()
        self.seen = 0

    def observe(self, delay_ticks: int) -> bool:
        """Record one observed delay; returns False when it was skipped as a warm-up inference."""
        self.seen += 1
        if self.seen <= self.warmup_excluded:
            return False
        self.queue.append(int(delay_ticks))
        return True

    def estimate(self) -> int:
        return max(self.queue) if self.queue else self.initial_delay_ticks


@dataclass(frozen=True)
class Step:
    """What the scheduler says for one tick.

    ``action`` is robot space (None on underrun: hold the last safe command); ``index`` the chunk
    index it came from (``t`` before the step, may be >= H on underrun).
    """

    action: np.ndarray | None
    chunk_id: int
    index: int
    underrun: bool


@dataclass(frozen=True)
class Snapshot:
    """What an inference starts from: ``s`` ticks of the current chunk done, ``prev = chunk[s:]``."""

    chunk_id: int
    s: int
    prev_model: np.ndarray  # (H, A) float32, model space, zero-padded


@dataclass(frozen=True)
class Merge:
    """Result of swapping in a new chunk.

    ``d_actual`` ticks passed between the snapshot and the merge; execution continues at
    ``new[d_actual]``. ``discontinuity`` is max |last executed old action - first new action|
    (robot space, per dimension max-abs), NaN when there is no previous action or the new chunk
    is already used up (stale: ``d_actual >= H``). It includes the ordinary motion of one tick, so a
    new chunk that continues the old one exactly still scores the arm's per-tick step.
    ``plan_jump`` is max |first new action - the action the old chunk planned for the same tick|:
    zero for an exact continuation at any speed, so it isolates what the swap itself changed (NaN
    without an old plan for that tick: a first chunk, an underrun, a stale new chunk).
    """

    chunk_id: int
    d_actual: int
    s: int
    stale: bool
    discontinuity: float
    plan_jump: float


class ChunkScheduler:
    """Current chunk, its index and the RTC trigger/merge/underrun rules.

    Keeps the chunk in robot space (what is executed) and in model space (what ``prev`` is cut
    from). Chunk ids start at 1; 0 means "no chunk yet".
    """

    def __init__(self, chunk_size: int, action_dim: int, execute_horizon: int) -> None:
        check_execute_horizon(execute_horizon, chunk_size)
        self.chunk_size = int(chunk_size)
        self.action_dim = int(action_dim)
        self.execute_horizon = int(execute_horizon)
        self.chunk_robot = np.zeros((chunk_size, action_dim), np.float32)
        self.chunk_model = np.zeros((chunk_size, action_dim), np.float32)
        self.reset()

    def reset(self) -> None:
        self.chunk_id = 0
        self.t = 0
        self.last_action: np.ndarray | None = None
        self.underruns = 0
        self.stale_chunks = 0
        self.merges = 0

    @property
    def has_chunk(self) -> bool:
        return self.chunk_id > 0

    @property
    def remaining(self) -> int:
        """Actions of the current chunk not yet executed (0 during an underrun)."""
        return max(0, self.chunk_size - self.t) if self.has_chunk else 0

    def should_trigger(self) -> bool:
        return self.has_chunk and self.t >= self.execute_horizon

    def snapshot(self) -> Snapshot:
        if not self.has_chunk:
            raise RuntimeError("snapshot before the first chunk")
        return Snapshot(self.chunk_id, self.t, prev_remainder(self.chunk_model, self.t))

    def start(self, chunk_robot: np.ndarray, chunk_model: np.ndarray) -> int:
        """Install a first chunk (no predecessor, executed from index 0). Returns its id."""
        robot = validate_chunk(chunk_robot, self.chunk_size, self.action_dim)
        model = validate_chunk(chunk_model, self.chunk_size, self.action_dim)
        self.chunk_robot[:] = robot
        self.chunk_model[:] = model
        self.chunk_id += 1
        self.t = 0
        return self.chunk_id

    def merge(self, chunk_robot: np.ndarray, chunk_model: np.ndarray, s: int) -> Merge:
        """Swap in a chunk predicted from the snapshot taken at ``s``; raises ``ChunkRejected``.

        A rejected chunk changes nothing: the old chunk keeps running (then underruns).
        """
        if not self.has_chunk:
            raise RuntimeError("merge before the first chunk; use start()")
        if s > self.t:
            raise ValueError(f"snapshot s={s} is after the current index t={self.t}")
        robot = validate_chunk(chunk_robot, self.chunk_size, self.action_dim)
        model = validate_chunk(chunk_model, self.chunk_size, self.action_dim)
        d_actual = self.t - int(s)
        stale = d_actual >= self.chunk_size
        disc = boundary_jump(self.last_action, robot[d_actual]) if not stale else float("nan")
        jump = boundary_jump(self.planned_next(), robot[d_actual]) if not stale else float("nan")
        self.chunk_robot[:] = robot
        self.chunk_model[:] = model
        self.chunk_id += 1
        self.t = d_actual
        self.merges += 1
        self.stale_chunks += int(stale)
        return Merge(self.chunk_id, d_actual, int(s), stale, disc, jump)

    def planned_next(self) -> np.ndarray | None:
        """The action the current chunk plans for the next tick (a copy); None without a chunk or
        once it is used up (an underrun holds instead)."""
        if not self.has_chunk or self.t >= self.chunk_size:
            return None
        return self.chunk_robot[self.t].copy()

    def step(self) -> Step:
        """Advance one tick: the action planned for it, or an underrun (caller holds)."""
        if not self.has_chunk:
            raise RuntimeError("step before the first chunk")
        index = self.t
        self.t += 1
        if index >= self.chunk_size:
            self.underruns += 1
            return Step(None, self.chunk_id, index, True)
        action = self.chunk_robot[index].copy()
        self.last_action = action
        return Step(action, self.chunk_id, index, False)


def boundary_jump(last_action: np.ndarray | None, first_new: np.ndarray) -> float:
    """The chunk-boundary discontinuity: max-abs difference (robot units, over dimensions) between the
    last action executed and the first action of the new chunk that executes; NaN without a last action."""
    if last_action is None:
        return float("nan")
    return float(np.max(np.abs(np.asarray(first_new) - np.asarray(last_action))))


def boundary_metrics(actions: np.ndarray, period_s: float) -> dict[str, float]:
    """Jerk (units/s^3, third finite difference / dt^3: max and RMS over ticks and dimensions) and
    the max per-tick jump of an action sequence (T, D)."""
    a = np.asarray(actions, dtype=np.float64)
    out = {"max_jerk": float("nan"), "rms_jerk": float("nan"), "max_step": float("nan")}
    if a.ndim == 2 and len(a) >= 2:
        out["max_step"] = float(np.max(np.abs(np.diff(a, axis=0))))
    if a.ndim == 2 and len(a) >= 4:
        jerk = np.diff(a, n=3, axis=0) / period_s**3
        out["max_jerk"] = float(np.max(np.abs(jerk)))
        out["rms_jerk"] = float(np.sqrt(np.mean(jerk**2)))
    return out
