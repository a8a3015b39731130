"""RTCPlanner: the control-side RTC rules that the shared-memory runtime, the Ray split runtime and the
lockstep evaluator all run. Property tests over arbitrary delays, rejections and stale results."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.chunking.chunk_logic import ChunkRejected
from algorithms.chunking.config import RTCConfig
from algorithms.chunking.planner import RTCPlanner
from policies.base import Guidance, Schedule

H, A = 12, 3


def chunk(value: float) -> np.ndarray:
    return np.full((H, A), value, np.float32) + np.arange(H, dtype=np.float32)[:, None]


def planner(execute_horizon: int = 4, **kw) -> RTCPlanner:
    kw.setdefault("max_chunk_jump", None)  # the test chunks jump by design
    return RTCPlanner(RTCConfig(execute_horizon=execute_horizon, initial_delay_ticks=kw.pop("initial", 2), **kw), H, A)


def test_config_rejects_bad_names_and_ranges_naming_the_key():
    with pytest.raises(ValueError, match="algorithm.guidance='foo'"):
        RTCConfig(guidance="foo")
    with pytest.raises(ValueError, match="algorithm.schedule"):
        RTCConfig(schedule="cubic")
    with pytest.raises(ValueError, match="algorithm.delay_window"):
        RTCConfig(delay_window=0)
    with pytest.raises(ValueError, match="chunk_size=12"):
        RTCPlanner(RTCConfig(execute_horizon=13), H, A)
    cfg = RTCConfig(guidance="blend", schedule="zeros")
    assert cfg.guidance is Guidance.BLEND and cfg.schedule is Schedule.ZEROS and cfg.guidance == "blend"


@settings(max_examples=200, deadline=None)
@given(execute_horizon=st.integers(1, H - 1), cap=st.one_of(st.none(), st.integers(0, H)), initial=st.integers(0, H))
def test_a_guided_region_cap_reaches_the_policy_as_a_longer_horizon_only(execute_horizon, cap, initial):
    """``guided_cap_ticks``: the guide's horizon is ``H - min(H - s, d + cap)`` (its soft region ends
    ``cap`` past the delay); the request's own ``s``, ``d`` and previous chunk are the uncapped ones."""
    p = RTCPlanner(
        RTCConfig(
            execute_horizon=execute_horizon, initial_delay_ticks=initial, guided_cap_ticks=cap, max_chunk_jump=None
        ),
        H,
        A,
    )
    p.begin_episode(0)
    first = p.request(0)
    p.accept(first.seq, chunk(0), chunk(0))
    while not p.wants_inference():
        p.step()
    req = p.request(execute_horizon)
    assert req.s == execute_horizon and req.d == max(0, min(initial, H - execute_horizon))
    end = H - execute_horizon if cap is None else min(H - execute_horizon, req.d + cap)
    assert req.guide.execute_horizon == H - end and req.guide.delay_ticks == req.d
    assert np.array_equal(req.guide.prev_model[: H - execute_horizon], p.scheduler.chunk_model[execute_horizon:])


def test_first_request_is_a_plain_predict_and_runs_from_index_zero():
    p = planner()
    p.begin_episode(0)
    assert p.wants_inference()
    req = p.request(0)
    assert req.first and req.guide is None and req.d == 0 and not p.wants_inference()
    merge = p.accept(req.seq, chunk(0), chunk(0))
    assert merge.chunk_id == 1 and merge.d_actual == 0
    assert p.step().index == 0


