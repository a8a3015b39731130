"""Where checkpoints state the control rate they were trained at, and the start-time comparison with
``robot.hz`` (``inference.validation.control_rate_mismatch``): flow checkpoints (``meta.control_hz``,
else the recorded data rate), LeRobot checkpoints (``train_config.json``: ``env.fps``, else the
dataset's ``meta/info.json`` ``fps``)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from inference.validation import ConfigError, control_rate_mismatch
from policies.control_rate import ControlRate, lerobot_dataset_rate, positive_hz
from policies.flow.checkpoint import control_rate, load_config
from policies.lerobot.features import checkpoint_rate

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = ROOT / "policies" / "flow" / "checkpoints"


@given(st.floats(min_value=1e-3, max_value=1e4, allow_nan=False))
def test_a_positive_finite_number_is_a_rate(hz):
    assert positive_hz(hz) == hz


@given(
    st.one_of(
        st.floats(max_value=0.0),
        st.just(math.nan),
        st.just(math.inf),
        st.booleans(),
        st.text(),
        st.none(),
        st.lists(st.integers()),
    )
)
def test_anything_else_is_no_rate(value):
    assert positive_hz(value) is None


@pytest.mark.parametrize("name", sorted(p.name for p in BUNDLED.iterdir() if (p / "config.json").is_file()))
def test_every_bundled_checkpoint_states_the_rate_of_its_data(name):
    """``meta.control_hz`` is stated, and agrees with the data rate its recorded training settings name."""
    rate = control_rate(BUNDLED / name)
    _, meta = load_config(BUNDLED / name)
    assert rate is not None and rate.source == f"{BUNDLED / name / 'config.json'} (meta.control_hz)"
    assert meta["config"]["data"]["hz"] == rate.hz


def test_the_aloha_checkpoints_run_at_the_sim_robots_rate():
    """The transfer-cube demonstrations were recorded on the sim robot at its ``hz``: 20."""
    import yaml

    sim_hz = yaml.safe_load((ROOT / "conf" / "robot" / "sim.yaml").read_text())["hz"]
    names = sorted(p.name for p in BUNDLED.glob("transfer_cube*"))
    assert names and {control_rate(BUNDLED / n).hz for n in names} == {float(sim_hz)} == {20.0}


def _checkpoint(tmp_path: Path, meta: dict) -> Path:
    out = tmp_path / "ckpt"
    shutil.copytree(BUNDLED / "transfer_cube", out)
    config = json.loads((out / "config.json").read_text())
    config["meta"] = meta
    (out / "config.json").write_text(json.dumps(config))
    return out


def test_a_flow_checkpoint_without_control_hz_falls_back_to_its_recorded_data_rate(tmp_path):
    ckpt = _checkpoint(tmp_path, {"config": {"data": {"hz": 30}}})
    assert control_rate(ckpt) == ControlRate(30.0, f"{ckpt / 'config.json'} (meta.config.data.hz)")


def test_a_flow_checkpoint_that_does_not_say_has_no_rate(tmp_path):
    assert control_rate(_checkpoint(tmp_path, {"test": True})) is None


def test_a_control_hz_that_is_no_rate_is_an_error_not_an_unknown_rate(tmp_path):
    with pytest.raises(ValueError, match="control_hz=-5"):
        control_rate(_checkpoint(tmp_path, {"control_hz": -5}))


def test_training_writes_the_data_rate_into_new_checkpoints():
    """``tasks/transfer_cube/train.py`` puts the demonstrations' rate in config.json's meta."""
    from omegaconf import OmegaConf

    from tasks.transfer_cube import train

    cfg = OmegaConf.create({"data": {"hz": 25, "task": "transfer_cube"}, "seed": 0})

    class Demos:  # what _meta reads of the recorded demonstrations
        states = [[0.0]] * 3
        episode = [0, 0, 1]
        successes, attempts = 2, 2

    meta = train._meta(cfg, Demos(), 10, 0.5, 1.0, 2.0, "32-true")
    assert meta["control_hz"] == 25.0


def _lerobot(tmp_path: Path, train_config: dict | None) -> Path:
    root = tmp_path / "pretrained_model"
    root.mkdir()
    if train_config is not None:
        (root / "train_config.json").write_text(json.dumps(train_config))
    return root


def _dataset(base: Path, fps) -> Path:
    (base / "meta").mkdir(parents=True)
    (base / "meta" / "info.json").write_text(json.dumps({"fps": fps, "codebase_version": "v3.0"}))
    return base


def test_lerobot_env_fps_is_the_rate(tmp_path):
    root = _lerobot(tmp_path, {"env": {"fps": 50}, "dataset": {"repo_id": "x/y"}})
    assert checkpoint_rate(root) == ControlRate(50.0, f"{root / 'train_config.json'} (env.fps)")


def test_lerobot_dataset_fps_from_its_root(tmp_path):
    data = _dataset(tmp_path / "data", 15)
    root = _lerobot(tmp_path, {"env": None, "dataset": {"repo_id": "x/y", "root": str(data)}})
    assert checkpoint_rate(root) == ControlRate(15.0, f"{data / 'meta' / 'info.json'} (fps)")


def test_lerobot_dataset_fps_from_the_local_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_LEROBOT_HOME", str(tmp_path / "cache"))
    data = _dataset(tmp_path / "cache" / "lab" / "pick", 30)
    root = _lerobot(tmp_path, {"dataset": {"repo_id": "lab/pick"}})
    assert checkpoint_rate(root) == ControlRate(30.0, f"{data / 'meta' / 'info.json'} (fps)")
    assert lerobot_dataset_rate("lab/other") is None


def test_lerobot_checkpoint_without_train_config_has_no_rate(tmp_path):
    assert checkpoint_rate(_lerobot(tmp_path, None)) is None


def _node(checkpoint: Path | str) -> dict:
    return {"_target_": "policies.registry.build_policy", "type": "flow", "checkpoint": str(checkpoint)}


def test_mismatch_names_both_rates_and_the_file():
    robot = {"hz": 50}
    mismatch = control_rate_mismatch(robot, _node("policies/flow/checkpoints/transfer_cube"))
    assert mismatch == {
        "robot_hz": 50.0,
        "policy_hz": 20.0,
        "source": f"{BUNDLED / 'transfer_cube' / 'config.json'} (meta.control_hz)",
    }
    assert control_rate_mismatch({"hz": 20}, _node("policies/flow/checkpoints/transfer_cube")) is None


def test_mismatch_for_a_lerobot_checkpoint(tmp_path):
    root = _lerobot(tmp_path, {"env": {"fps": 50}})
    node = {"_target_": "policies.registry.build_policy", "type": "lerobot", "path": str(root)}
    assert control_rate_mismatch({"hz": 20}, node)["policy_hz"] == 50.0
    assert control_rate_mismatch({"hz": 50}, node) is None


def test_policies_that_state_no_rate_are_not_compared():
    node = {"_target_": "policies.registry.build_policy", "type": "hold"}
    assert control_rate_mismatch({"hz": 1000}, node) is None


def test_a_broken_rate_names_the_checkpoint_key(tmp_path):
    with pytest.raises(ConfigError, match="^policy.checkpoint: .*control_hz='fast'"):
        control_rate_mismatch({"hz": 20}, _node(_checkpoint(tmp_path, {"control_hz": "fast"})))
