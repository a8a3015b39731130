"""RTC end to end on the real-time sim robot: normal run and the faults that must not move the arm.

Each run spawns the real inference process and ticks the real MuJoCo sim at 50 Hz for ~2 s.
Commands the robot received are recorded by tests.rtc_fault_policies.RecordingSimRobot.
"""

from __future__ import annotations

import csv
import glob
import json
import logging
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from inference.app import compose_run
from services.errors import AlgorithmFault

ROOT = Path(__file__).resolve().parents[2]
HZ = 50


# For a run that a fault must end: no tick budget a slow host could spend before the policy has been
# called often enough to misbehave (the fault ends it; a hang meets the suite's per-test timeout).
UNTIL_FAULT = "max_steps=100000"


def overrides(tmp_path: Path, *extra: str) -> list[str]:
    return [
        "algorithm=rtc",
        "policy=hold",
        "cameras=none",
        f"robot.hz={HZ}",
        "max_steps=100",
        "robot.max_state_age_s=30",  # staleness is not what these tests are about: a loaded host must not trip it
        "robot._target_=tests.rtc_fault_policies.RecordingSimRobot",
        f"+robot.record_path={tmp_path}/sent.npy",
        "policy._target_=tests.rtc_fault_policies.FaultPolicy",
        "~policy.type",
        "policy.chunk_size=10",
        "algorithm.execute_horizon=5",
        "algorithm.initial_delay_ticks=1",
        "algorithm.stop_on_success=false",
        *extra,
    ]


def our_blocks() -> list[str]:
    return glob.glob(f"/dev/shm/rtc_run_{os.getpid()}_*")


def check_commands(tmp_path: Path, run) -> np.ndarray:
    """Every command finite and within the per-tick slew limit of the robot."""
    sent = np.load(tmp_path / "sent.npy")
    assert len(sent) > 10
    assert np.all(np.isfinite(sent))
    robot = run.make_robot()
    try:
        limit = robot.spec.max_delta
    finally:
        robot.stop()
    assert np.all(np.abs(np.diff(sent, axis=0)) <= limit + 1e-9), "a command jumped past the slew limit"
    return sent


def test_normal_run_reports_and_estimates_the_delay(tmp_path):
    """A normal real-time run: every tick recorded, every command finite and slew-limited, the
    delay estimate follows the observed delays. Whether an inference misses its slot (an underrun)
    is the machine's load here; that none does at these delays is checked in lockstep, where time is
    simulated (test_rtc_lockstep), so here the count only has to agree with the ticks written."""
    run = compose_run(overrides(tmp_path, "algorithm.initial_delay_ticks=3"), run_dir=tmp_path)
    summary = run.execute()
    assert summary["ticks"] == 100
    flagged = [int(r["underrun"] or 0) for r in csv.DictReader((tmp_path / "ticks.csv").open())]
    assert len(flagged) == 100 and summary["underruns"] == sum(flagged) < 100
    assert summary["rejected_chunks"] == 0
    assert summary["discarded_results"] == 0  # no inference ever started from a superseded chunk
    assert summary["inferences"] >= 10
    for key in (
        "period_error_ms_p99",
        "inference_latency_ms_p50",
        "inference_latency_ms_p99",
        "d_estimate_p50",
        "d_actual_max",
    ):
        assert key in summary
    assert summary["d_actual_p50"] >= 1  # a chunk is merged at the earliest one tick after its snapshot
    on_disk = json.loads((tmp_path / "summary.json").read_text())
    assert on_disk["underruns"] == summary["underruns"]
    check_commands(tmp_path, run)
    assert our_blocks() == []
    # delay estimate = max over the window of observed delays; the first (warm-up) one excluded,
    # before any recorded delay the configured initial value
    rows = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    d_actual = [int(r["d_actual"]) for r in rows[1:]]
    d_est = [int(r["d_estimate"]) for r in rows[1:]]
    assert d_est[0] == 3 and d_est[1] == 3
    for k in range(2, len(rows) - 1):
        assert d_est[k] == max(d_actual[1:k][-10:]), (k, d_est, d_actual)