@settings(max_examples=200, deadline=None)
@given(
    execute_horizon=st.integers(1, H),
    delays=st.lists(st.integers(0, 2 * H), min_size=1, max_size=8),
    initial=st.integers(0, H),
    window=st.integers(1, 4),
)
def test_requests_follow_the_trigger_and_the_delay_estimate(execute_horizon, delays, initial, window):
    """Every request is cut at t >= execute_horizon with s = t, prev = chunk[s:], d = clip(max of the last
    `window` observed delays, 0, H - s); the merge continues at d_actual = ticks since the request."""
    p = RTCPlanner(
        RTCConfig(
            execute_horizon=execute_horizon,
            delay_window=window,
            initial_delay_ticks=initial,
            warmup_inferences_excluded=0,
            max_chunk_jump=None,
        ),
        H,
        A,
    )
    p.begin_episode(0)
    first = p.request(0)
    p.accept(first.seq, chunk(0), chunk(0))
    observed: list[int] = []
    tick = 0
    for k, delay in enumerate(delays):
        while not p.wants_inference():
            p.step()
            tick += 1
        t = p.scheduler.t
        assert t >= execute_horizon
        req = p.request(tick)
        assert req.s == t
        expected_d = max(observed[-window:]) if observed else initial
        assert req.guide is not None
        if t < H:
            assert req.d == max(0, min(expected_d, H - t))
            assert req.guide.delay_ticks == req.d and req.guide.execute_horizon == t
            assert np.array_equal(req.guide.prev_model[: H - t], p.scheduler.chunk_model[t:])
            assert not req.guide.prev_model[H - t :].any()
        else:  # nothing left: continue from the held last action (what the robot executes now)
            assert req.d == min(expected_d, H)
            assert np.array_equal(req.guide.prev_model, np.repeat(p.scheduler.chunk_model[-1:], H, axis=0))
            assert req.guide.execute_horizon == min(execute_horizon, H - req.d)
        for _ in range(delay):
            p.step()
            tick += 1
        merge = p.accept(req.seq, chunk(k + 1), chunk(k + 1))
        assert merge.d_actual == delay and merge.stale == (delay >= H)
        assert p.scheduler.t == delay
        observed.append(delay)


def test_stale_results_are_discarded_and_rejected_chunks_are_asked_again():
    p = planner(execute_horizon=2)
    p.begin_episode(0)
    req = p.request(0)
    p.accept(req.seq, chunk(0), chunk(0))
    p.step(), p.step()
    req = p.request(2)
    assert p.accept(req.seq + 7, chunk(1), chunk(1)) is None  # not the request in flight
    assert not p.wants_inference()
    bad = chunk(1)
    bad[3, 1] = np.nan
    with pytest.raises(ChunkRejected):
        p.accept(req.seq, bad, bad)
    assert p.wants_inference() and p.scheduler.chunk_id == 1  # the old chunk runs on; ask again
    again = p.request(2)
    assert again.seq > req.seq
    assert p.accept(req.seq, chunk(2), chunk(2)) is None  # the earlier request is no longer current


def test_new_episode_and_restart_drop_what_is_in_flight():
    p = planner(execute_horizon=2, warmup_inferences_excluded=1)
    p.begin_episode(0)
    req = p.request(0)
    p.accept(req.seq, chunk(0), chunk(0))
    p.step(), p.step()
    inflight = p.request(2)
    p.inference_restarted()
    assert p.wants_inference()
    resumed = p.request(2)
    assert resumed.guide is not None and resumed.s == 2  # continues the current chunk: no jump
    assert p.accept(inflight.seq, chunk(1), chunk(1)) is None
    p.begin_episode(1)
    assert not p.scheduler.has_chunk and p.pending is None
    assert p.accept(resumed.seq, chunk(1), chunk(1)) is None


def test_implausible_chunks_are_rejected_against_the_last_command_and_the_anchor():
    p = RTCPlanner(RTCConfig(execute_horizon=2, initial_delay_ticks=0, max_chunk_jump=0.5), H, A)
    p.begin_episode(0, anchor=np.zeros(A))
    req = p.request(0)
    with pytest.raises(ChunkRejected, match="implausible.*max_chunk_jump=0.5"):
        p.accept(req.seq, chunk(1e6), chunk(1e6))  # finite but absurd: 1e6 from where the robot is
    flat = np.zeros((H, A), np.float32)
    req = p.request(0)
    p.accept(req.seq, flat, flat)
    p.step(), p.step()
    req = p.request(2)
    with pytest.raises(ChunkRejected, match="implausible"):
        p.accept(req.seq, flat + 0.7, flat + 0.7)
    req = p.request(2)
    assert p.accept(req.seq, flat + 0.3, flat + 0.3) is not None


def test_plain_request_restarts_the_chunk_from_index_zero():
    p = planner(execute_horizon=3)
    p.begin_episode(0)
    req = p.request(0)
    p.accept(req.seq, chunk(0), chunk(0))
    for _ in range(3):
        p.step()
    sync = p.plain_request(3)
    assert sync.guide is None and sync.restart
    merge = p.accept(sync.seq, chunk(5), chunk(5))
    assert merge.d_actual == 0 and p.scheduler.t == 0 and merge.chunk_id == 2
    # measured at the new chunk's index 0: against the last executed action (old index 2) and
    # against what the old chunk planned for this tick (old index 3)
    assert merge.discontinuity == pytest.approx(np.abs(chunk(5)[0] - chunk(0)[2]).max())
    assert merge.plan_jump == pytest.approx(np.abs(chunk(5)[0] - chunk(0)[3]).max())
