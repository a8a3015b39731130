import time

import numpy as np

from robots.base import Frame, Observation
from robots.history import ObservationHistory
from services.clock import DeadlineClock, VirtualClock


def _obs(i):
    img = np.full((3, 2, 2), i, dtype=np.uint8)
    return Observation(
        state=np.array([i, -i], dtype=np.float32),
        images={"head": Frame(img, float(i), float(i), i)},
        timestamp=float(i),
    )


def test_history_fills_by_repetition_then_slides():
    h = ObservationHistory(state_history=3, num_img_obs=2, img_obs_every=2)
    h.push(_obs(1))
    snap = h.snapshot()
    np.testing.assert_array_equal(snap.state[:, 0], [1, 1, 1])
    np.testing.assert_array_equal(snap.images["head"][:, 0, 0, 0], [1, 1])
    for i in range(2, 7):
        h.push(_obs(i))
    snap = h.snapshot()
    np.testing.assert_array_equal(snap.state[:, 0], [4, 5, 6])
    # frames every 2 ticks, oldest first: 4 then 6
    np.testing.assert_array_equal(snap.images["head"][:, 0, 0, 0], [4, 6])
    assert snap.timestamp == 6.0


def test_virtual_clock_is_exact_and_never_sleeps(monkeypatch):
    def no_sleep(seconds):  # the test owns time: any sleep, or any wall-clock read, fails it
        raise AssertionError(f"VirtualClock slept {seconds} s")

    def no_wall_clock():
        raise AssertionError("VirtualClock read the wall clock")

    monkeypatch.setattr(time, "sleep", no_sleep)
    monkeypatch.setattr(time, "monotonic", no_wall_clock)
    c = VirtualClock(0.05)
    c.start()
    for i in range(1000):
        sched, actual = c.wait(i)
        assert sched == actual == i * 0.05
        assert c.now() == actual


def test_deadline_clock_does_not_drift_after_a_late_tick():
    c = DeadlineClock(0.01)
    t0 = c.start()
    c.wait(1)
    time.sleep(0.035)  # a long tick
    late_sched, late_actual = c.wait(2)
    assert late_actual - late_sched > 0.02  # overdue: returns at once, lateness visible
    sched, actual = c.wait(6)
    assert sched == t0 + 6 * 0.01  # schedule not re-based
    assert actual >= sched
