"""policy=lerobot against LeRobot 0.6.1's own code, offline: tiny checkpoints built with LeRobot's classes and
``save_pretrained`` (random weights), run through the app with the sim robot.

LeRobot lives in its own env (``.venvs/lerobot``: Python 3.12, built by ``python -m tests.side_envs lerobot``,
which ``make test`` runs first); our app runs in our venv and reaches the checkpoint through the policy host
process under ``policy.python``. The checkpoints (ACT, Diffusion, SmolVLA with a tiny local SmolVLM, and an ACT
that wants a camera the sim robot lacks) are built once per tiny.py version into ``.venvs/lerobot-ckpts``.
Every test prints the figures it checks.
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.side_envs import ENVS, REPO, side_env_python

PROMPT = "transfer the cube"
# Real-time runs share 2 cores between the sim, its camera processes, the host and the model: older samples are
# fine here (staleness is tested elsewhere); random weights jump far from the robot's pose, which the chunk
# plausibility check would (rightly) reject.
LOADED_MACHINE = [
    "cameras.max_frame_age_s=2.0",
    "robot.max_state_age_s=2.0",
    "robot.start_timeout_s=120",
    "algorithm.max_chunk_jump=100",
    "algorithm.inference_timeout_s=300",
    "algorithm.first_chunk_timeout_s=300",
    "algorithm.startup_timeout_s=900",
    "algorithm.stall_timeout_s=60",
]
CHUNK = {"act": 20, "diffusion": 8, "smolvla": 20}


@pytest.fixture(scope="session")
def lerobot_python() -> Path:
    return side_env_python("lerobot")


@pytest.fixture(scope="session")
def ckpts(lerobot_python: Path) -> Path:
    sources = b"".join(p.read_bytes() for p in (REPO / "policies/lerobot/tiny.py", REPO / "tests/lerobot_probe.py"))
    out = ENVS / "lerobot-ckpts" / hashlib.sha1(sources).hexdigest()[:12]
    proc = subprocess.run(
        [str(lerobot_python), str(REPO / "tests/lerobot_probe.py"), "build", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return out


def run_app(args: list[str], run_dir: Path, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "inference", *args, f"hydra.run.dir={run_dir}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def lerobot_args(ckpts: Path, python: Path, name: str, *extra: str) -> list[str]:
    return [
        "robot=sim",
        "cameras=sim",
        "policy=lerobot",
        f"policy.path={ckpts / name}",
        f"policy.python={python}",
        f"policy.chunk_size={CHUNK.get(name, 20)}",
        f"policy.prompt='{PROMPT}'",
        "report=false",
        *extra,
    ]


def config_error_lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + proc.stderr).splitlines() if line.startswith("config error:")]


# ================================================================================= start-time checks
def test_checkpoint_that_needs_a_missing_camera_is_one_config_error(ckpts, lerobot_python, tmp_path):
    proc = run_app(
        lerobot_args(ckpts, lerobot_python, "act_top_camera", "algorithm=sequential", "algorithm.execute_horizon=10"),
        tmp_path,
        timeout=300,
    )
    lines = config_error_lines(proc)
    print(proc.returncode, lines)
    assert proc.returncode == 2
    assert len(lines) == 1 and lines[0].startswith("config error: policy.path: ")
    assert "observation.images.top" in lines[0]
    assert "ready" not in proc.stdout + proc.stderr  # nothing was built


def test_state_dim_mismatch_is_one_config_error(ckpts, lerobot_python, tmp_path):
    """A checkpoint declaring a 10-dim state (its config.json; LeRobot's own field) on the 14-dim sim robot."""
    import shutil

    bad = tmp_path / "act_state10"
    shutil.copytree(ckpts / "act", bad)
    cfg = json.loads((bad / "config.json").read_text())
    cfg["input_features"]["observation.state"]["shape"] = [10]
    (bad / "config.json").write_text(json.dumps(cfg))
    proc = run_app(
        [
            "robot=sim",
            "policy=lerobot",
            f"policy.path={bad}",
            f"policy.python={lerobot_python}",
            "algorithm=sequential",
            "algorithm.execute_horizon=10",
        ],
        tmp_path / "run",
        timeout=300,
    )
    lines = config_error_lines(proc)
    print(proc.returncode, lines)
    assert proc.returncode == 2 and len(lines) == 1
    assert lines[0].startswith("config error: policy.path: ") and "10 dims" in lines[0] and "14" in lines[0]


def test_guidance_the_policy_cannot_do_is_a_config_error(ckpts, lerobot_python, tmp_path):
    """ACT has no sampling loop: algorithm.guidance=vjp is refused at start (blend / none are what it supports)."""
    proc = run_app(
        lerobot_args(
            ckpts, lerobot_python, "act", "algorithm=rtc", "algorithm.guidance=vjp", "algorithm.execute_horizon=10"
        ),
        tmp_path,
        timeout=300,
    )
    lines = config_error_lines(proc)
    print(proc.returncode, lines)
    assert proc.returncode == 2 and len(lines) == 1
    assert "algorithm.guidance=vjp" in lines[0] and "blend" in lines[0]


def test_missing_interpreter_is_a_config_error(ckpts, tmp_path):
    proc = run_app(
        [
            "robot=sim",
            "policy=lerobot",
            f"policy.path={ckpts / 'act'}",
            f"policy.python={tmp_path}/nope",
            "algorithm=sequential",
            "algorithm.execute_horizon=10",
        ],
        tmp_path / "run",
        timeout=300,
    )
    lines = config_error_lines(proc)
    print(proc.returncode, lines)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error: policy.python: ")


# ================================================================================= runs through the app
def _summary(run_dir: Path) -> dict:
    return json.loads((run_dir / "summary.json").read_text())


def _inferences(run_dir: Path) -> list[dict]:
    import csv

    with open(run_dir / "inferences.csv") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow
@pytest.mark.parametrize("name", ["act", "diffusion", "smolvla"])
def test_sequential_runs_the_checkpoint_through_the_host(ckpts, lerobot_python, tmp_path, name):
    ticks = 30
    proc = run_app(
        lerobot_args(
            ckpts,
            lerobot_python,
            name,
            "algorithm=sequential",
            "robot.realtime=false",
            "algorithm.max_chunk_jump=100",
            "algorithm.inference_timeout_s=300",
            f"algorithm.execute_horizon={CHUNK[name] // 2}",
            f"max_steps={ticks}",
        ),
        tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary, rows = _summary(tmp_path), _inferences(tmp_path)
    print(name, {k: summary.get(k) for k in ("ticks", "inferences", "rejected_actions")}, len(rows))
    assert summary["ticks"] == ticks
    assert summary["inferences"] >= ticks // (CHUNK[name] // 2) and len(rows) == summary["inferences"]
    assert "host process" in (tmp_path / "app.log").read_text()  # an INFO line: the run's log file keeps it


@pytest.mark.slow
@pytest.mark.parametrize("name,guidance", [("act", "blend"), ("diffusion", "blend"), ("smolvla", "vjp")])
def test_rtc_runs_the_checkpoint_with_its_guidance(ckpts, lerobot_python, tmp_path, name, guidance):
    proc = run_app(
        lerobot_args(
            ckpts,
            lerobot_python,
            name,
            "algorithm=rtc",
            f"algorithm.guidance={guidance}",
            f"algorithm.execute_horizon={CHUNK[name] // 2}",
            "max_steps=160",
            *LOADED_MACHINE,
        ),
        tmp_path,
    )
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-3000:]
    summary, rows = _summary(tmp_path), _inferences(tmp_path)
    guided = [r for r in rows if r["guidance"] == guidance]
    print(name, guidance, {k: summary.get(k) for k in ("ticks", "inferences")}, "guided chunks", len(guided))
    assert summary["ticks"] == 160 and len(rows) >= 2
    assert guided, f"no chunk used guidance={guidance}: {[r['guidance'] for r in rows]}"


# ================================================================================= guidance in LeRobot's env
@pytest.mark.slow
def test_vjp_guidance_moves_the_flow_prefix_toward_the_previous_chunk(ckpts, lerobot_python):
    """SmolVLA (LeRobot's code, its own velocity function): the previous chunk's first d actions vs the new
    chunk's, same observation and noise: unguided, our VJP, LeRobot's own RTC processor."""
    proc = subprocess.run(
        [str(lerobot_python), str(REPO / "tests/lerobot_probe.py"), "gaps", str(ckpts / "smolvla"), "2"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=1200,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    gaps = json.loads(proc.stdout.strip().splitlines()[-1])
    print("prefix gap (mean |new[:d] - prev[:d]|, robot units):", gaps)
    assert gaps["vjp"] < 0.25 * gaps["none"]
    assert gaps["lerobot_rtc"] < gaps["none"]
