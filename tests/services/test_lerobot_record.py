"""record=lerobot: a run recorded as a LeRobotDataset v3 by a sink process under LeRobot's interpreter, loaded
back with LeRobot's own ``LeRobotDataset`` and trained on by LeRobot's own training entry point (a few steps)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.side_envs import REPO, side_env_python


@pytest.fixture(scope="session")
def lerobot_python() -> Path:
    return side_env_python("lerobot")


@pytest.mark.slow
def test_recorded_run_loads_and_trains_with_lerobot(lerobot_python, tmp_path):
    ticks = 40
    run_dir = tmp_path / "run"
    proc = subprocess.run([sys.executable, "-m", "inference", "robot=sim", "cameras=sim", "policy=scripted",
                           "algorithm=sequential", "robot.realtime=false", "record=lerobot",
                           f"record.python={lerobot_python}", "record.prompt='transfer the cube'", f"max_steps={ticks}",
                           "report=false", f"hydra.run.dir={run_dir}"],
                          cwd=REPO, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    root = run_dir / "lerobot_dataset"
    print("summary:", summary.get("ticks"), summary.get("lerobot_recorded"), summary.get("recording_dropped"))
    probe = subprocess.run([str(lerobot_python), str(REPO / "tests/lerobot_probe.py"), "dataset", str(root)],
                           cwd=REPO, capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    ds = json.loads(probe.stdout.strip().splitlines()[-1])
    print("LeRobotDataset:", ds)
    assert ds["frames"] == summary["ticks"] == ticks
    assert ds["episodes"] == 1
    assert sorted(ds["images"]) == [f"observation.images.{c}" for c in ("head", "left", "right")]
    assert all(shape == [3, 96, 128] for shape in ds["images"].values())
    assert ds["state"] == [14] and ds["action"] == [14] and ds["task"] == "transfer the cube"
    out = tmp_path / "train"
    train = subprocess.run(
        [str(lerobot_python), "-m", "lerobot.scripts.lerobot_train", "--dataset.repo_id=local/rollouts",
         f"--dataset.root={root}", "--policy.type=act", "--policy.device=cpu", "--policy.push_to_hub=false",
         "--policy.pretrained_backbone_weights=null", "--policy.dim_model=32", "--policy.n_heads=2",
         "--policy.dim_feedforward=64", "--policy.n_encoder_layers=1", "--policy.n_decoder_layers=1",
         "--policy.chunk_size=10", "--policy.n_action_steps=10", "--steps=3", "--batch_size=2", "--num_workers=0",
         "--log_freq=1", "--save_checkpoint=false", "--wandb.enable=false", f"--output_dir={out}"],
        cwd=tmp_path, capture_output=True, text=True, timeout=900, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    print(train.stdout[-1500:], train.stderr[-1500:])
    assert train.returncode == 0, train.stderr[-3000:]
    assert "step:3" in (train.stdout + train.stderr).replace(" ", "") or "step: 3" in train.stdout + train.stderr
