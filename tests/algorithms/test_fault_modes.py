"""The same faults through all five execution modes, with the same outcome in each.

Every mode runs the one control loop (algorithms/loop.py) and differs only in the transport: the
spawned inference process (``rtc``), a Ray actor on a local two-node cluster (``rtc_split``), the
shared fleet service on Ray Serve (``rtc_fleet``, its app deployed on the same cluster with the
fault policy), the in-process blocking call (``sequential``) and the in-process simulated delay
(``lockstep_eval``, the evaluation oracle). A policy that, after two good chunks,

* turns implausible (finite but absurd) or NaN: each such chunk is rejected and the run ends after
  ``max_rejected_chunks`` of them in a row with a ``chunks_rejected`` fault;
* raises: the run ends with an ``inference_error``;
* hangs: the run ends with an ``inference_timeout`` after ``inference_timeout_s``;

and in every mode no bad value reaches the robot, which is left holding its last safe command.
``max_restarts`` means the same in the three real-time modes: one restart, then the same fault ends
the run. The Ray modes need the cluster, so this module runs inside scripts/netns.py.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from inference.app import compose_run
from services.errors import AlgorithmFault
from tests.algorithms.test_faults import assert_fault, assert_robot_held, summary_of
from tests.algorithms.test_rtc_runtime import ROOT, UNTIL_FAULT, check_commands, overrides

MODES = ["rtc", "rtc_split", "rtc_fleet", "sequential", "lockstep_eval"]
REALTIME_REMOTE = ["rtc", "rtc_split", "rtc_fleet"]  # the modes whose inference side can be replaced
MAX_REJECTED = 3
HANG_S = 60  # far past the bound below; an abandoned in-process call ends by itself after this
INFERENCE_TIMEOUT_S = 3


@dataclass(frozen=True)
class Fault:
    """A policy fault (``FaultPolicy`` overrides), the kind it must end in and words of its message."""

    policy: tuple[str, ...]
    kind: str
    text: str


FAULTS = {
    "huge": Fault(("+policy.mode=huge",), "chunks_rejected", "implausible chunk"),
    "nan_chunk": Fault(("+policy.mode=nan_chunk",), "chunks_rejected", "non-finite"),
    "raise": Fault(("+policy.mode=raise",), "inference_error", "FaultPolicy exploded"),
    "hang": Fault(("+policy.mode=sleep", f"+policy.sleep_s={HANG_S}"), "inference_timeout", "inference timeout"),
}


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
        head = start_node(
            "head",
            auth_mode="disabled",
            start_timeout_s=90,
            temp_dir=temp_dir,
            port=0,
            dashboard_port=_free_port(),
            ray_client_server_port=_free_port(),
            **flags,
        )
        start_node(
            "worker",
            auth_mode="disabled",
            start_timeout_s=90,
            temp_dir=temp_dir,
            head_address=head.address,
            resources={"inference_pc": 1},
            include_log_monitor=False,
            **flags,
        )
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


@pytest.fixture(scope="module")
def fleet_apps(ray_address):
    """``deploy(name, policy_overrides)``: the fleet service's Serve application ``name`` on the
    module's cluster, serving the fault policy as ``python -m inference.fleet serve`` deploys it
    (in this process; one replica, unbatched, no CPU reserved). Removed at the module's end."""
    pytest.importorskip("ray.serve")
    from ray import serve

    from inference.fleet.__main__ import deploy, join, load

    deployed: list[str] = []

    def deploy_app(name: str, policy: list[str]) -> str:
        if name in deployed:
            return name
        cfg, fleet = load(
            [
                *policy,
                f"fleet.address={ray_address}",
                f"fleet.app_name={name}",
                "fleet.num_cpus=0",
                "fleet.max_batch_size=1",
                "fleet.torch_threads=1",
                "fleet.deploy_timeout_s=240",
            ]
        )
        join(fleet)
        deploy(cfg, fleet)
        deployed.append(name)
        return name

    yield deploy_app
    for name in deployed:
        try:
            serve.delete(name, _blocking=False)
        except Exception:  # noqa: BLE001 - the cluster goes with the module's fixture anyway
            pass


def policy_overrides(tmp_path: Path, *extra: str) -> list[str]:
    """The fault runtime's policy keys (FaultPolicy, H = 10) and ``extra``: what the fleet service
    serves and what the robot's config promises about it."""
    return [a for a in overrides(tmp_path, *extra) if a.startswith(("policy", "~policy", "+policy"))]


