"""Drift-free tick clocks.

Tick ``i`` is due at ``t0 + i * period_s`` (absolute deadlines, as diffusion_policy's
``precise_sleep``): a late tick never shifts the ones after it, unlike ``sleep(dt)`` loops.
``DeadlineClock`` sleeps until ``spin_s`` before the deadline and busy-waits the rest, because
``time.sleep`` overshoots by 0.1-1 ms on a loaded Linux box under SCHED_OTHER; a thread at SCHED_FIFO
is woken on time but still pays the CPU's wake-up latency, so there it spins
``services.realtime.DEFAULT_FIFO_SPIN_S`` (0.3 ms), at most ``MAX_FIFO_SPIN_S``: a real-time thread
never busy-waits long enough to starve the machine. ``VirtualClock`` has the same API and
never sleeps: lockstep robots advance time themselves.
"""

from __future__ import annotations

import time


class _TickClock:
    """Absolute deadlines ``t0 + tick * period_s``; subclasses say what "now" and "wait" mean."""

    def __init__(self, period_s: float) -> None:
        if period_s <= 0:
            raise ValueError(f"period_s must be > 0, got {period_s}")
        self.period_s = float(period_s)
        self.t0: float | None = None

    def _origin(self) -> float:
        raise NotImplementedError

    def start(self, t0: float | None = None) -> float:
        self.t0 = self._origin() if t0 is None else float(t0)
        return self.t0

    def deadline(self, tick: int) -> float:
        if self.t0 is None:
            raise RuntimeError("clock not started")
        return self.t0 + tick * self.period_s


class DeadlineClock(_TickClock):
    def __init__(self, period_s: float, spin_s: float | None = None) -> None:
        """``spin_s`` None: what the run's real-time settings choose for the calling thread
        (``services.realtime.current_spin_s``)."""
        super().__init__(period_s)
        if spin_s is None:
            from services.realtime import current_spin_s

            spin_s = current_spin_s()
        self.spin_s = float(spin_s)

    def _origin(self) -> float:
        return time.monotonic()

    def now(self) -> float:
        return time.monotonic()

    def wait(self, tick: int) -> tuple[float, float]:
        """Block until tick ``tick`` is due; return (scheduled_s, actual_s), monotonic seconds.

        A tick already overdue returns at once (its lateness shows as period error); the
        schedule is not re-based, so the loop catches up instead of drifting.
        """
        scheduled = self.deadline(tick)
        remaining = scheduled - time.monotonic()
        if remaining > self.spin_s:
            time.sleep(remaining - self.spin_s)
        if self.spin_s <= 0.0:
            now = time.monotonic()
            while now < scheduled:  # woken a hair early (clock granularity): sleep, never spin
                time.sleep(scheduled - now)
                now = time.monotonic()
            return scheduled, now
        while True:
            now = time.monotonic()
            if now >= scheduled:
                return scheduled, now


class VirtualClock(_TickClock):
    """Lockstep time: tick ``i`` happens exactly at ``t0 + i * period_s``, without sleeping."""

    def __init__(self, period_s: float, spin_s: float = 0.0) -> None:
        super().__init__(period_s)
        self._now = 0.0

    def _origin(self) -> float:
        return 0.0

    def start(self, t0: float | None = None) -> float:
        self._now = super().start(t0)
        return self._now

    def now(self) -> float:
        return self._now

    def wait(self, tick: int) -> tuple[float, float]:
        scheduled = self.deadline(tick)
        self._now = max(self._now, scheduled)
        return scheduled, self._now


def make_clock(period_s: float, realtime: bool) -> DeadlineClock | VirtualClock:
    return DeadlineClock(period_s) if realtime else VirtualClock(period_s)
