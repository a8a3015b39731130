"""The same chunk faults through all four execution modes, with the same outcome in each.

Every mode runs the one control loop (algorithms/loop.py) and differs only in the transport: the
spawned inference process (``rtc``), a Ray actor on a local two-node cluster (``rtc_split``), the
in-process blocking call (``sequential``) and the in-process simulated delay (``lockstep_eval``, the
evaluation oracle). A policy that turns implausible (finite but absurd) or NaN after two good chunks
must in every mode: have each such chunk rejected, end after ``max_rejected_chunks`` of them in a row
with a ``chunks_rejected`` fault, and never let a bad value reach the robot.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import numpy as np
import pytest

from inference.app import compose_run
from services.errors import AlgorithmFault
from tests.algorithms.test_faults import assert_fault, summary_of
from tests.algorithms.test_rtc_runtime import ROOT, UNTIL_FAULT, check_commands, overrides

MODES = ["rtc", "rtc_split", "sequential", "lockstep_eval"]
FAULTS = {  # the policy's fault mode -> words of the rejection reason
    "huge": "implausible chunk",
    "nan_chunk": "non-finite",
}
MAX_REJECTED = 3


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    """A head + an ``inference_pc`` worker on this machine (inside the test's network namespace);
    the worker imports the test policies, so it gets the repository on its path."""
    pytest.importorskip("ray")
    import ray

    from inference.cluster import start_node, stop_nodes

    saved = {k: os.environ.get(k) for k in ("RAY_AUTH_MODE", "PYTHONPATH")}
    os.environ["RAY_AUTH_MODE"] = "disabled"
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), saved["PYTHONPATH"]) if p)
    temp_dir = tempfile.mkdtemp(prefix="rayf", dir="/tmp")  # short: Ray's socket paths are length-limited
    flags = dict(num_cpus=1, object_store_memory_bytes=100 * 1024 * 1024)
    try:
        head = start_node("head", auth_mode="disabled", start_timeout_s=90, temp_dir=temp_dir, port=0,
                          dashboard_port=_free_port(), ray_client_server_port=_free_port(), **flags)
        start_node("worker", auth_mode="disabled", start_timeout_s=90, temp_dir=temp_dir, head_address=head.address,
                   resources={"inference_pc": 1}, include_log_monitor=False, **flags)
        yield head.address
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(temp_dir, grace_s=5.0)
        shutil.rmtree(temp_dir, ignore_errors=True)
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def mode_overrides(tmp_path: Path, mode: str, fault: str, request: pytest.FixtureRequest) -> list[str]:
    """The fault runtime's overrides (recording sim robot, fault policy, H = 10, execute horizon 5)
    with the mode's algorithm; the same chunk rules in every mode."""
    args = [a for a in overrides(tmp_path, f"+policy.mode={fault}") if a != "algorithm=rtc"]
    args = [f"algorithm={mode}", *args, f"algorithm.max_rejected_chunks={MAX_REJECTED}", "algorithm.max_chunk_jump=1.0"]
    if mode == "rtc_split":
        args.append(f"algorithm.address={request.getfixturevalue('ray_address')}")
    if mode == "lockstep_eval":
        args += ["algorithm.methods=[naive]", "algorithm.delays_ticks=[1]"]
    else:  # real time: the fault ends the run, not a tick budget a slow host spends before it
        args.append(UNTIL_FAULT)
    return args


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("mode", MODES)
def test_bad_chunks_end_the_same_way_in_every_mode(tmp_path, mode, fault, request):
    run = compose_run(mode_overrides(tmp_path, mode, fault, request), run_dir=tmp_path)
    with pytest.raises(AlgorithmFault, match=f"{MAX_REJECTED} chunks in a row rejected"):
        run.execute()
    assert_fault(tmp_path, "chunks_rejected", FAULTS[fault])
    summary = summary_of(tmp_path)
    assert summary["rejected_chunks"] == MAX_REJECTED, summary
    events = (tmp_path / "events.jsonl").read_text()
    assert events.count('"chunk_rejected"') == MAX_REJECTED
    assert events.count(FAULTS[fault]) >= MAX_REJECTED
    # nothing of a bad chunk reached the robot: every command finite, within the slew limit, and
    # near where the robot started (the good chunks move 0.02 per index; a huge one is 1e6 away)
    sent = check_commands(tmp_path, run)
    assert float(np.max(np.abs(sent - sent[0]))) < 1.0


@pytest.mark.timeout(300)
def test_a_study_that_lets_faulted_episodes_fail_runs_every_seed(tmp_path, request):
    """``algorithm.fault_ends_cell=false``: each episode's chunks_rejected fault fails that episode
    (the robot held, nothing bad sent), the next starts from home, the row counts them and the run
    ends normally; with the default the first fault ends the cell and the run."""
    args = [*mode_overrides(tmp_path, "lockstep_eval", "nan_chunk", request), "episodes=3",
            "algorithm.fault_ends_cell=false"]
    run = compose_run(args, run_dir=tmp_path)
    summary = run.execute()
    (row,) = summary["table"]
    assert row["episodes"] == 3 and row["faulted_episodes"] == 3 and row["success_rate"] == 0.0, row
    assert row["fault"] == "chunks_rejected in 3 episode(s)" and row["rejected_chunks"] == 3 * MAX_REJECTED
    sent = np.load(tmp_path / "sent.npy")  # all three episodes (the arm is homed between them)
    assert len(sent) >= row["ticks"] and np.all(np.isfinite(sent))
    ended = compose_run([a for a in args if a != "algorithm.fault_ends_cell=false"], run_dir=tmp_path / "default")
    with pytest.raises(AlgorithmFault, match="chunks in a row rejected"):
        ended.execute()
