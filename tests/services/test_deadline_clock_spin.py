"""How much of a tick ``DeadlineClock`` spends busy-waiting, on a clock the test owns.

The clock sleeps until ``spin_s`` before each deadline and busy-waits the rest; at SCHED_FIFO the
run picks the short ``fifo_spin_s`` so a real-time thread never starves the machine. Measuring that
with the wall clock (CPU seconds over wall seconds) depends on how busy the machine is, so here
``time`` inside ``services.clock`` is a fake: ``sleep`` advances it by what was asked plus a chosen
overshoot, and every ``monotonic()`` read while spinning costs a fixed poll step. The busy time per
tick is then exact arithmetic, whatever the host is doing. The real CPU share is measured by
``benchmarks/bench_realtime.py`` (its bare-clock cells).
"""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import services.clock as clock_module
from services.clock import DeadlineClock

POLL_S = 1e-6  # what one monotonic() read costs on the fake clock


class FakeTime:
    """``monotonic``/``sleep`` for ``services.clock``: time moves only when the clock reads or sleeps."""

    def __init__(self, overshoot_s: float) -> None:
        self.now = 100.0
        self.overshoot_s = overshoot_s
        self.busy_s = 0.0  # time spent in monotonic() reads: the busy-wait
        self.sleeps: list[float] = []

    def monotonic(self) -> float:
        self.now += POLL_S
        self.busy_s += POLL_S
        return self.now

    def sleep(self, seconds: float) -> None:
        assert seconds >= 0.0, seconds
        self.sleeps.append(seconds)
        # a negative overshoot is an early wake (a coarse timer); time still moves forward
        self.now += max(seconds + self.overshoot_s, seconds / 2)


@pytest.fixture
def fake_time(monkeypatch):
    def install(overshoot_s: float = 0.0) -> FakeTime:
        fake = FakeTime(overshoot_s)
        monkeypatch.setattr(clock_module, "time", fake)
        return fake

    return install


@settings(max_examples=200, deadline=None)
@given(
    period_s=st.sampled_from([0.005, 0.01, 0.02, 0.05]),
    spin_s=st.sampled_from([0.0003, 0.0005, 0.002]),
    ticks=st.integers(1, 60),
)
def test_busy_wait_per_tick_is_the_spin_window_when_sleep_is_exact(period_s, spin_s, ticks) -> None:
    with pytest.MonkeyPatch.context() as mp:
        fake = FakeTime(overshoot_s=0.0)
        mp.setattr(clock_module, "time", fake)
        clock = DeadlineClock(period_s, spin_s=spin_s)
        t0 = clock.start()
        for i in range(1, ticks + 1):
            busy_before = fake.busy_s
            scheduled, actual = clock.wait(i)
            assert scheduled == t0 + i * period_s
            assert scheduled <= actual <= scheduled + 2 * POLL_S  # returns at the deadline, not before
            spun = fake.busy_s - busy_before
            assert spin_s - 2 * POLL_S <= spun <= spin_s + 3 * POLL_S, (i, spun)
        # over the run: busy time / elapsed time is spin_s / period_s (the CPU share, exactly)
        share = fake.busy_s / (fake.now - t0)
        assert share == pytest.approx(spin_s / period_s, rel=0.02, abs=4 * POLL_S / period_s)


@settings(max_examples=100, deadline=None)
@given(overshoot_s=st.floats(0.0, 0.004), spin_s=st.sampled_from([0.0003, 0.002]))
def test_a_late_wake_spins_less_never_more(overshoot_s, spin_s) -> None:
    """A sleep that overshoots eats into the spin window; past the deadline the clock returns at once."""
    with pytest.MonkeyPatch.context() as mp:
        fake = FakeTime(overshoot_s)
        mp.setattr(clock_module, "time", fake)
        clock = DeadlineClock(0.01, spin_s=spin_s)
        clock.start()
        for i in range(1, 21):
            busy_before = fake.busy_s
            scheduled, actual = clock.wait(i)
            assert actual >= scheduled
            assert fake.busy_s - busy_before <= max(0.0, spin_s - overshoot_s) + 3 * POLL_S


def test_fifo_spin_is_a_fraction_of_the_other_spin(fake_time) -> None:
    """The contrast the real-time settings rely on: at the defaults, a SCHED_FIFO clock (fifo_spin_s)
    busy-waits 3% of 10 ms ticks, a SCHED_OTHER clock (spin_s) 20%."""
    from services.realtime import RealtimeConfig

    shares = {}
    for name, spin_s in (("fifo", RealtimeConfig().fifo_spin_s), ("other", RealtimeConfig().spin_s)):
        fake = fake_time()
        clock = DeadlineClock(0.01, spin_s=spin_s)
        t0 = clock.start()
        for i in range(1, 51):
            clock.wait(i)
        shares[name] = fake.busy_s / (fake.now - t0)
    assert shares["fifo"] == pytest.approx(0.03, abs=0.002)
    assert shares["other"] == pytest.approx(RealtimeConfig().spin_s / 0.01, abs=0.002)
    assert shares["fifo"] < shares["other"]


def test_zero_spin_never_busy_waits_even_when_woken_early(fake_time) -> None:
    """spin_s=0: a wake before the deadline (a coarse timer) sleeps again instead of spinning."""
    fake = fake_time(overshoot_s=-0.0001)  # every sleep returns 0.1 ms early
    clock = DeadlineClock(0.01, spin_s=0.0)
    clock.start()
    for i in range(1, 11):
        reads_before, sleeps_before = round(fake.busy_s / POLL_S), len(fake.sleeps)
        scheduled, actual = clock.wait(i)
        assert actual >= scheduled
        reads = round(fake.busy_s / POLL_S) - reads_before
        sleeps = len(fake.sleeps) - sleeps_before
        assert sleeps >= 2  # woken early at least once, and slept again
        assert reads == sleeps + 1, (reads, sleeps)  # every read but the last is followed by a sleep
