"""policy=openpi_remote against our own server (python -m inference.serve), on loopback.

The sim robot (lockstep) runs the ``hold`` policy through the websocket in sequential and RTC
modes; a server that is down at start is a bounded, clear error; a server killed mid-run (a real
subprocess, SIGKILL) ends the run with the robot holding and the cause in the error.
"""

from __future__ import annotations

import csv
import json
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from hydra import compose, initialize_config_dir

from inference.app import CONF_DIR, compose_run
from inference.serve import build_server
from policies.base import PolicyInput
from policies.openpi import OpenPIRemotePolicy, RemotePolicyError
from services.errors import AlgorithmFault, FaultKind

REPO = Path(__file__).resolve().parents[2]
HAS_RTC = (REPO / "algorithms" / "rtc" / "algorithm.py").exists()
BASE = ["robot=sim", "robot.realtime=false", "cameras=none", "policy=openpi_remote"]


def _in_process_server(*overrides: str):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=["policy=hold", "cameras=none", "serve.port=0", *overrides])
    server = build_server(cfg)
    server.start()
    return server


@pytest.fixture
def server():
    srv = _in_process_server()
    yield srv
    srv.stop()


class ServerProcess:
    """``python -m inference.serve`` as a real subprocess (so the test can SIGKILL it)."""

    def __init__(self, tmp_path: Path, *overrides: str) -> None:
        self.lines: list[str] = []
        self.port: int | None = None
        self._found = threading.Event()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "inference.serve",
                "policy=hold",
                "cameras=none",
                "serve.port=0",
                f"hydra.run.dir={tmp_path / 'serve'}",
                *overrides,
            ],
            cwd=REPO,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        threading.Thread(target=self._read, daemon=True).start()
        if not self._found.wait(90):
            self.kill()
            raise RuntimeError("server did not start:\n" + "".join(self.lines))

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.lines.append(line)
            m = re.search(r"serving \S+ on ws://127\.0\.0\.1:(\d+)", line)
            if m:
                self.port = int(m.group(1))
                self._found.set()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(10)


def _rows(path: Path) -> list[dict]:
    if not path.exists():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _kill_after_inferences(server: ServerProcess, run_dir: Path, n: int, timeout_s: float = 60.0) -> threading.Thread:
    def watch() -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline and len(_rows(run_dir / "inferences.csv")) < n:
            time.sleep(0.02)
        server.kill()

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


# ---------------------------------------------------------------------- normal operation
def test_sequential_sim_run_through_our_server(server, tmp_path):
    run = compose_run([*BASE, f"policy.port={server.port}", "max_steps=60", "algorithm=sequential"], tmp_path)
    summary = run.execute()
    assert summary["ticks"] == 60 and summary["inferences"] == 3
    assert server.requests == 3
    assert summary["held_ticks"] == 0 and summary["rejected_actions"] == 0


def test_scripted_expert_behind_the_server_solves_the_sim_task(tmp_path):
    """Privileged extras travel under obs_keys.info: the scripted expert succeeds through the wire."""
    srv = _in_process_server("policy=scripted")
    try:
        run = compose_run(
            [
                *BASE,
                f"policy.port={srv.port}",
                "policy.obs_keys.info=info",
                "robot.render_in_lockstep=false",
                "max_steps=400",
                "algorithm=sequential",
            ],
            tmp_path,
        )
        summary = run.execute()
    finally:
        srv.stop()
    assert summary["success_rate"] == 1.0 and summary["ticks"] < 400


@pytest.mark.skipif(not HAS_RTC, reason="algorithm=rtc not in this checkout yet")
def test_rtc_sim_run_through_our_server_with_blend(server, tmp_path):
    run = compose_run(
        [*BASE, f"policy.port={server.port}", "max_steps=80", "algorithm=rtc", "algorithm.guidance=vjp"], tmp_path
    )
    summary = run.execute()
    assert summary["ticks"] == 80 and summary["inferences"] >= 3
    assert server.requests >= summary["inferences"]  # one may be in flight at the end


