"""A lockstep cell's episodes side by side (``algorithm.parallel_episodes``): the rendezvous as pure
logic, the batched answer keeping each episode's noise, P > 1 equal to P = 1 episode for episode on
the bundled sim, faults in a batched cell, and the (delay, execute horizon) cells."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from algorithms.episode_batcher import EpisodeBatcher, Row, answer_rows, noise_generator
from algorithms.rendezvous import Rendezvous
from inference.app import compose_run
from policies.base import Guidance, PolicyInput, Schedule
from policies.runner import Guide, PolicyRunner
from services.errors import AlgorithmFault

pytestmark = pytest.mark.timeout(600)


# ---------------------------------------------------------------------- the rendezvous, pure logic
def test_a_batch_forms_when_every_live_member_is_parked_in_key_order():
    r = Rendezvous(("a", "b", "c"))
    assert r.park("c", "req-c", key=0) is None
    assert r.park("a", "req-a", key=2) is None
    batch = r.park("b", "req-b", key=1)
    assert batch is not None and batch.requests == ("req-c", "req-b", "req-a") and batch.members == ("c", "b", "a")
    assert r.parked == frozenset()
    assert r.park("a", "again", key=5) is None  # a fresh round: the others run
    assert r.leave("b") is None
    only = r.leave("c")
    assert only is not None and only.requests == ("again",)  # the last runner left: nobody to wait for
    with pytest.raises(ValueError, match="not live"):
        r.park("b", "x", key=0)
    assert r.park("a", "x", key=0) is not None  # alone: answered at once
    with pytest.raises(ValueError, match="already live"):
        r.join("a")


def test_a_parked_member_cannot_park_or_leave_again():
    r = Rendezvous(("a", "b"))
    r.park("a", 1, key=0)
    with pytest.raises(ValueError, match="already parked"):
        r.park("a", 2, key=0)
    with pytest.raises(ValueError, match="already parked"):
        r.leave("a")


@settings(max_examples=200, deadline=None)
@given(scripts=st.lists(st.integers(0, 6), min_size=1, max_size=6), order=st.randoms(use_true_random=False))
def test_every_request_is_answered_once_in_full_batches_whatever_the_interleaving(scripts, order):
    """Members with ``n`` requests each, then a leave, run in any order the scheduler picks: every
    request is answered exactly once and in its member's order, every batch holds one request of
    each member live when it formed (nobody was still running), rows in key order, and nothing
    deadlocks (the last step always completes a batch or leaves)."""
    members = list(range(len(scripts)))
    r = Rendezvous(tuple(members))
    sent = {m: 0 for m in members}
    answered: dict[int, list[int]] = {m: [] for m in members}
    running, left = set(members), set()
    while running:
        m = order.choice(sorted(running))
        if sent[m] < scripts[m]:
            batch = r.park(m, (m, sent[m]), key=(m * 7) % 5)
            sent[m] += 1
            running.discard(m)
        else:
            batch = r.leave(m)
            running.discard(m)
            left.add(m)
        if batch is not None:
            assert not running, "a batch formed while a live member was still running"
            assert set(batch.members) == set(r.live) and len(batch.members) == len(r.live)
            keys = [(member * 7) % 5 for member in batch.members]
            assert keys == sorted(keys)
            for member, (owner, index) in batch.rows:
                assert owner == member
                answered[member].append(index)
                running.add(member)
    assert left == set(members) and r.live == set()
    assert answered == {m: list(range(scripts[m])) for m in members}


# ---------------------------------------------------------------------- one batch keeps each episode's noise
@pytest.fixture(scope="module")
def runner() -> PolicyRunner:
    from policies.flow.policy import FlowPolicy
    from policies.normalize import Normalizer

    torch.set_num_threads(1)
    policy = FlowPolicy(
        device="cpu", num_steps=4, select_samples=3, bid_samples=3, bid_weak_checkpoint="transfer_cube_prefix"
    )
    return PolicyRunner(policy, Normalizer.from_file("policies/flow/checkpoints/transfer_cube/stats.json"))


def _inputs(runner: PolicyRunner, seed: int) -> PolicyInput:
    m = runner.policy.metadata
    rng = np.random.default_rng(seed)
    h, w = m.image_size
    return PolicyInput(
        state=rng.normal(size=(1, m.state_dim)).astype(np.float32),
        images={c: rng.uniform(size=(1, 3, h, w)).astype(np.float32) for c in m.camera_names},
    )


def test_a_batch_gives_each_episode_the_chunks_it_gets_alone(runner):
    """Five episodes (seeds 5..9), each a plain first chunk then a guided one (VJP, identity, select:
    select runs alone on its stream; two bid ones, answered together by the policy's batched bid),
    answered two batches at a time; alone, each episode re-seeds the policy and asks twice. Same
    chunks to float tolerance, the same bid choices, and the policy's own generator is left as it
    was."""
    m = runner.policy.metadata
    seeds = [5, 6, 7, 8, 9]
    kinds = [Guidance.VJP, Guidance.IDENTITY, Guidance.SELECT, Guidance.BID, Guidance.BID]
    rng = np.random.default_rng(1)
    guides = [
        Guide(rng.normal(size=(m.chunk_size - 10, m.action_dim)).astype(np.float32), 3, 10, kind, Schedule.EXP, 5.0)
        for kind in kinds
    ]
    alone, reports = [], []
    for seed, guide in zip(seeds, guides):
        runner.reset_noise(seed)
        first = runner.infer(_inputs(runner, seed), None)
        second = runner.infer(_inputs(runner, seed + 100), guide)
        alone.append((first.robot, second.robot))
        reports.append(runner.policy.last_info())
    generator = noise_generator(runner.policy)
    before = generator.get_state()
    batcher = EpisodeBatcher(runner)
    streams = [batcher.noise_stream(seed) for seed in seeds]
    firsts = answer_rows(
        runner, [Row(_inputs(runner, s), None, st_) for s, st_ in zip(seeds, streams)], generator, True
    )
    seconds = answer_rows(
        runner, [Row(_inputs(runner, s + 100), g, st_) for s, g, st_ in zip(seeds, guides, streams)], generator, True
    )
    assert torch.equal(generator.get_state(), before)
    for (a1, a2), b1, b2, report in zip(alone, firsts, seconds, reports):
        assert b1.error is None and b2.error is None
        np.testing.assert_allclose(b1.result.robot, a1, atol=2e-4)
        np.testing.assert_allclose(b2.result.robot, a2, atol=2e-4)
        if "bid_index" in report:  # the batched bid reports its choice as the call alone does
            assert b2.fields["bid_index"] == report["bid_index"]
            assert b2.fields["bid_forward"] == pytest.approx(report["bid_forward"], abs=1e-4)
    assert sum("bid_index" in r for r in reports) == 2
    # the streams matter: episode 6's draws differ from episode 5's
    assert not np.allclose(alone[0][0], alone[1][0], atol=1e-3)


# ---------------------------------------------------------------------- P > 1 equals P = 1 on the sim
FLOW = [
    "algorithm=lockstep_eval",
    "policy=flow",
    "cameras=sim",
    "episodes=3",
    "max_steps=10",
    "report=false",
    "policy.num_steps=4",
    "policy.select_samples=3",
    "policy.bid_samples=3",
    "policy.bid_weak_checkpoint=transfer_cube_prefix",
    "policy.device=cpu",
    "algorithm.stop_on_success=false",
    "algorithm.methods=[naive,rtc,select,bid]",
    "algorithm.delays_ticks=[2]",
    "algorithm.execute_horizon=3",
]


def _inferences(run_dir) -> list[tuple]:
    rows = list(csv.DictReader((run_dir / "inferences.csv").open()))
    return sorted(
        (
            r["guidance"],
            int(r["episode"]),
            int(r["snapshot_tick"]),
            int(r["merge_tick"]),
            float(r["discontinuity"] or "nan"),
            float(r["plan_jump"] or "nan"),
        )
        for r in rows
    )


def test_episodes_side_by_side_get_the_chunks_they_get_one_at_a_time(tmp_path):
    tables, infs = {}, {}
    for p in (1, 3):
        summary = compose_run([*FLOW, f"algorithm.parallel_episodes={p}"], run_dir=tmp_path / str(p)).execute()
        tables[p] = {r["method"]: r for r in summary["table"]}
        infs[p] = _inferences(tmp_path / str(p))
    assert len(infs[1]) == len(infs[3]) > 0
    for one, side in zip(infs[1], infs[3]):
        assert one[:4] == side[:4]  # the same requests, merged at the same ticks, per episode
        np.testing.assert_allclose(side[4:], one[4:], atol=1e-4, equal_nan=True)
    for method, row in tables[1].items():
        other = tables[3][method]
        for key in ("episodes", "ticks", "inferences", "underruns", "rejected_chunks", "success_rate"):
            assert other[key] == row[key], (method, key)
        for key in ("discontinuity_mean", "plan_jump_mean", "max_step_planned"):
            assert other[key] == pytest.approx(row[key], abs=1e-4), (method, key)
    # the rows differ between methods: the comparison above can fail
    assert tables[1]["rtc"]["plan_jump_mean"] != pytest.approx(tables[1]["naive"]["plan_jump_mean"], abs=1e-4)


# ---------------------------------------------------------------------- faults in a batched cell
SEEDED = [
    "algorithm=lockstep_eval",
    "policy=hold",
    "cameras=none",
    "robot.render_in_lockstep=false",
    "robot._target_=tests.seed_fault_doubles.SeedTaggedSimRobot",
    "policy._target_=tests.seed_fault_doubles.SeedFaultPolicy",
    "~policy.type",
    "policy.chunk_size=10",
    "algorithm.execute_horizon=5",
    "algorithm.stop_on_success=false",
    "max_steps=30",
    "episodes=5",
    "seed=0",
    "algorithm.methods=[naive]",
    "algorithm.delays_ticks=[1]",
    "algorithm.max_rejected_chunks=3",
]


def _table(run_dir) -> list[dict]:
    return json.loads((run_dir / "lockstep.json").read_text())


@pytest.mark.parametrize("parallel", [1, 4])
def test_a_faulted_episode_ends_a_batched_cell_where_it_ends_one_at_a_time(tmp_path, parallel):
    """Episode 2 (seed 2) produces only NaN chunks: with the default the cell (and the run) end after
    it, episodes 0-2 counted; with ``fault_ends_cell=false`` it fails alone and all five run."""
    args = [*SEEDED, "+policy.nan_seeds=[2]", f"algorithm.parallel_episodes={parallel}"]
    with pytest.raises(AlgorithmFault, match="chunks in a row rejected"):
        compose_run(args, run_dir=tmp_path / "ends").execute()
    (row,) = _table(tmp_path / "ends")
    assert row["episodes"] == 3 and row["fault"] == "chunks_rejected" and row["rejected_chunks"] == 3, row
    summary = compose_run([*args, "algorithm.fault_ends_cell=false"], run_dir=tmp_path / "goes_on").execute()
    (row,) = summary["table"]
    assert row["episodes"] == 5 and row["faulted_episodes"] == 1, row
    assert row["fault"] == "chunks_rejected in 1 episode(s)" and row["rejected_chunks"] == 3
    assert row["ticks"] == 4 * 30  # the four healthy episodes ran to the end; the faulted one never moved
    assert summary["rejected_chunks"] == 3  # the workers' counters reach the run's summary


@pytest.mark.parametrize("parallel", [1, 4])
def test_a_policy_raising_in_one_episode_is_an_inference_error_alone_or_batched(tmp_path, parallel):
    """In episode 2 (seed 2) every policy call raises: a named ``inference_error`` that ends the
    cell where it does one episode at a time (not a traceback out of the batch), and with
    ``fault_ends_cell=false`` that episode fails alone, before its first tick."""
    args = [*SEEDED, "+policy.raise_seeds=[2]", f"algorithm.parallel_episodes={parallel}"]
    with pytest.raises(AlgorithmFault, match="SeedFaultPolicy raised in the episode of seed 2") as raised:
        compose_run(args, run_dir=tmp_path / "ends").execute()
    assert str(raised.value.kind) == "inference_error", raised.value.line()
    (row,) = _table(tmp_path / "ends")
    assert row["episodes"] == 3 and row["fault"] == "inference_error", row
    summary = compose_run([*args, "algorithm.fault_ends_cell=false"], run_dir=tmp_path / "goes_on").execute()
    (row,) = summary["table"]
    assert row["episodes"] == 5 and row["faulted_episodes"] == 1, row
    assert row["fault"] == "inference_error in 1 episode(s)" and row["ticks"] == 4 * 30, row


def test_a_robot_fault_in_one_batched_episode_ends_the_run(tmp_path):
    """A NaN state in episode 1 only raises out of its episode: the run ends with that fault, as it
    does one episode at a time."""
    args = [*SEEDED, "+robot.nan_state_seeds=[1]", "algorithm.parallel_episodes=3"]
    with pytest.raises(AlgorithmFault, match="non-finite observation"):
        compose_run(args, run_dir=tmp_path).execute()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fault"]["kind"] == "observation", summary["fault"]


# ---------------------------------------------------------------------- (delay, execute horizon) cells
def test_cells_follow_paired_execute_horizons_and_rows_record_them(tmp_path):
    """The paper's protocol: s = max(d, 1) per delay, and an s sweep at d = 1, in one run; each row
    says its s, and the chunk bookkeeping follows it (s actions per chunk at s >= d: one inference
    per s ticks)."""
    args = [*SEEDED, "episodes=1", "algorithm.delays_ticks=[0,2,1,1]", "algorithm.execute_horizons=[1,2,3,5]"]
    summary = compose_run(args, run_dir=tmp_path).execute()
    cells = [(r["delay_ticks"], r["execute_horizon"]) for r in summary["table"]]
    assert cells == [(0, 1), (2, 2), (1, 3), (1, 5)]
    for row in summary["table"]:
        s = row["execute_horizon"]
        assert row["ticks"] == 30 and row["underruns"] == 0, row
        # the first chunk runs s + d actions, each later one s: about ticks / s inferences
        assert abs(row["inferences"] - 30 / s) <= 2, row
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert {int(r["s"]) for r in infs if int(r["s"]) > 0} == {1, 2, 3, 5}


@pytest.mark.parametrize(
    "extra, message",
    [
        (["algorithm.execute_horizons=[1,2]"], r"algorithm.execute_horizons: .*one per delay"),
        (
            ["algorithm.delays_ticks=[1]", "algorithm.execute_horizons=[11]"],
            r"algorithm.execute_horizons: .*chunk_size=10",
        ),
        (["+algorithm.s_min=2"], r"algorithm.s_min: renamed: use algorithm.execute_horizon"),
        (["algorithm.parallel_episodes=0"], r"algorithm.parallel_episodes"),
    ],
)
def test_bad_cell_knobs_are_config_errors_naming_the_key(tmp_path, extra, message):
    from inference.validation import ConfigError

    with pytest.raises((ConfigError, ValueError), match=message):
        compose_run([*SEEDED, "algorithm.delays_ticks=[0,1,2]", *extra], run_dir=tmp_path)
