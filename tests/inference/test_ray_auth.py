"""Ray token auth (Ray 2.60's default for local clusters), end to end with the user's commands.

A one-node head started by ``inference.cluster`` with ``auth_mode=token`` and a token file, which
also advertises ``inference_pc``; ``python -m inference launcher=ray`` joins it with the same token
and completes, and is refused -- a named, bounded error -- with auth disabled or a wrong token.
"""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

pytest.importorskip("ray")

from inference.cluster import start_node, stop_nodes  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.slow, pytest.mark.timeout(240)]


@pytest.fixture(scope="module")
def token_cluster():
    temp_dir = tempfile.mkdtemp(prefix="rayk", dir="/tmp")  # short: Ray's socket paths are length-limited
    token = Path(temp_dir) / "token"
    token.write_text(secrets.token_hex(32) + "\n")
    try:
        head = start_node(
            "head",
            auth_mode="token",
            auth_token_path=str(token),
            start_timeout_s=90,
            temp_dir=temp_dir,
            port=0,
            num_cpus=2,
            object_store_memory_bytes=100 * 1024 * 1024,
            resources={"inference_pc": 1},
        )
        yield head.address, token
    finally:
        stop_nodes(temp_dir, grace_s=5.0)
        shutil.rmtree(temp_dir, ignore_errors=True)


def _run(tmp_path: Path, address: str, *auth: str) -> subprocess.CompletedProcess:
    """One driver run; a hang is a TimeoutExpired after 180 s (generous: connect_timeout_s=8)."""
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "launcher=ray",
        f"launcher.address={address}",
        "launcher.connect_timeout_s=8",
        *auth,
        "policy=hold",
        "cameras=none",
        "algorithm=sequential",
        "robot.realtime=false",
        "max_steps=20",
        "report=false",
        f"hydra.run.dir={tmp_path}",
    ]
    return subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True, timeout=180)


def test_driver_with_the_clusters_token_runs(token_cluster, tmp_path):
    address, token = token_cluster
    proc = _run(tmp_path, address, "launcher.auth_mode=token", f"launcher.auth_token_path={token}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())  # mirrored back from the actor
    assert summary["ticks"] == 20


@pytest.mark.parametrize("auth", ["disabled", "wrong_token"])
def test_driver_with_other_auth_is_refused_with_a_named_error(token_cluster, tmp_path, auth):
    address, _ = token_cluster
    if auth == "disabled":
        args = ["launcher.auth_mode=disabled"]
    else:
        bad = tmp_path / "bad_token"
        bad.write_text(secrets.token_hex(32) + "\n")
        args = ["launcher.auth_mode=token", f"launcher.auth_token_path={bad}"]
    proc = _run(tmp_path / "run", address, *args)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert f"a Ray cluster listens at {address}" in proc.stderr
    assert "auth_mode=" + ("disabled" if auth == "disabled" else "token with the token in") in proc.stderr