@pytest.mark.slow
def test_select_stale_gate_reaches_the_records_of_a_real_time_run(tmp_path):
    """The bundled flow policy under real-time RTC with ``select`` and its stale gate: the inference
    process's policy reports per chunk whether the gate fired, and the shared-memory reply carries it
    into ``inferences.csv`` as the lockstep and blocking transports do (it was blank here before).
    The plausibility check is off (the slew limit still holds every command): on a loaded 2-core
    CI host the chunks came late enough to be rejected three in a row, a fault that ends the run
    and is tested elsewhere (test_faults, test_fault_modes), not what this test is about."""
    run = compose_run(
        [
            "policy=flow",
            "algorithm=rtc",
            "algorithm.guidance=select",
            "policy.select_stale_gate=true",
            "policy.select_samples=4",
            "max_steps=600",
            "episodes=1",
            "logger=none",
            "algorithm.stop_on_success=false",
            "algorithm.max_chunk_jump=null",
            "cameras.max_frame_age_s=30",
            "robot.max_state_age_s=30",
            "algorithm.inference_timeout_s=120",
        ],
        run_dir=tmp_path,
    )
    summary = run.execute()
    rows = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert rows[0]["guidance"] == "none" and rows[0]["select_stale"] == ""  # the first chunk: nothing to select
    flags = [r["select_stale"] for r in rows[1:] if r["guidance"] == "select"]
    assert flags and set(flags) <= {"0.0", "1.0"}, rows
    assert summary["select_stale_rate"] == pytest.approx(np.mean([float(f) for f in flags]))
    assert our_blocks() == []


def _kill_inference_when_running(run_dir: Path, sig: int, after_ticks: int = 30) -> threading.Thread:
    def killer():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            ticks = run_dir / "ticks.csv"
            if ticks.exists() and len(ticks.read_text().splitlines()) > after_ticks:
                for child in mp.active_children():
                    if child.name == "rtc-inference":
                        os.kill(child.pid, sig)
                        return
            time.sleep(0.02)

    thread = threading.Thread(target=killer, daemon=True)
    thread.start()
    return thread


def test_kill9_inference_finishes_chunk_holds_and_fails(tmp_path):
    run = compose_run(overrides(tmp_path, "max_steps=400"), run_dir=tmp_path)
    _kill_inference_when_running(tmp_path, signal.SIGKILL)
    with pytest.raises(AlgorithmFault, match="killed by signal 9"):
        run.execute()
    sent = check_commands(tmp_path, run)
    assert len(sent) < 400  # the run ended after the chunk ran out, not at max_steps
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "signal 9" in summary["fault"]["message"] and summary["fault"]["kind"] == "inference_died"
    assert our_blocks() == []


def test_policy_slower_than_a_chunk_underruns_and_holds(tmp_path):
    # chunk of 10 at 50 Hz lasts 0.2 s; from the 3rd call on every inference takes 0.5 s
    run = compose_run(overrides(tmp_path, "+policy.mode=sleep", "+policy.sleep_s=0.5"), run_dir=tmp_path)
    summary = run.execute()
    assert summary["underruns"] > 0
    assert summary["held_ticks"] >= summary["underruns"]
    assert summary["fault"] is None
    sent = check_commands(tmp_path, run)
    ticks = np.genfromtxt(tmp_path / "ticks.csv", delimiter=",", names=True)
    under = ticks["underrun"].astype(bool)
    # while underrunning the same command is held
    idx = np.flatnonzero(under[1:] & under[:-1]) + 1
    assert np.all(np.abs(sent[idx] - sent[idx - 1]) == 0)
    assert our_blocks() == []


def test_nan_chunk_rejected_never_sent(tmp_path):
    run = compose_run(overrides(tmp_path, "+policy.mode=nan_chunk", UNTIL_FAULT), run_dir=tmp_path)
    # from the 3rd call on every chunk holds a NaN: after max_rejected_chunks (3) in a row the run ends
    with pytest.raises(AlgorithmFault, match="3 chunks in a row rejected"):
        run.execute()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["fault"]["kind"] == "chunks_rejected"
    assert summary["rejected_chunks"] >= 1
    assert summary["ticks"] < 100  # the last good chunk ran out, nothing replaced it: hold and end
    check_commands(tmp_path, run)
    events = (tmp_path / "events.jsonl").read_text()
    assert "chunk_rejected" in events and "non-finite" in events


