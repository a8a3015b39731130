"""launcher=ray and algorithm=rtc_split on a real two-node Ray cluster on this machine.

One cluster per module (head + a worker advertising ``inference_pc``, 1 CPU and a 100 MB object
store each), started and stopped with ``inference.cluster`` (the code users run), always stopped by
the fixture's finalizer. Every Ray command here uses RAY_AUTH_MODE=disabled.
"""

from __future__ import annotations

import _thread
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest

ray = pytest.importorskip("ray")

from hydra.utils import instantiate  # noqa: E402

from inference.app import compose_run  # noqa: E402
from inference.cluster import read_address, running_groups, start_node, stop_nodes  # noqa: E402
from inference.launcher.ray import LaunchError, RayLauncher  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]
NODE_FLAGS = dict(num_cpus=1, object_store_memory_bytes=100 * 1024 * 1024)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def cluster():
    """(address, temp_dir, worker node id) of a fresh head + inference_pc worker."""
    old_mode = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    temp_dir = tempfile.mkdtemp(prefix="rayt", dir="/tmp")  # short: Ray's socket paths are length-limited
    try:
        head = start_node(
            "head",
            auth_mode="disabled",
            start_timeout_s=90,
            temp_dir=temp_dir,
            port=0,
            dashboard_port=_free_port(),
            ray_client_server_port=_free_port(),
            **NODE_FLAGS,
        )
        start_node(
            "worker",
            auth_mode="disabled",
            start_timeout_s=90,
            temp_dir=temp_dir,
            head_address=head.address,
            resources={"inference_pc": 1},
            include_log_monitor=False,
            **NODE_FLAGS,
        )
        yield head.address, temp_dir
    finally:
        if ray.is_initialized():
            ray.shutdown()
        stop_nodes(temp_dir, grace_s=5.0)
        shutil.rmtree(temp_dir, ignore_errors=True)
        if old_mode is None:
            os.environ.pop("RAY_AUTH_MODE", None)
        else:
            os.environ["RAY_AUTH_MODE"] = old_mode


def _worker_node_id() -> str:
    ids = [n["NodeID"] for n in ray.nodes() if n["Alive"] and n["Resources"].get("inference_pc")]
    assert len(ids) == 1, ray.nodes()
    return ids[0]


