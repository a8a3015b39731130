"""Every config option composes, validates and instantiates; every mistake names its key."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.utils import instantiate
from omegaconf import OmegaConf

from inference.app import CONF_DIR
from inference.run import Run
from inference.validation import ConfigError

ROOT = Path(__file__).resolve().parents[2]
GROUPS = ("robot", "cameras", "policy", "algorithm", "safety", "logger", "launcher", "record")

# Options that only make sense together: the overrides that make a group option composable.
COMPANIONS = {
    ("robot", "igris_b"): ["cameras=igris_b", "policy=hold"],
    ("robot", "igris_c"): ["cameras=none", "policy=hold"],
    ("robot", "gym"): ["policy=hold"],
    ("cameras", "gym"): ["robot=gym", "policy=hold"],
    ("cameras", "igris_b"): ["robot=igris_b", "policy=hold"],
    ("cameras", "ros_topics"): ["robot=igris_b", "policy=hold"],
    ("cameras", "video"): ["robot=igris_b", "policy=hold"],
    ("cameras", "none"): ["policy=scripted"],
    ("policy", "openpi"): ["robot=igris_b", "cameras=igris_b"],
    ("policy", "openpi_remote"): [],
    ("policy", "gym_expert"): ["robot=gym", "robot.env_id=Pendulum-v1", "algorithm.execute_horizon=8"],  # H = 8
    ("policy", "lerobot"): ["algorithm.execute_horizon=10"],  # its chunk_size is 20
    # its default interpreter (.venvs/lerobot, `make lerobot-env`) is probed at start where set; null: this one
    # (checked when the sink starts), so the option composes on a machine without LeRobot's environment
    ("record", "lerobot"): ["record.python=null"],
}


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (Path(CONF_DIR) / group).glob("*.yaml"))


def _compose(overrides):
    from inference.schemas import register

    register()  # the structured-config schemas, as every composition of the app's config
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides), return_hydra_config=False)


CASES = [(g, o) for g in GROUPS for o in options(g)]


def write_video(path: Path, n_frames: int = 3, size: tuple[int, int] = (64, 48)) -> Path:
    """A short real video file (MJPG in AVI), for the video cameras' start-time check."""
    import cv2
    import numpy as np

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, size)
    for i in range(n_frames):
        writer.write(np.full((size[1], size[0], 3), 40 * i, np.uint8))
    writer.release()
    return path


@pytest.mark.parametrize("group,option", CASES, ids=[f"{g}={o}" for g, o in CASES])
def test_every_option_composes_validates_and_instantiates(group, option, tmp_path, monkeypatch):
    overrides = [f"{group}={option}", *COMPANIONS.get((group, option), [])]
    if (group, option) == ("cameras", "video"):  # its files must exist and play (checked at start)
        monkeypatch.setenv("INFERENCE_VIDEO", str(write_video(tmp_path / "camera.avi")))
    cfg = _compose(overrides)
    if (group, option) == ("policy", "openpi") and importlib.util.find_spec("openpi") is None:
        # without openpi installed the config must fail at start with the install step
        with pytest.raises(ConfigError, match="needs the openpi package: install it"):
            Run(cfg, tmp_path)
        return
    if (group, option) == ("policy", "lerobot"):
        # the option ships with a placeholder checkpoint path: it must fail at start naming the key
        # (tests/policies/test_lerobot.py runs it with real LeRobot checkpoints)
        with pytest.raises(ConfigError, match=r"^policy\.path: .* is not a directory"):
            Run(cfg, tmp_path)
        return
    run = Run(cfg, tmp_path)
    # every part's factory resolves (the owning process calls it later)
    for key in ("robot", "algorithm", "safety", "logger", "launcher", "record"):
        assert callable(instantiate(run.cfg[key], _partial_=True))
    assert set(run.camera_factories()) == set(run.cfg.cameras.devices or {})
    assert run.policy_metadata.action_dim == run.cfg.robot.action_dim


def test_defaults_cover_every_group():
    cfg = _compose([])
    for group in GROUPS:
        assert cfg[group] is not None, group
        if group == "cameras":  # a collection of devices, each with its _target_
            assert all("_target_" in dev for dev in cfg.cameras.devices.values())
        else:
            assert "_target_" in cfg[group], group


@pytest.mark.parametrize(
    "overrides,message",
    [
        (["policy.action_dim=13"], "policy.action_dim=13 does not match robot.action_dim=14"),
        (["policy.state_dim=3"], "policy.state_dim=3 does not match robot.state_dim=14"),
        (["+robot.bogus=1"], "robot.bogus: unknown key"),
        (["+algorithm.bogus=1"], "algorithm.bogus: unknown key"),
        (["algorithm.execute_horizon=abc"], "algorithm.execute_horizon: expected int, got str 'abc'"),
        (["algorithm.execute_horizon=0"], "algorithm.execute_horizon=0 must be in [1, policy.chunk_size"),
        (["episodes=0"], "episodes: must be >= 1"),
        (["+cameras.bogus=1"], "cameras.bogus: unknown key"),
        (["cameras.width=wide"], "cameras.width: expected int"),
        (["policy=hold", "+policy.camera_names=[head,belly]"], "policy needs cameras ['belly']"),
        (["robot._target_=robots.nowhere.Robot"], "robot._target_: cannot import 'robots.nowhere.Robot'"),
    ],
)
def test_bad_config_fails_with_named_key(overrides, message, tmp_path):
    cfg = _compose([o.replace("+policy.camera_names", "policy.camera_names") for o in overrides])
    with pytest.raises(ConfigError) as err:
        Run(cfg, tmp_path)
    assert message in str(err.value)
    assert "\n" not in str(err.value)


