"""``python -m inference`` is Hydra: a lab's own config directory (``--config-dir``), every Hydra flag,
and config errors in any file -- the lab's included -- as one line ``config error: <key>: <why>``, exit 2.

A lab keeps its robot configs outside the repository: here a copy of the sim robot's config under
another name in a temporary directory, run end to end as a user would type it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.app import CONF_DIR

ROOT = Path(__file__).resolve().parents[2]
# a few lockstep ticks of the scripted expert, no cameras: the fastest complete run
FAST = ["algorithm=sequential", "policy=scripted", "cameras=none", "robot.realtime=false", "report=false"]


@pytest.fixture
def lab(tmp_path) -> Path:
    """A lab's config directory holding ``robot/mine.yaml``: the sim robot's config, renamed."""
    conf = tmp_path / "my_robots"
    (conf / "robot").mkdir(parents=True)
    text = (Path(CONF_DIR) / "robot" / "sim.yaml").read_text().replace("name: sim", "name: mine")
    assert "name: mine" in text
    (conf / "robot" / "mine.yaml").write_text(text)
    return conf


def cli(*args: str, env: dict[str, str] | None = None, timeout: float = 240) -> subprocess.CompletedProcess:
    environ = {k: v for k, v in os.environ.items() if k != "HYDRA_FULL_ERROR"}  # as a user's shell has it
    return subprocess.run(
        [sys.executable, "-m", "inference", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        env={**environ, **(env or {})},
    )


def config_error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize("form", ["--config-dir <dir>", "--config-dir=<dir>"])
def test_a_robot_config_from_the_labs_own_directory_runs(lab, tmp_path, form):
    run_dir = tmp_path / "run"
    flag = ["--config-dir", str(lab)] if form == "--config-dir <dir>" else [f"--config-dir={lab}"]
    proc = cli(*flag, "robot=mine", *FAST, "max_steps=8", f"hydra.run.dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ticks"] == 8
    resolved = (run_dir / "config_resolved.yaml").read_text()
    assert "name: mine" in resolved  # the lab's file, not the repository's sim.yaml


def test_a_yaml_error_in_the_labs_file_is_one_line_naming_it(lab, tmp_path):
    bad = lab / "robot" / "mine.yaml"
    bad.write_text(bad.read_text().replace("hz: 20", "hz: [20"))
    for flag in (["--config-dir", str(lab)], [f"--config-dir={lab}"]):
        proc = cli(*flag, "robot=mine", *FAST, f"hydra.run.dir={tmp_path / 'run'}")
        lines = config_error_lines(proc.stderr)
        assert proc.returncode == 2, proc.stderr
        assert len(lines) == 1, proc.stderr
        assert lines[0].startswith("config error: robot: YAML error in "), lines[0]
        assert str(bad) in lines[0] and "line " in lines[0], lines[0]
        assert not (tmp_path / "run").exists()  # nothing started: not even the run dir


def test_the_labs_options_appear_beside_the_repositorys(lab):
    proc = cli("--config-dir", str(lab), "robot=nope")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: robot: ") and "mine" in lines[0] and "sim" in lines[0], lines[0]
    proc = cli(f"--config-dir={lab.parent / 'nowhere'}")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error: --config-dir: "), proc.stderr


def test_cfg_job_shows_the_labs_robot(lab):
    proc = cli("--config-dir", str(lab), "robot=mine", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "name: mine" in proc.stdout and "_target_: robots.sim.SimRobot" in proc.stdout
    proc = cli("--config-dir", str(lab), "robot=mine", "--cfg", "job", "--package", "robot")
    assert proc.returncode == 0, proc.stderr
    assert "name: mine" in proc.stdout and "policy" not in proc.stdout


def test_info_lists_the_labs_directory_in_the_search_path(lab):
    proc = cli(f"--config-dir={lab}", "--info", "searchpath")
    assert proc.returncode == 0, proc.stderr
    assert f"file://{lab}" in proc.stdout
    proc = cli("--config-dir", str(lab), "robot=mine", "--info", "defaults")
    assert proc.returncode == 0, proc.stderr
    assert "robot/mine" in proc.stdout


def test_config_name_and_config_path(lab, tmp_path):
    """A lab's primary config that extends the app's (``--config-name``), and the app's own config
    directory given as ``--config-path``."""
    (lab / "lab.yaml").write_text("defaults:\n  - config\n  - _self_\n  - override robot: mine\nmax_steps: 7\n")
    proc = cli("--config-dir", str(lab), "--config-name", "lab", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "max_steps: 7" in proc.stdout and "name: mine" in proc.stdout
    proc = cli("--config-path", CONF_DIR, "--config-name", "config", "--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "robot:" in proc.stdout
    proc = cli("--config-dir", str(lab), "--config-name", "nolab")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error: --config-name: "), (
        proc.stderr
    )


def test_shell_completion_offers_the_labs_options(lab):
    proc = cli("--config-dir", str(lab), "-sc", "query=bash", env={"COMP_LINE": "inference robot="})
    assert proc.returncode == 0, proc.stderr
    assert {"robot=mine", "robot=sim"} <= set(proc.stdout.split())
    proc = cli("--shell-completion", "install=bash")
    assert proc.returncode == 0 and "COMP_LINE" in proc.stdout, proc.stderr


def test_hydra_overrides_are_checked_like_ours(tmp_path):
    proc = cli("hydra.job.chdir=maybe", f"hydra.run.dir={tmp_path / 'run'}")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: hydra.job.chdir: "), lines[0]
    proc = cli("hydra/launcher=nope")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("config error: hydra/launcher: "), (
        proc.stderr
    )


@pytest.mark.slow
def test_multirun_sweeps_the_labs_robot(lab, tmp_path):
    sweep = tmp_path / "sweep"
    proc = cli("-m", "--config-dir", str(lab), "robot=mine", *FAST, "max_steps=3,5", f"hydra.sweep.dir={sweep}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    ticks = sorted(json.loads((sweep / str(i) / "summary.json").read_text())["ticks"] for i in range(2))
    assert ticks == [3, 5]
    assert (sweep / "sweep_summary.csv").is_file()


def test_multirun_with_a_bad_sweep_value_is_one_line(lab, tmp_path):
    proc = cli("-m", "--config-dir", str(lab), "robot=mine", "max_steps=3,abc=", f"hydra.sweep.dir={tmp_path}")
    lines = config_error_lines(proc.stderr)
    assert proc.returncode == 2 and len(lines) == 1, proc.stderr
    assert lines[0].startswith("config error: max_steps: cannot parse override"), lines[0]


class ExplodingLauncher:
    """A launcher with a bug: it raises while launching the (valid, built) run."""

    def launch(self, run):
        raise RuntimeError("ExplodingLauncher.launch failed on purpose")


def test_a_bug_in_the_run_is_not_called_a_config_error(tmp_path):
    """An exception escaping the job (a bug, not a config problem) keeps its traceback and exit 1."""
    proc = cli(
        *FAST,
        "launcher._target_=tests.inference.test_entry_point.ExplodingLauncher",
        f"hydra.run.dir={tmp_path / 'run'}",
    )
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert "Traceback" in proc.stderr and "config error" not in proc.stderr, proc.stderr[-3000:]
    assert "ExplodingLauncher.launch failed on purpose" in proc.stderr


def test_the_run_object_builds_its_algorithm_once(tmp_path):
    """Composed once, built once: the algorithm checked at construction is the one that executes;
    a pickled run (spawn, Ray) carries only the config and builds its own where it executes."""
    import pickle

    from hydra import compose, initialize_config_dir

    from inference.run import Run
    from inference.schemas import register

    class CountingRun(Run):
        built = 0

        def make_algorithm(self):
            CountingRun.built += 1
            return super().make_algorithm()

    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[*FAST, "max_steps=3"])
    run = CountingRun(cfg, tmp_path / "run")
    assert CountingRun.built == 1
    assert pickle.loads(pickle.dumps(Run(cfg, tmp_path / "other")))._algorithm is None
    summary = run.execute()
    assert CountingRun.built == 1 and summary["ticks"] == 3
