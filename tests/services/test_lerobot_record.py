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


def _inferences(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "inferences.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
def test_recorded_run_loads_and_trains_with_lerobot(lerobot_python, tmp_path):
    """Two episodes of the scripted expert with a 2 deg slew limit (so the safety filter changes commands; the
    expert still succeeds in at least one, which then ends early): every column is checked against the run's own
    records (summary.json, inferences.csv)."""
    ticks, episodes = 180, 2
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference",
            "robot=sim",
            "cameras=sim",
            "policy=scripted",
            "algorithm=sequential",
            "robot.realtime=false",
            "record=lerobot",
            f"record.python={lerobot_python}",
            "record.prompt='transfer the cube'",
            f"max_steps={ticks}",
            f"episodes={episodes}",
            "safety.max_delta_deg=2",
            "report=false",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    root = run_dir / "lerobot_dataset"
    print(
        "summary:",
        summary.get("ticks"),
        summary.get("successes"),
        summary.get("lerobot_recorded"),
        summary.get("recording_dropped"),
    )
    probe = subprocess.run(
        [str(lerobot_python), str(REPO / "tests/lerobot_probe.py"), "dataset", str(root)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    ds = json.loads(probe.stdout.strip().splitlines()[-1])
    print("LeRobotDataset:", {k: v for k, v in ds.items() if not isinstance(v, list) or len(v) < 20})
    assert summary["recording_dropped"] == 0
    lengths = summary["episode_ticks"]
    assert ds["frames"] == summary["ticks"] == sum(lengths) and ds["episodes"] == episodes
    assert sorted(ds["images"]) == [f"observation.images.{c}" for c in ("head", "left", "right")]
    assert all(shape == [3, 96, 128] for shape in ds["images"].values())
    assert ds["state"] == [14] and ds["action"] == [14] and ds["task"] == "transfer the cube"
    # episode boundaries and outcome: one done frame per episode, its last; success as the run scored it
    ends = [i for i, d in enumerate(ds["next.done"]) if d]
    assert ends == [sum(lengths[: e + 1]) - 1 for e in range(episodes)], (ends, lengths)
    assert ds["episode_index"] == [e for e in range(episodes) for _ in range(lengths[e])]
    assert summary["successes"] >= 1  # so the success column is exercised
    assert sum(ds["next.success"]) == summary["successes"]
    assert all(ds["next.done"][i] for i, s in enumerate(ds["next.success"]) if s)
    # the policy's proposal vs what the safety filter sent: the slew limit changed some, not held ones
    held = [i for i, h in enumerate(ds["held"]) if h]
    changed = [i for i, gap in enumerate(ds["proposed_minus_sent"]) if gap > 1e-4]
    print(f"held frames {len(held)}, frames the safety filter changed {len(changed)}")
    assert changed and not set(changed) & set(held)
    # which chunk produced each action, and its guidance: the chunks of inferences.csv, in order
    rows = [r for r in _inferences(run_dir) if r["rejected"] == "0"]
    guidance = {(int(r["episode"]), int(r["chunk_id"])): r["guidance"] for r in rows}
    for i in range(ds["frames"]):
        if not ds["held"][i]:
            key = (ds["episode_index"][i], ds["chunk_id"][i])
            assert key in guidance, (i, key, sorted(guidance))
            assert ds["guidance_codes"][ds["guidance"][i]] == guidance[key]
            assert 0 <= ds["chunk_step"][i] < 50
    times = ds["command_time"]
    assert all(times[i] <= times[i + 1] for i in range(len(times) - 1) if not ds["next.done"][i])
    out = tmp_path / "train"
    train = subprocess.run(
        [
            str(lerobot_python),
            "-m",
            "lerobot.scripts.lerobot_train",
            "--dataset.repo_id=local/rollouts",
            f"--dataset.root={root}",
            "--policy.type=act",
            "--policy.device=cpu",
            "--policy.push_to_hub=false",
            "--policy.pretrained_backbone_weights=null",
            "--policy.dim_model=32",
            "--policy.n_heads=2",
            "--policy.dim_feedforward=64",
            "--policy.n_encoder_layers=1",
            "--policy.n_decoder_layers=1",
            "--policy.chunk_size=10",
            "--policy.n_action_steps=10",
            "--steps=3",
            "--batch_size=2",
            "--num_workers=0",
            "--log_freq=1",
            "--save_checkpoint=false",
            "--wandb.enable=false",
            f"--output_dir={out}",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
    )
    print(train.stdout[-1500:], train.stderr[-1500:])
    assert train.returncode == 0, train.stderr[-3000:]
    assert "step:3" in (train.stdout + train.stderr).replace(" ", "") or "step: 3" in train.stdout + train.stderr