def mode_overrides(
    tmp_path: Path, mode: str, policy: tuple[str, ...], request: pytest.FixtureRequest, app: str = ""
) -> list[str]:
    """The fault runtime's overrides (recording sim robot, fault policy, H = 10, execute horizon 5)
    with the mode's algorithm; the same chunk rules and bounds in every mode. ``app``: the fleet
    app's name (default: one per policy, deployed on first use)."""
    args = [a for a in overrides(tmp_path, *policy) if a != "algorithm=rtc"]
    args = [
        f"algorithm={mode}",
        *args,
        f"algorithm.max_rejected_chunks={MAX_REJECTED}",
        "algorithm.max_chunk_jump=1.0",
        f"algorithm.inference_timeout_s={INFERENCE_TIMEOUT_S}",
    ]
    if mode == "rtc_split":
        args.append(f"algorithm.address={request.getfixturevalue('ray_address')}")
    if mode == "rtc_fleet":
        name = app or "fault_" + "_".join(p.split("=", 1)[1] for p in policy if p.startswith("+policy.mode"))
        request.getfixturevalue("fleet_apps")(name, policy_overrides(tmp_path, *policy))
        args += [f"algorithm.address={request.getfixturevalue('ray_address')}", f"algorithm.app_name={name}"]
    if mode == "lockstep_eval":
        args += ["algorithm.methods=[naive]", "algorithm.delays_ticks=[1]"]
    else:  # real time: the fault ends the run, not a tick budget a slow host spends before it
        args.append(UNTIL_FAULT)
    return args


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("fault", list(FAULTS))
@pytest.mark.parametrize("mode", MODES)
def test_the_same_fault_ends_the_same_way_in_every_mode(tmp_path, mode, fault, request):
    spec = FAULTS[fault]
    run = compose_run(mode_overrides(tmp_path, mode, spec.policy, request), run_dir=tmp_path)
    with pytest.raises(AlgorithmFault) as raised:
        run.execute()
    assert str(raised.value.kind) == spec.kind, raised.value.line()
    fault = assert_fault(tmp_path, spec.kind, spec.text)
    assert "\n" not in fault["message"], fault  # one line, a remote policy's traceback left in its own log
    summary = summary_of(tmp_path)
    assert summary["restarts"] == 0, summary  # max_restarts defaults to 0 wherever it exists
    events = (tmp_path / "events.jsonl").read_text()
    if spec.kind == "chunks_rejected":
        assert summary["rejected_chunks"] == MAX_REJECTED, summary
        assert events.count('"chunk_rejected"') == MAX_REJECTED
        assert events.count(spec.text) >= MAX_REJECTED
    else:
        assert summary["rejected_chunks"] == 0 and '"chunk_rejected"' not in events, summary
    # nothing of a bad chunk reached the robot: every command finite, within the slew limit, and
    # near where the robot started (the good chunks move 0.02 per index; a huge one is 1e6 away);
    # the fault came after two good chunks, and the robot was left holding
    sent = check_commands(tmp_path, run)
    assert float(np.max(np.abs(sent - sent[0]))) < 1.0
    assert_robot_held(tmp_path)


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("mode", REALTIME_REMOTE)
def test_max_restarts_means_the_same_in_every_real_time_mode(tmp_path, mode, request):
    """``algorithm.max_restarts=1`` and a policy that raises from its 3rd call on (in the fleet: on
    the service's replica, whose calls go on counting): the inference side is replaced once (a new
    process, a new actor, the next request to the service), the robot keeps running, and the same
    fault then ends the run."""
    policy = ("+policy.mode=raise",)
    args = [*mode_overrides(tmp_path, mode, policy, request, app="restart_raise"), "algorithm.max_restarts=1"]
    run = compose_run(args, run_dir=tmp_path)
    with pytest.raises(AlgorithmFault, match="FaultPolicy exploded"):
        run.execute()
    assert_fault(tmp_path, "inference_error", "FaultPolicy exploded")
    summary = summary_of(tmp_path)
    assert summary["restarts"] == 1, summary
    events = (tmp_path / "events.jsonl").read_text()
    assert events.count('"inference_fault"') == 2, events  # the one restarted, the one that ended the run
    check_commands(tmp_path, run)
    assert_robot_held(tmp_path)


@pytest.mark.timeout(300)
def test_a_study_that_lets_faulted_episodes_fail_runs_every_seed(tmp_path, request):
    """``algorithm.fault_ends_cell=false``: each episode's chunks_rejected fault fails that episode
    (the robot held, nothing bad sent), the next starts from home, the row counts them and the run
    ends normally; with the default the first fault ends the cell and the run."""
    args = [
        *mode_overrides(tmp_path, "lockstep_eval", FAULTS["nan_chunk"].policy, request),
        "episodes=3",
        "algorithm.fault_ends_cell=false",
    ]
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