def test_predict_shapes_timing_and_blend(server):
    policy = OpenPIRemotePolicy(
        chunk_size=50, action_dim=14, state_dim=14, port=server.port, connect_timeout_s=5, server_guidance=False
    )
    try:
        state = np.linspace(-1, 1, 14, dtype=np.float32)[None]
        chunk = policy.predict(PolicyInput(state=state))
        assert chunk.shape == (50, 14) and chunk.dtype == np.float32
        np.testing.assert_allclose(chunk, np.repeat(state, 50, 0), atol=1e-6)
        info = policy.last_info()
        assert info["server_ms"] is not None and info["server_ms"] >= 0 and info["rtt_ms"] >= info["server_ms"]
        assert policy.server_metadata["chunk_size"] == 50 and policy.metadata.supports_vjp is False
        prev = np.ones((50, 14), np.float32)
        out = policy.guided_inference(PolicyInput(state=state), prev, delay=3, execute_horizon=10, guidance="vjp")
        np.testing.assert_allclose(out[:3], prev[:3])  # W = 1 on the delay: the old chunk
        np.testing.assert_allclose(out[-10:], chunk[-10:])  # W = 0 on the free tail: the new chunk
    finally:
        policy.close()


def test_our_server_inpaints_with_the_policys_own_guidance():
    """Served flow policy: the client's guided_inference ships the previous chunk and the server
    runs the policy's VJP guidance -- the same chunk a local guided call makes from the same noise,
    pulled toward prev; server_guidance=false falls back to blending on the client."""
    srv = _in_process_server("policy=flow", "cameras=sim")
    H, D = srv.metadata["chunk_size"], srv.metadata["action_dim"]
    height, width = srv.metadata["image_size"]
    cams = srv.metadata["camera_names"]
    rng = np.random.default_rng(0)
    frames = {c: rng.integers(0, 256, (1, 3, height, width)).astype(np.uint8) for c in cams}
    state = np.zeros((1, 14), np.float32)
    obs = PolicyInput(state=state, images={c: f.astype(np.float32) / 255 for c, f in frames.items()})
    guided_client = OpenPIRemotePolicy(
        chunk_size=H, action_dim=D, state_dim=14, camera_names=cams, port=srv.port, connect_timeout_s=5
    )
    blend_client = OpenPIRemotePolicy(
        chunk_size=H,
        action_dim=D,
        state_dim=14,
        camera_names=cams,
        port=srv.port,
        connect_timeout_s=5,
        server_guidance=False,
    )
    policy, norm = srv.policy, srv.normalizer
    try:
        assert srv.metadata["rtc_guidance"] is True and guided_client.metadata.supports_vjp is True
        assert blend_client.metadata.supports_vjp is False
        policy.reset_noise()
        fresh = guided_client.predict(obs)
        prev = norm.action_to_robot(norm.action_to_model(fresh) + 0.5)  # a chunk the model finds unlikely
        d, s = 4, 25
        policy.reset_noise()
        guided = guided_client.guided_inference(
            obs, prev, delay=d, execute_horizon=s, guidance="vjp", max_guidance_weight=5.0
        )
        policy.reset_noise()
        local = norm.action_to_robot(
            policy.guided_inference(
                norm.policy_input(state, frames, {}),
                norm.action_to_model(prev),
                d,
                s,
                guidance="vjp",
                max_guidance_weight=5.0,
            )
        )
        np.testing.assert_allclose(guided, local, atol=1e-5)
        gap = lambda chunk: np.abs(norm.action_to_model(chunk[:d]) - norm.action_to_model(prev[:d])).mean()  # noqa: E731
        assert gap(guided) < 0.95 * gap(fresh), (gap(guided), gap(fresh))  # pulled toward prev, same noise
        blended = blend_client.guided_inference(obs, prev, delay=d, execute_horizon=s, guidance="vjp")
        np.testing.assert_allclose(blended[:d], prev[:d])  # blend: W = 1 on the delay
        with pytest.raises(RemotePolicyError, match="prev_actions has shape"):
            guided_client.guided_inference(obs, prev[:10], delay=d, execute_horizon=s)
    finally:
        guided_client.close()
        blend_client.close()
        srv.stop()


