"""Bidirectional decoding (``guidance: bid``) through the app: a lockstep cell beside naive on the
same draws, and the in-process sequential mode. The bundled ``transfer_cube_prefix`` checkpoint
stands in for the weak policy of the bundled ``transfer_cube`` one (same dims, cameras and horizon)."""

from __future__ import annotations

import csv
import math

import pytest

from inference.app import compose_run

WEAK = ["policy.bid_weak_checkpoint=transfer_cube_prefix", "policy.bid_samples=3", "policy.num_steps=4"]


def test_a_bid_cell_runs_beside_naive_and_reports_each_choice(tmp_path):
    """Every bid inference, the episode's first included, reports which strong sample it kept and its
    two terms; the first chunk is chosen by forward contrast alone (backward 0), the later ones
    against the previous chunk (backward > 0: a fresh sample never repeats the old plan exactly)."""
    common = [
        "algorithm=lockstep_eval",
        "policy=flow",
        "cameras=sim",
        "episodes=1",
        "max_steps=40",
        "algorithm.delays_ticks=[4]",
        "algorithm.execute_horizon=10",
        "algorithm.stop_on_success=false",
        "report=false",
        "algorithm.methods=[naive,bid]",
        *WEAK,
    ]
    table = {(r["method"], r["delay_ticks"]): r for r in compose_run(common, run_dir=tmp_path).execute()["table"]}
    naive, bid = table[("naive", 4)], table[("bid", 4)]
    assert bid["guidance"] == "bid" and bid["ticks"] == naive["ticks"] == 40
    assert bid["rejected_chunks"] == 0 and bid["inferences"] >= 3, bid
    assert math.isfinite(bid["discontinuity_mean"]) and math.isfinite(bid["plan_jump_mean"])
    infs = [r for r in csv.DictReader((tmp_path / "inferences.csv").open()) if r["guidance"] == "bid:bid"]
    assert len(infs) == bid["inferences"], (len(infs), bid["inferences"])
    index = [float(r["bid_index"]) for r in infs]
    assert all(i in (0.0, 1.0, 2.0) for i in index), index
    backward = [float(r["bid_backward"]) for r in infs]
    assert backward[0] == 0.0 and all(b > 0 for b in backward[1:]), backward
    assert all(math.isfinite(float(r["bid_forward"])) for r in infs)
    naive_infs = [r for r in csv.DictReader((tmp_path / "inferences.csv").open()) if r["guidance"] == "naive:none"]
    assert naive_infs and all(r["bid_index"] == "" for r in naive_infs)


def test_bid_runs_in_the_sequential_mode(tmp_path):
    """The robot holds while the model thinks and every chunk runs from index 0; each chunk is still a
    bid choice (the first by forward contrast alone, the later ones also by agreement with the rest
    of the chunk they replace): the synchronous setting bidirectional decoding was made for."""
    run = compose_run(
        [
            "algorithm=sequential",
            "algorithm.guidance=bid",
            "algorithm.execute_horizon=10",
            "episodes=1",
            "max_steps=30",
            "report=false",
            *WEAK,
        ],
        run_dir=tmp_path,
    )
    summary = run.execute()
    assert summary["ticks"] == 30, summary
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert len(infs) >= 3 and {r["guidance"] for r in infs} == {"bid"}, [r["guidance"] for r in infs]
    assert float(infs[0]["bid_backward"]) == 0.0 and float(infs[1]["bid_backward"]) > 0


def test_a_bid_cell_draws_the_same_noise_alone_after_another_cell_and_side_by_side(tmp_path):
    """Common random numbers: both networks draw from the policy's generator, re-seeded per episode,
    so a bid cell's numbers are the same whether it runs after another cell or alone, and whether
    its episodes run one at a time or side by side (each episode's own noise stream; side by side,
    the episodes' bid requests share two batched sampling calls, whose products sum in another
    order: the same to float tolerance)."""
    common = [
        "algorithm=lockstep_eval",
        "policy=flow",
        "cameras=sim",
        "episodes=2",
        "max_steps=30",
        "algorithm.delays_ticks=[2]",
        "algorithm.execute_horizon=10",
        "algorithm.stop_on_success=false",
        "report=false",
        *WEAK,
    ]
    after = compose_run([*common, "algorithm.methods=[naive,bid]"], run_dir=tmp_path / "after").execute()["table"][1]
    alone = compose_run([*common, "algorithm.methods=[bid]"], run_dir=tmp_path / "alone").execute()["table"][0]
    side = compose_run(
        [*common, "algorithm.methods=[bid]", "algorithm.parallel_episodes=2"], run_dir=tmp_path / "side"
    ).execute()["table"][0]
    for key in ("discontinuity_mean", "plan_jump_mean", "max_jerk", "rms_jerk", "inferences"):
        assert after[key] == alone[key], (key, after[key], alone[key])
        assert side[key] == pytest.approx(alone[key], rel=1e-3), (key, alone[key], side[key])
    assert side["inferences"] == alone["inferences"]


@pytest.mark.slow
def test_bid_runs_in_the_real_time_inference_process_and_its_report_crosses_shared_memory(tmp_path):
    """``algorithm=rtc``: the spawned inference process loads both networks and answers every request,
    the first included, with a bid choice; the shared-memory reply carries its report into
    ``inferences.csv``. Generous ages and no plausibility check: on a loaded 2-core host a chunk
    may take seconds, which is not what this test is about (faults have tests of their own)."""
    run = compose_run(
        [
            "policy=flow",
            "algorithm=rtc",
            "algorithm.guidance=bid",
            *WEAK,
            "max_steps=300",
            "episodes=1",
            "logger=none",
            "report=false",
            "algorithm.stop_on_success=false",
            "algorithm.max_chunk_jump=null",
            "cameras.max_frame_age_s=30",
            "robot.max_state_age_s=30",
            "algorithm.inference_timeout_s=120",
        ],
        run_dir=tmp_path,
    )
    run.execute()
    rows = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert len(rows) >= 2 and {r["guidance"] for r in rows} == {"bid"}, [r["guidance"] for r in rows]
    assert all(r["bid_index"] in ("0.0", "1.0", "2.0") for r in rows), rows
    assert float(rows[0]["bid_backward"]) == 0.0 and float(rows[1]["bid_backward"]) > 0
