"""Property tests of the RTC chunk bookkeeping (algorithms/chunking/chunk_logic.py)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.chunking.chunk_logic import ChunkRejected, ChunkScheduler, DelayEstimator, clip_delay, prev_remainder

A = 2


def coded_chunk(chunk_no: int, horizon: int) -> np.ndarray:
    """Chunk whose action i is (chunk_no * 1000 + i) in every dimension: executed values name
    exactly which chunk and index ran."""
    return np.repeat((chunk_no * 1000 + np.arange(horizon, dtype=np.float32))[:, None], A, axis=1)


def drive(horizon: int, execute_horizon: int, latencies: list[int], ticks: int):
    """Run the scheduler as the runtime does: per tick merge-if-due, trigger-if-ready (a
    0-tick latency merges in the same tick), then step. Returns per-tick records."""
    sched = ChunkScheduler(horizon, A, execute_horizon)
    sched.start(coded_chunk(0, horizon), coded_chunk(0, horizon) * -1)
    lat = iter(latencies)
    pending = None  # (due_tick, chunk_no, s, latency)
    chunk_no = 0
    records, merges = [], []

    def try_merge(tick):
        nonlocal pending
        if pending is not None and pending[0] <= tick:
            _, no, s, latency = pending
            m = sched.merge(coded_chunk(no, horizon), coded_chunk(no, horizon) * -1, s)
            merges.append((tick, no, s, latency, m))
            pending = None

    for tick in range(ticks):
        try_merge(tick)
        if pending is None and sched.should_trigger():
            snap = sched.snapshot()
            latency = next(lat, 1)
            chunk_no += 1
            pending = (tick + latency, chunk_no, snap.s, latency)
            # prev is the model-space remainder of the current chunk, zero padded
            expect = prev_remainder(sched.chunk_model, snap.s)
            np.testing.assert_array_equal(snap.prev_model, expect)
            try_merge(tick)
        step = sched.step()
        value = None if step.action is None else float(step.action[0])
        records.append((step.chunk_id, step.index, step.underrun, value))
    return sched, records, merges


@settings(max_examples=150, deadline=None)
@given(horizon=st.integers(2, 16), data=st.data())
def test_no_index_skipped_or_repeated_and_delay_exact(horizon, data):
    execute_horizon = data.draw(st.integers(1, horizon))
    latencies = data.draw(st.lists(st.integers(0, horizon + 4), min_size=1, max_size=30))
    ticks = data.draw(st.integers(1, 150))
    sched, records, merges = drive(horizon, execute_horizon, latencies, ticks)

    # every executed action is the one planned: value names (chunk, index)
    for chunk_id, index, underrun, value in records:
        assert underrun == (index >= horizon)
        if not underrun:
            assert value == (chunk_id - 1) * 1000 + index
    # inside a chunk indices advance by exactly 1 per tick; at a merge the new chunk starts at
    # d_actual = ticks since its snapshot = the simulated latency
    merge_at = {tick: m for tick, _, _, _, m in merges}
    for k in range(1, len(records)):
        prev_id, prev_idx = records[k - 1][:2]
        cur_id, cur_idx = records[k][:2]
        if cur_id == prev_id:
            assert cur_idx == prev_idx + 1
        else:
            m = merge_at[k]  # the last merge of tick k (a 0-tick inference may follow a merge)
            assert cur_id == m.chunk_id > prev_id
            assert cur_idx == m.d_actual
            # the old chunk ran up to (but not including) s + d_actual
            first = [mm for t_, _, _, _, mm in merges if t_ == k][0]
            assert prev_idx == first.s + first.d_actual - 1
    for tick, _, s, latency, m in merges:
        assert m.d_actual == latency
        assert m.s == s >= execute_horizon
        assert m.stale == (latency >= horizon)
    assert sched.underruns == sum(r[2] for r in records)


@settings(max_examples=100, deadline=None)
@given(horizon=st.integers(2, 20), data=st.data())
def test_matches_paper_reference_for_fixed_d_and_s(horizon, data):
    """Fixed delay d and s = execute_horizon with d <= s, s + d <= H: the executed stream is
    A0[0:s+d] followed by An[d:s+d] for every later chunk (paper: prev[:d] then new[d:s])."""
    s = data.draw(st.integers(1, horizon))
    d = data.draw(st.integers(0, min(s, horizon - s)))
    ticks = data.draw(st.integers(1, 120))
    _, records, merges = drive(horizon, s, [d] * 1000, ticks)
    reference = list(coded_chunk(0, horizon)[: s + d, 0])
    n = 1
    while len(reference) < ticks:
        reference += list(coded_chunk(n, horizon)[d : s + d, 0])
        n += 1
    executed = [r[3] for r in records]
    assert None not in executed  # no underrun when s + d <= H
    assert executed == reference[:ticks]


def test_underrun_holds_and_counts_until_late_chunk():
    sched, records, merges = drive(horizon=4, execute_horizon=2, latencies=[5], ticks=9)
    # A0 runs 0..3, two underrun ticks (index 4, 5), merge at tick 7 = 2 + 5 continues at 5 >= H
    assert [r[1] for r in records[:7]] == [0, 1, 2, 3, 4, 5, 6]
    assert [r[2] for r in records[:7]] == [False] * 4 + [True] * 3
    assert merges[0][4].d_actual == 5 and merges[0][4].stale
    assert sched.underruns >= 3


def test_nan_chunk_rejected_keeps_old_chunk():
    sched = ChunkScheduler(4, A, 2)
    sched.start(coded_chunk(0, 4), coded_chunk(0, 4))
    sched.step(), sched.step()
    bad = coded_chunk(1, 4)
    bad[3, 1] = np.nan
    with pytest.raises(ChunkRejected):
        sched.merge(bad, coded_chunk(1, 4), 2)
    assert sched.chunk_id == 1 and sched.t == 2
    assert sched.step().action[0] == 2.0
    with pytest.raises(ChunkRejected):
        sched.merge(coded_chunk(1, 4)[:3], coded_chunk(1, 4)[:3], 2)


def test_merge_discontinuity_and_model_space_prev():
    sched = ChunkScheduler(4, A, 1)
    robot, model = coded_chunk(0, 4), coded_chunk(0, 4) / 1000.0 - 5
    sched.start(robot, model)
    sched.step()
    snap = sched.snapshot()
    # prev comes from the model-space chunk, not the robot-space one
    np.testing.assert_allclose(snap.prev_model[:3], model[1:])
    np.testing.assert_array_equal(snap.prev_model[3], 0)
    sched.step()
    m = sched.merge(coded_chunk(1, 4), coded_chunk(1, 4), snap.s)
    assert m.d_actual == 1
    assert m.discontinuity == pytest.approx(abs(1001.0 - 1.0))
    # the old chunk planned index 2 (value 2) for this tick; the new chunk runs its index 1 (1001)
    assert m.plan_jump == pytest.approx(abs(1001.0 - 2.0))


@settings(max_examples=200, deadline=None)
@given(horizon=st.integers(3, 20), data=st.data())
def test_plan_jump_is_zero_for_an_exact_continuation_and_discontinuity_keeps_the_step(horizon, data):
    """A new chunk that repeats the rest of the old plan swaps with no jump from plan, whatever the
    speed, while the boundary discontinuity still reads the arm's step over that tick; a chunk that
    is offset by c everywhere jumps by |c| on both."""
    rng = np.random.default_rng(data.draw(st.integers(0, 2**31 - 1)))
    old = np.cumsum(rng.normal(0, data.draw(st.floats(0.0, 0.5)), (horizon, A)), axis=0).astype(np.float32)
    s = data.draw(st.integers(1, horizon - 2))
    d = data.draw(st.integers(0, horizon - 1 - s))
    offset = data.draw(st.floats(-1.0, 1.0))
    for shift, expect_plan_jump in ((0.0, 0.0), (offset, abs(offset))):
        sched = ChunkScheduler(horizon, A, 1)
        sched.start(old, old)
        for _ in range(s):
            sched.step()
        snap = sched.snapshot()
        for _ in range(d):
            sched.step()
        new = np.zeros_like(old)
        new[: horizon - s] = old[s:] + np.float32(shift)  # index j continues old index s + j
        m = sched.merge(new, new, snap.s)
        t = s + d  # the tick's index in the old chunk
        assert m.plan_jump == pytest.approx(expect_plan_jump, abs=1e-5)
        step = np.abs(old[t].astype(np.float64) + shift - old[t - 1]).max()
        assert m.discontinuity == pytest.approx(step, abs=1e-5)


def test_plan_jump_is_nan_without_an_old_plan_for_the_tick():
    sched = ChunkScheduler(4, A, 1)
    sched.start(coded_chunk(0, 4), coded_chunk(0, 4))
    for _ in range(5):  # the chunk runs out: the fifth tick is an underrun
        sched.step()
    assert sched.planned_next() is None
    m = sched.merge(coded_chunk(1, 4), coded_chunk(1, 4), 4)
    assert np.isnan(m.plan_jump) and np.isfinite(m.discontinuity)


def test_delay_estimator_window_warmup_initial():
    est = DelayEstimator(window=3, initial_delay_ticks=4, warmup_excluded=1)
    assert est.estimate() == 4
    assert est.observe(40) is False  # warm-up/compile spike excluded
    assert est.estimate() == 4
    for d in (2, 9, 3):
        est.observe(d)
    assert est.estimate() == 9
    est.observe(1), est.observe(1)  # the 9 ages out of a window of 3
    assert est.estimate() == 3
    est.observe(2)
    assert est.estimate() == 2
    est.reset()
    assert est.estimate() == 4


def test_clip_delay():
    assert clip_delay(7, s=5, chunk_size=10) == 5
    assert clip_delay(-1, s=5, chunk_size=10) == 0
    assert clip_delay(3, s=5, chunk_size=10) == 3


def test_boundary_metrics_jerk_and_step():
    from algorithms.chunking.chunk_logic import boundary_metrics

    ramp = np.linspace(0, 1, 20)[:, None] * np.ones((1, 3))
    m = boundary_metrics(ramp, period_s=0.05)
    assert m["max_jerk"] == pytest.approx(0, abs=1e-6) and m["rms_jerk"] == pytest.approx(0, abs=1e-6)
    step = np.zeros((10, 2))
    step[5:] = 0.1  # one jump of 0.1 -> third differences 0.1, -0.2, 0.1
    m = boundary_metrics(step, period_s=0.1)
    assert m["max_step"] == pytest.approx(0.1)
    assert m["max_jerk"] == pytest.approx(0.2 / 0.1**3)