def test_observation_keys_come_from_config(tmp_path):
    """A server expecting openpi-ALOHA-style keys, configured on both ends without code."""
    keys = [
        "serve.obs_keys.state=state",
        "+serve.obs_keys.images.head=images/cam_high",
        "policy.camera_names=[head]",
        "cameras=sim",
        "serve.obs_keys.image_layout=hwc",
    ]
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="serve", overrides=["policy=hold", "serve.port=0", *keys])
    srv = build_server(cfg)
    srv.start()
    try:
        policy = OpenPIRemotePolicy(
            chunk_size=50,
            action_dim=14,
            state_dim=14,
            camera_names=["head"],
            port=srv.port,
            obs_keys={"state": "state", "images": {"head": "images/cam_high"}, "image_layout": "hwc"},
        )
        img = {"head": np.zeros((1, 3, 96, 128), np.float32)}
        assert policy.predict(PolicyInput(state=np.zeros((1, 14), np.float32), images=img)).shape == (50, 14)
        wrong = OpenPIRemotePolicy(chunk_size=50, action_dim=14, state_dim=14, camera_names=["head"], port=srv.port)
        with pytest.raises(RemotePolicyError, match="lacks the state key 'state'"):
            wrong.predict(PolicyInput(state=np.zeros((1, 14), np.float32), images=img))
    finally:
        srv.stop()


# ---------------------------------------------------------------------- failures
def test_server_down_at_start_is_a_clear_bounded_error():
    import socket

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    # "within 0.8 s": it gave up on its connect timeout (how soon after it is the machine's load)
    with pytest.raises(RemotePolicyError, match=r"no policy server answered at ws://127.0.0.1:\d+ within 0.8 s"):
        OpenPIRemotePolicy(chunk_size=50, action_dim=14, state_dim=14, port=port, connect_timeout_s=0.8)


def test_chunk_and_dims_are_checked_against_the_server(server):
    with pytest.raises(RemotePolicyError, match="chunk_size=60 but the server .* reports chunk_size=50"):
        OpenPIRemotePolicy(chunk_size=60, action_dim=14, state_dim=14, port=server.port, connect_timeout_s=2)


def test_sequential_run_with_server_killed_mid_run_ends_with_the_cause(tmp_path):
    proc = ServerProcess(tmp_path)
    try:
        run_dir = tmp_path / "run"
        run = compose_run(
            [
                *BASE,
                f"policy.port={proc.port}",
                "policy.reconnect_timeout_s=0.5",
                "max_steps=100000",
                "algorithm=sequential",
            ],
            run_dir,
        )
        _kill_after_inferences(proc, run_dir, 3)
        with pytest.raises((RemotePolicyError, AlgorithmFault), match="dropped the connection and did not come back"):
            run.execute()
    finally:
        proc.kill()
    ticks = _rows(run_dir / "ticks.csv")
    # the robot stopped being commanded at a chunk boundary (it held while the model was asked)
    assert len(ticks) >= 50 and len(ticks) % 25 == 0


@pytest.mark.skipif(not HAS_RTC, reason="algorithm=rtc not in this checkout yet")
def test_rtc_run_with_server_killed_mid_run_is_a_named_inference_error(tmp_path):
    """The inference process is alive and its heartbeat goes on; its policy raises (the server
    does not come back within reconnect_timeout_s), so the fault is inference_error, not a stall."""
    proc = ServerProcess(tmp_path)
    try:
        run_dir = tmp_path / "run"
        run = compose_run(
            [
                *BASE,
                f"policy.port={proc.port}",
                "policy.reconnect_timeout_s=0.5",
                "max_steps=100000",
                "algorithm=rtc",
                "algorithm.stall_timeout_s=3",
            ],
            run_dir,
        )
        _kill_after_inferences(proc, run_dir, 3)
        with pytest.raises(AlgorithmFault) as err:
            run.execute()
    finally:
        proc.kill()
    assert err.value.kind == FaultKind.INFERENCE_ERROR, err.value.record()
    assert "RemotePolicyError" in str(err.value) and "did not come back" in str(err.value)
    events = [json.loads(line) for line in (run_dir / "events.jsonl").read_text().splitlines()]
    faults = [e for e in events if e["event"] == "inference_fault"]
    assert faults, "the dropped server must be reported as an inference fault"
    ticks = _rows(run_dir / "ticks.csv")
    assert int(ticks[-1]["held"]) == 1 or any(int(t["underrun"]) for t in ticks[-3:])