def test_cluster_cli_status_counts_both_nodes(cluster):
    address, temp_dir = cluster
    assert read_address(temp_dir) == address
    assert len(running_groups(temp_dir)) == 2
    out = subprocess.run(
        [sys.executable, "-m", "inference.cluster", "role=status", f"temp_dir={temp_dir}"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    assert f"2 node(s) running under {temp_dir}; address {address}" in out.stdout


@pytest.mark.skipif(
    os.environ.get("RT_NETNS") != "private",
    reason="outside the loopback-only namespace (scripts/netns.py) Ray 2.60 takes the routable address",
)
def test_every_node_is_on_loopback_in_the_namespace(cluster):
    address, _ = cluster
    RayLauncher(address=address, connect_timeout_s=30).connect()
    assert address.startswith("127.0.0.1:"), address
    assert {n["NodeManagerAddress"] for n in ray.nodes() if n["Alive"]} == {"127.0.0.1"}, ray.nodes()


def test_actor_lands_on_the_inference_pc_worker(cluster):
    address, _ = cluster
    launcher = RayLauncher(address=address, connect_timeout_s=30)
    launcher.connect()
    actor = launcher.create_actor(address)
    try:
        assert launcher.placement["node_id"] == _worker_node_id()
        assert launcher.placement["resources"].get("inference_pc") == 1.0
    finally:
        ray.kill(actor)


def test_missing_resource_is_a_named_error_not_a_wait(cluster):
    """No node has the resource: a LaunchError naming it and every node's resources, instead of
    waiting for a node forever (a hang would meet the suite's per-test timeout; how soon it comes
    is the machine's load, not asserted)."""
    address, _ = cluster
    launcher = RayLauncher(address=address, resources={"gpu_box": 1}, placement_timeout_s=5)
    with pytest.raises(LaunchError) as err:
        launcher.create_actor(launcher.connect())
    msg = str(err.value)
    assert "gpu_box=1" in msg and address in msg
    assert "inference_pc=1" in msg  # the worker's resources are listed
    assert msg.count("(node ") == 2  # both nodes are named


def test_no_cluster_is_a_named_error_not_a_wait():
    """Nobody listens at the address: a LaunchError naming it after connect_timeout_s (a hang would
    meet the suite's per-test timeout; how soon is the machine's load, not asserted)."""
    address = f"127.0.0.1:{_free_port()}"
    launcher = RayLauncher(address=address, connect_timeout_s=2)
    with pytest.raises(LaunchError, match=f"no Ray cluster reachable at {address}"):
        launcher.connect()


def _run(tmp_path: Path, *overrides: str):
    run = compose_run(["robot=sim", "cameras=none", "policy=scripted", *overrides], run_dir=tmp_path)
    return run, instantiate(run.cfg.launcher, _partial_=True)()


def test_launcher_ray_run_completes_and_telemetry_arrives(cluster, tmp_path):
    address, _ = cluster
    run, launcher = _run(
        tmp_path,
        "launcher=ray",
        f"launcher.address={address}",
        "algorithm=sequential",
        "robot.realtime=false",
        "max_steps=30",
        "launcher.poll_interval_s=0.2",
    )
    summary = launcher.launch(run)
    assert launcher.placement["node_id"] == _worker_node_id()
    assert summary["ticks"] == 30
    for name in ("ticks.csv", "inferences.csv", "events.jsonl", "summary.json", "config_resolved.yaml", "actor.log"):
        assert (tmp_path / name).is_file(), name
    rows = (tmp_path / "ticks.csv").read_text().strip().splitlines()
    assert len(rows) == 31  # header + 30 ticks
    assert json.loads((tmp_path / "summary.json").read_text())["ticks"] == 30
    assert "episode 0: 30 ticks" in (tmp_path / "actor.log").read_text()
    # the actor's own run dir (same machine here) is removed once its files arrived
    assert launcher.remote_dir and not Path(launcher.remote_dir).exists()


def test_ctrl_c_stops_the_run_in_the_actor_and_kills_it(cluster, tmp_path):
    address, _ = cluster
    run, launcher = _run(
        tmp_path,
        "launcher=ray",
        f"launcher.address={address}",
        "algorithm=sequential",
        "max_steps=2000",
        "launcher.poll_interval_s=0.2",
    )

    def interrupt_when_ticking() -> None:
        deadline = time.monotonic() + 60
        ticks = tmp_path / "ticks.csv"
        while time.monotonic() < deadline:
            if ticks.exists() and len(ticks.read_text().splitlines()) > 10:
                break
            time.sleep(0.1)
        _thread.interrupt_main()

    threading.Thread(target=interrupt_when_ticking, daemon=True).start()
    with pytest.raises(KeyboardInterrupt):  # a launch that ignored it would meet the per-test timeout
        launcher.launch(run)
    summary = json.loads((tmp_path / "summary.json").read_text())  # written by the run's own Ctrl-C path
    assert 10 < summary["ticks"] < 2000
    assert launcher.remote_dir and Path(launcher.remote_dir).is_dir()  # kept after an interrupted run
    shutil.rmtree(launcher.remote_dir, ignore_errors=True)
    deadline = time.monotonic() + 120  # a condition with a generous deadline (a loaded host is slow)
    while any(a["name"].startswith("run-") for a in ray.util.list_named_actors(all_namespaces=True)):
        assert time.monotonic() < deadline, "the run's actor is still alive after Ctrl-C"
        time.sleep(0.2)


def test_split_mode_runs_sim_rtc_with_transport_in_the_delay(cluster, tmp_path):
    address, _ = cluster
    run, launcher = _run(
        tmp_path,
        "algorithm=rtc_split",
        f"algorithm.address={address}",
        "max_steps=200",
        "algorithm.execute_horizon=10",
        "algorithm.initial_delay_ticks=0",
        "algorithm.warmup_inferences_excluded=0",
        "algorithm.stop_on_success=false",
    )
    summary = launcher.launch(run)  # launcher=local: the control loop runs in this process
    assert summary["algorithm"] == "rtc_split"
    assert summary["inference_node"] == _worker_node_id()[:16]
    # how many inferences fit in 200 ticks (10 s), and whether one missed its slot (an underrun), is
    # the machine's load: the run completes, and the guided ones carry the transport in their delay
    assert summary["ticks"] == 200
    import csv

    rows = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    guided = [r for r in rows if r["guidance"] == "vjp"]
    assert len(guided) >= 1, rows
    d_actual = [int(r["d_actual"]) for r in guided]
    assert min(d_actual) >= 1  # a chunk never arrives within the tick it was asked for
    for r in guided:
        assert float(r["server_ms"]) < float(r["latency_ms"])  # latency = server + transport
    # d comes from the delays measured on the control side (transport included): d_k = max(d_1..d_{k-1})
    for k in range(1, len(guided)):
        assert int(guided[k]["d_estimate"]) == min(max(d_actual[max(0, k - 10) : k]), 50 - int(guided[k]["s"]))
    assert summary["transport_ms_p50"] > 0


def test_split_mode_runs_training_time_rtc_on_the_worker(cluster, tmp_path):
    """``guidance: trained`` through the Ray actor: a prefix-trained flow checkpoint (the bundled
    weights with ``train_prefix_max`` declared: the mode's plumbing, not its quality)."""
    from tests.policies.test_training_time_rtc import _declared_prefix_checkpoint

    address, _ = cluster
    ck = _declared_prefix_checkpoint(tmp_path)
    run = compose_run(
        [
            "robot=sim",
            "policy=flow",
            f"policy.checkpoint={ck}",
            "algorithm=rtc_split",
            f"algorithm.address={address}",
            "algorithm.guidance=trained",
            "algorithm.max_chunk_jump=null",
            "algorithm.stop_on_success=false",
            "algorithm.execute_horizon=10",
            "max_steps=60",
            "report=false",
        ],
        run_dir=tmp_path / "run",
    )
    summary = instantiate(run.cfg.launcher, _partial_=True)().launch(run)
    assert summary["algorithm"] == "rtc_split" and summary.get("fault") is None
    import csv

    rows = list(csv.DictReader((tmp_path / "run" / "inferences.csv").open()))
    assert sum(r["guidance"] == "trained" for r in rows) >= 2, [r["guidance"] for r in rows]
