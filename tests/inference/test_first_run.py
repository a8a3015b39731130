"""What a new user meets first, through the real entry point (``python -m inference`` in a subprocess):
a quiet console whose log file keeps the detail, one line for a config error, a robot that brings its
own cameras, the control-rate opt-in, and a helper process that fails at start said as one named line.
"""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PROGRESS = "episode 0 tick"  # services/telemetry.py's status line


def app(run_dir: Path, *args: str, timeout_s: float = 600, merged: bool = False) -> subprocess.CompletedProcess:
    """The app as a user runs it; ``merged``: stderr into stdout, in the order a terminal shows them."""
    return subprocess.run(
        [sys.executable, "-m", "inference", *args, f"hydra.run.dir={run_dir}"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT if merged else subprocess.PIPE,
        text=True,
        timeout=timeout_s,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )


def lines(proc: subprocess.CompletedProcess) -> list[str]:
    return [line for line in (proc.stdout + (proc.stderr or "")).splitlines() if line.strip()]


def test_the_console_shows_progress_outputs_and_warnings_the_log_file_the_rest(tmp_path):
    """A real-time sim run with its camera and physics processes and the RTC inference process: before
    the first progress line the console says only where the outputs go; the start-up detail (GL
    backend, each child's CPU placement, the shared block) is in the run's log file."""
    proc = app(
        tmp_path,
        "policy=hold",
        "algorithm.guidance=blend",
        "max_steps=30",
        "report=false",
        "robot.start_timeout_s=120",
        "algorithm.startup_timeout_s=600",
        "robot.max_state_age_s=5",
        "cameras.max_frame_age_s=5",
        merged=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:]
    said = lines(proc)
    first = next(i for i, line in enumerate(said) if line.startswith(PROGRESS))
    assert said[:first] == [line for line in said[:first] if f"outputs in {tmp_path}" in line], said[:first]
    assert len(said[:first]) == 1, said[:first]
    assert not [line for line in said if "realtime:" in line or "OpenGL" in line or "shared block" in line], said
    assert f"run finished: outputs in {tmp_path}" in said
    kept = (tmp_path / "app.log").read_text()
    for detail in (
        "realtime: child camera-head",
        "realtime: child sim-physics",
        "rtc: shared block",
        "outputs in",
        "episode 0: 30 ticks",
    ):
        assert detail in kept, detail


def test_log_level_info_shows_the_start_up_detail(tmp_path):
    proc = app(
        tmp_path,
        "log_level=INFO",
        "policy=hold",
        "cameras=none",
        "algorithm=sequential",
        "robot.realtime=false",
        "max_steps=3",
        "report=false",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    shown = lines(proc)
    assert any("[INFO] - telemetry writer ready" in line for line in shown), shown
    assert any("[INFO] - realtime: lockstep robot" in line for line in shown), shown


def test_a_config_error_is_one_line_and_names_what_to_run_instead(tmp_path):
    """The design card's command: the bundled policy cannot drive IGRIS_B. One line (not once bare and
    once more through logging), which is also kept in the run's log file."""
    proc = app(tmp_path, "robot=igris_b", "algorithm=rtc")
    assert proc.returncode == 2
    assert lines(proc) == [proc.stderr.strip()], lines(proc)
    line = proc.stderr.strip()
    assert line.startswith("config error: policy.action_dim: policy.action_dim=14 does not match robot.action_dim=24")
    for hint in ("ALOHA", "policy=openpi", "docs/openpi.md", "policy=lerobot", "docs/lerobot.md"):
        assert hint in line, hint
    assert line in (tmp_path / "app.log").read_text()


def test_igris_b_brings_its_own_cameras_and_stops_at_the_robot_with_a_named_fault(tmp_path):
    """``robot=igris_b policy=hold`` with no robot on the network: the run gets as far as the robot and
    ends as one robot fault line, not a traceback about sim cameras."""
    proc = app(
        tmp_path,
        "robot=igris_b",
        "policy=hold",
        "max_steps=5",
        "robot.topic_timeout_s=1",
        f"robot.domain_id={random.randint(100, 200)}",
        timeout_s=300,
    )
    assert proc.returncode == 3, proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr
    failed = [line for line in proc.stderr.splitlines() if line.startswith("run FAILED")]
    assert len(failed) == 1 and failed[0].startswith("run FAILED (robot): robot fault: robot igris_b: no message"), (
        proc.stderr
    )
    resolved = (tmp_path / "config_resolved.yaml").read_text()
    assert "device: /dev/head_camera1" in resolved and "SimCamera" not in resolved


def test_running_a_policy_off_its_training_rate_is_an_explicit_choice(tmp_path):
    """``policy.allow_rate_mismatch=true``: the bundled 20 Hz policy runs at 50 Hz, said as a warning
    on the console and in the log, an event, and ``rate_mismatch`` in summary.json."""
    proc = app(
        tmp_path,
        "robot.hz=50",
        "policy.allow_rate_mismatch=true",
        "algorithm=sequential",
        "robot.realtime=false",
        "max_steps=3",
        "report=false",
        "algorithm.max_chunk_jump=null",
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    warned = [line for line in lines(proc) if "WARNING" in line and "trained at 20 Hz" in line]
    assert len(warned) == 1, lines(proc)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["rate_mismatch"]["robot_hz"] == 50.0 and summary["rate_mismatch"]["policy_hz"] == 20.0
    assert summary["rate_mismatch"]["source"].endswith("transfer_cube/config.json (meta.control_hz)")
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["robot_hz"] for e in events if e["event"] == "rate_mismatch"] == [50.0]


def test_a_helper_process_that_fails_at_start_is_one_named_line(tmp_path):
    """The recorder's writer refuses a folder that exists (a run dir used twice): its process fails at
    start, and the run ends as one STARTUP fault line naming it, never a traceback."""
    (tmp_path / "recording").mkdir()
    proc = app(
        tmp_path,
        "record=mcap",
        "policy=hold",
        "cameras=none",
        "algorithm=sequential",
        "robot.realtime=false",
        "max_steps=3",
        "report=false",
    )
    assert proc.returncode == 3, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "Traceback" not in proc.stdout + proc.stderr, proc.stdout[-2000:] + proc.stderr[-3000:]
    said = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(said) == 1 and said[0].startswith("run FAILED (startup): recorder process failed at start: "), said
    assert "exists already" in said[0]


@pytest.mark.parametrize("robot,cameras", [("sim", "sim"), ("igris_b", "igris_b"), ("igris_c", "ros_topics")])
def test_each_robot_selects_its_cameras_unless_told_otherwise(robot, cameras, tmp_path):
    from hydra import compose, initialize_config_dir

    from inference.schemas import register

    register()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        mine = compose(config_name="config", overrides=[f"robot={robot}"], return_hydra_config=True)
        told = compose(config_name="config", overrides=[f"robot={robot}", "cameras=none"], return_hydra_config=True)
        told_first = compose(
            config_name="config", overrides=["cameras=video", f"robot={robot}"], return_hydra_config=True
        )
    assert mine.hydra.runtime.choices.cameras == cameras
    assert told.hydra.runtime.choices.cameras == "none" and told.cameras.devices == {}
    assert told_first.hydra.runtime.choices.cameras == "video"