def _cli(*args, timeout=120):
    return subprocess.run(
        [sys.executable, "-m", "inference", *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout
    )


def test_cli_dim_mismatch_is_one_line_and_nonzero():
    proc = _cli("robot=sim", "policy.action_dim=13", "hydra.run.dir=/tmp/inference-test-bad")
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.startswith("config error:")]
    assert lines == [
        "config error: policy.action_dim: policy.action_dim=13 does not match robot.action_dim=14 (robot sim)"
    ]


def test_cli_unknown_key_is_rejected_by_hydra():
    proc = _cli("robot.bogus=1")
    assert proc.returncode != 0
    assert "bogus" in proc.stderr


def test_cli_cfg_job_and_help():
    proc = _cli("--cfg", "job")
    assert proc.returncode == 0, proc.stderr
    assert "robot:" in proc.stdout and "_target_" in proc.stdout
    proc = _cli("--help")
    assert proc.returncode == 0 and "robot: " in proc.stdout and "python -m inference" in proc.stdout


def test_tab_completion_lists_group_options():
    script = Path(sys.executable).parent / "inference"
    if not script.exists():
        pytest.skip("console script not installed (pip install -e . creates it)")
    env = {**os.environ, "COMP_LINE": "inference algorithm="}
    proc = subprocess.run([str(script), "-sc", "query=bash"], capture_output=True, text=True, env=env, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert "algorithm=sequential" in proc.stdout.split()


@pytest.mark.parametrize("experiment", sorted(p.stem for p in (Path(CONF_DIR) / "experiment").glob("*.yaml")))
def test_experiments_compose_and_validate(experiment, tmp_path):
    run = Run(_compose([f"+experiment={experiment}"]), tmp_path)
    raw = OmegaConf.load(Path(CONF_DIR) / "experiment" / f"{experiment}.yaml")
    if OmegaConf.select(raw, "algorithm.methods") is not None:  # a lockstep study
        assert run.cfg.algorithm._target_ == "algorithms.lockstep_eval.LockstepEvaluator"
        assert list(run.cfg.algorithm.methods) == list(raw.algorithm.methods)
    else:  # a real-time setup (shift_task): the default RTC algorithm with the experiment's knobs
        assert run.cfg.algorithm._target_ == "algorithms.rtc.RTCAlgorithm"
        for key in ("robot.task", "robot.env_id", "policy.checkpoint", "algorithm.execute_horizon"):
            if OmegaConf.select(raw, key) is not None:  # else inherited from the experiment it builds on
                assert OmegaConf.select(run.cfg, key) == OmegaConf.select(raw, key), key
    # every parameter an optimising sweeper varies is a key the run has (else each trial fails)
    for key in OmegaConf.select(raw, "hydra.sweeper.params", default={}) or {}:
        assert OmegaConf.select(run.cfg, key) is not None, key


@pytest.mark.parametrize("task_name", ["pendulum", "cartpole_swingup"])
def test_gym_experiments_are_the_task_and_the_papers_protocol(task_name, tmp_path):
    """+experiment=gym_<task> validates (env made, dims checked against it and the checkpoint) with the
    task's env, noise and success threshold from tasks/gym_control, and runs the RTC paper's cells;
    its _task twin is the same setup in real time."""
    import json

    from tasks.gym_control.tasks import get_task

    task = get_task(task_name)
    study = Run(_compose([f"+experiment=gym_{task_name}"]), tmp_path / "study").cfg
    realtime = Run(_compose([f"+experiment=gym_{task_name}_task"]), tmp_path / "rt").cfg
    for cfg in (study, realtime):
        assert cfg.robot.env_id == task.env_id
        assert OmegaConf.to_container(cfg.robot.env_kwargs) == task.env_kwargs
        assert cfg.robot.action_noise_std == task.action_noise_std
        assert (cfg.robot.success, cfg.robot.success_return) == ("return", task.success_return)
        ck = json.loads((Path(CONF_DIR).parent / cfg.policy.checkpoint / "config.json").read_text())
        assert [cfg.policy[k] for k in ("chunk_size", "action_dim", "state_dim")] == [
            ck["model"][k] for k in ("chunk_size", "action_dim", "state_dim")
        ] and cfg.policy.chunk_size == 8
        assert cfg.robot.hz == ck["meta"]["control_hz"] == task.hz  # the env's rate, filled in by validation
        assert cfg.algorithm.max_chunk_jump is None and cfg.max_steps == 200
        assert Path(CONF_DIR).parent.joinpath(cfg.policy.bid_weak_checkpoint, "config.json").is_file()
    assert study.robot.realtime is False and realtime.robot.realtime is True
    assert realtime.algorithm._target_ == "algorithms.rtc.RTCAlgorithm"
    cells = list(zip(study.algorithm.delays_ticks, study.algorithm.execute_horizons))
    assert [c for c in cells if c[0] != 1 or c[1] == 1] == [(d, max(d, 1)) for d in range(5)]  # s = max(d, 1)
    assert sorted(s for d, s in cells if d == 1) == [1, 2, 3, 4]  # the s sweep at d = 1
    assert {"sync", "naive", "rtc", "rtc_hard", "rtc_identity", "bid"} <= set(study.algorithm.methods)
