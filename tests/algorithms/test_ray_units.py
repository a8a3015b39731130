"""Pure parts of the Ray launcher, cluster CLI and split mode (no cluster needed, fast)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from inference.cluster import auth_env, start_command
from inference.launcher.ray import FileMirror, LaunchError, describe_nodes, nodes_offering, resolve_address

ROOT = Path(__file__).resolve().parents[2]


def test_worker_command_advertises_inference_pc_and_small_store():
    cmd = start_command(
        "worker",
        head_address="10.0.0.5",
        port=6379,
        temp_dir="/tmp/x",
        object_store_memory_bytes=100_000_000,
        num_cpus=1,
        resources={"inference_pc": 1},
    )
    assert "--address=10.0.0.5:6379" in cmd and "--head" not in cmd
    assert "--object-store-memory=100000000" in cmd and "--num-cpus=1" in cmd
    res = [a for a in cmd if a.startswith("--resources=")]
    assert json.loads(res[0].split("=", 1)[1]) == {"inference_pc": 1.0}


def test_head_command_and_bad_role():
    cmd = start_command("head", port=0, temp_dir="/tmp/x")
    assert "--head" in cmd and "--port=0" in cmd and "--temp-dir=/tmp/x" in cmd
    assert not [a for a in cmd if a.startswith("--resources")]
    with pytest.raises(Exception, match="role='stop' does not start a node"):
        start_command("stop")


def test_auth_env_is_explicit():
    assert auth_env("disabled") == {"RAY_AUTH_MODE": "disabled"}
    assert auth_env("token", "/tmp/tok") == {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": "/tmp/tok"}
    with pytest.raises(Exception, match="auth_mode='off'"):
        auth_env("off")


def test_cluster_config_composes_per_role():
    with initialize_config_dir(config_dir=str(ROOT / "conf" / "cluster"), version_base="1.3"):
        cfg = compose(config_name="default", overrides=["role=worker", "head_address=10.0.0.5"])
    assert cfg.resources.worker.inference_pc == 1 and not cfg.resources.head
    assert cfg.auth_mode in ("disabled", "token")


def test_auto_address_without_cluster_names_the_fix(monkeypatch, tmp_path):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with pytest.raises(LaunchError, match="python -m inference.cluster role=head"):
        resolve_address("auto", temp_dirs=(str(tmp_path),))
    (tmp_path / "ray_current_cluster").write_text("10.1.2.3:6379\n")
    assert resolve_address("auto", temp_dirs=(str(tmp_path),)) == "10.1.2.3:6379"
    assert resolve_address("h:1") == "h:1"


def test_nodes_offering_and_description():
    nodes = [
        {"Alive": True, "NodeID": "aaaaaaaaaa", "NodeManagerAddress": "10.0.0.1", "Resources": {"CPU": 8.0}},
        {
            "Alive": True,
            "NodeID": "bbbbbbbbbb",
            "NodeManagerAddress": "10.0.0.2",
            "Resources": {"CPU": 16.0, "GPU": 1.0, "inference_pc": 1.0},
        },
        {"Alive": False, "NodeID": "cccccccccc", "Resources": {"inference_pc": 1.0}},
    ]
    assert [n["NodeID"] for n in nodes_offering(nodes, {"inference_pc": 1, "GPU": 1})] == ["bbbbbbbbbb"]
    assert nodes_offering(nodes, {"inference_pc": 1, "GPU": 2}) == []
    text = describe_nodes(nodes)
    assert "10.0.0.2 (node bbbbbbbb): inference_pc=1, CPU=16, GPU=1" in text
    assert "cccccccc" not in text


def test_file_mirror_appends_and_rewrites(tmp_path):
    mirror = FileMirror(tmp_path)
    mirror.apply({"ticks.csv": (0, b"a,b\n1,2\n")})
    mirror.apply({"ticks.csv": (8, b"3,4\n"), "sub/x.txt": (0, b"x")})
    assert (tmp_path / "ticks.csv").read_bytes() == b"a,b\n1,2\n3,4\n"
    assert mirror.offsets == {"ticks.csv": 12, "sub/x.txt": 1}
    mirror.apply({"ticks.csv": (0, b"new\n")})  # rewritten (shrank) on the worker
    assert (tmp_path / "ticks.csv").read_bytes() == b"new\n"