def test_policy_exception_traceback_reaches_main_log(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    run = compose_run(overrides(tmp_path, "+policy.mode=raise", UNTIL_FAULT), run_dir=tmp_path)
    with pytest.raises(AlgorithmFault, match="FaultPolicy exploded"):
        run.execute()
    text = caplog.text
    assert "Traceback" in text and "FaultPolicy exploded on call 3" in text
    check_commands(tmp_path, run)
    assert our_blocks() == []


def test_policy_failing_to_build_fails_the_run_with_the_cause(tmp_path):
    run = compose_run(overrides(tmp_path, "+policy.mode=raise_at_build"), run_dir=tmp_path)
    with pytest.raises(AlgorithmFault, match="failed at start.*cannot load its weights"):
        run.execute()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "cannot load its weights" in summary["fault"]["message"] and summary["fault"]["kind"] == "startup"
    assert our_blocks() == []


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", ["rtc", "sequential"])
def test_robot_refusing_a_command_is_a_reported_fault(tmp_path, algorithm):
    """The robot raises on send (its state went stale after the read): the run ends as a fault
    naming the cause, nothing more is sent, shared memory is released."""
    args = overrides(tmp_path, "+robot.refuse_send_after=20")
    if algorithm != "rtc":  # the RTC-only settings do not exist in the sequential config
        args = [
            f"algorithm={algorithm}",
            *(a for a in args if not a.startswith("algorithm")),
            "algorithm.execute_horizon=5",
            "algorithm.stop_on_success=false",
        ]
    run = compose_run(args, run_dir=tmp_path)
    with pytest.raises(AlgorithmFault, match="robot fault: joint state is 0.600 s old"):
        run.execute()
    assert len(np.load(tmp_path / "sent.npy")) == 20
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert "joint state is 0.600 s old" in summary["fault"]["message"] and summary["fault"]["kind"] == "robot"
    assert "fault" in (tmp_path / "events.jsonl").read_text()
    assert our_blocks() == []


def test_max_restarts_restarts_then_gives_up(tmp_path):
    """The policy raises in every process from its 5th call on: one new inference process
    (``max_restarts=1``), then the same fault ends the run."""
    run = compose_run(
        overrides(tmp_path, "+policy.mode=raise", "+policy.after_calls=4", UNTIL_FAULT, "algorithm.max_restarts=1"),
        run_dir=tmp_path,
    )
    with pytest.raises(AlgorithmFault):
        run.execute()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["restarts"] == 1 and summary["fault"]["kind"] == "inference_error", summary["fault"]
    events = (tmp_path / "events.jsonl").read_text()
    assert events.count("inference_process_start") == 2
    check_commands(tmp_path, run)


def _start_app(tmp_path: Path, *extra: str) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "inference",
        *overrides(tmp_path, "max_steps=100000", *extra),
        f"hydra.run.dir={tmp_path}",
    ]
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen(
        args, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True, text=True
    )


def _wait_ticking(proc: subprocess.Popen, tmp_path: Path, timeout_s: float = 180) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ticks = tmp_path / "ticks.csv"
        if ticks.exists() and len(ticks.read_text().splitlines()) > 20:
            return
        if proc.poll() is not None:
            pytest.fail(f"app exited early: {proc.stdout.read()}")
        time.sleep(0.05)
    pytest.fail("app never started ticking")


def _group_members(pgid: int) -> list[str]:
    """Live (non-zombie) processes of the run's process group: app, inference, resource tracker."""
    out = subprocess.run(["ps", "-e", "-o", "pid=,pgid=,stat=,args="], capture_output=True, text=True).stdout
    members = []
    for line in out.splitlines():
        pid, group, stat, *args = line.split(None, 3)
        if int(group) == pgid and not stat.startswith("Z"):
            members.append(line.strip())
    return members


def _group_alive(pgid: int) -> bool:
    return bool(_group_members(pgid))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["sigint_group", "sigterm_main"])
def test_ctrl_c_and_sigterm_stop_the_whole_group_cleanly(tmp_path, how):
    """Every process of the run ends by itself, exit 130, no shared memory left, nothing non-finite
    sent. How fast it stops (the 2 s target) is measured by benchmarks/bench_stop.py: on a loaded
    host the wait here is a generous condition, not a timing."""
    proc = _start_app(tmp_path)
    try:
        _wait_ticking(proc, tmp_path)
        pid = proc.pid
        if how == "sigint_group":
            os.killpg(pid, signal.SIGINT)  # what a terminal's Ctrl-C does
        else:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 120
        while _group_alive(pid) and time.monotonic() < deadline:
            proc.poll()
            time.sleep(0.05)
        assert not _group_alive(pid), f"a process of the run survived: {_group_members(pid)}"
        assert proc.wait() == 130, proc.stdout.read()[-3000:]
        assert glob.glob(f"/dev/shm/rtc_run_{pid}_*") == []
        sent = np.load(tmp_path / "sent.npy")
        assert np.all(np.isfinite(sent))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.slow
def test_kill9_of_control_process_leaves_no_shm_and_no_orphan(tmp_path):
    proc = _start_app(tmp_path)
    try:
        _wait_ticking(proc, tmp_path)
        pid = proc.pid
        assert glob.glob(f"/dev/shm/rtc_run_{pid}_*")
        os.kill(pid, signal.SIGKILL)
        proc.wait()
        deadline = time.monotonic() + 120  # a condition with a generous deadline: the host may be loaded
        while (_group_alive(pid) or glob.glob(f"/dev/shm/rtc_run_{pid}_*")) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _group_alive(pid), "inference process outlived its parent"
        assert glob.glob(f"/dev/shm/rtc_run_{pid}_*") == []
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
