"""A corpus of malformed configs: each fails before anything starts, as one stderr line
``config error: <key>: <why>`` naming the key, with exit 2 -- and nothing was started (no child
process, no shared memory, no robot: the run dir holds no telemetry).

The app's real entry point (``inference.app.main``: Hydra composition, then validation) runs in
this process with the arguments a user would type; only the run dir is redirected.
"""

from __future__ import annotations

import contextlib
import glob
import io
import json
import logging
import multiprocessing as mp
import os
import shutil
import sys
from pathlib import Path

import pytest

from inference import app

ROOT = Path(__file__).resolve().parents[1]
CKPT = ROOT / "policies" / "flow" / "checkpoints" / "transfer_cube"


def _files(tmp: Path) -> dict[str, str]:
    """Broken copies of the bundled checkpoint and stats, made once per test session."""
    out = {}
    trunc = tmp / "truncated"
    shutil.copytree(CKPT, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    out["truncated"] = str(trunc)
    corrupt = tmp / "corrupt_config"
    shutil.copytree(CKPT, corrupt)
    (corrupt / "config.json").write_text('{"model": {"chunk_size": 50,')
    out["corrupt_config"] = str(corrupt)
    stats = json.loads((CKPT / "stats.json").read_text())
    no_action = dict(stats)
    inner = no_action.get("stats", no_action)
    inner = {k: v for k, v in inner.items() if k != "action"}
    (tmp / "no_action.json").write_text(json.dumps({**no_action, "stats": inner} if "stats" in no_action else inner))
    out["no_action"] = str(tmp / "no_action.json")
    (tmp / "broken.json").write_text("{not json")
    out["broken_json"] = str(tmp / "broken.json")
    (tmp / "topics_bad.json").write_text("[1, 2")
    out["topics_bad"] = str(tmp / "topics_bad.json")
    unreadable = tmp / "unreadable.json"
    unreadable.write_text("{}")
    out["topics_unreadable"] = str(tmp / "no_such_dir" / "topics.json")
    return out


# (overrides, the key the one line must name)
CASES = [
    (["robot.hz=0"], "robot.hz"),
    (["robot.task=transfer_cube_slide"], "robot.task"),
    (["robot.hz=-5"], "robot.hz"),
    (["robot.action_dim=0", "policy.action_dim=0"], "robot.action_dim"),
    (["algorithm.guidance=foo"], "algorithm.guidance"),
    # the bundled checkpoint was not trained with action prefixes: training-time RTC is refused at start
    (["algorithm.guidance=trained"], "algorithm.guidance"),
    (["algorithm=rtc_split", "algorithm.guidance=trained"], "algorithm.guidance"),
    (["algorithm=lockstep_eval", "algorithm.methods=[naive,rtc_trained]"],
     "algorithm.methods"),
    (["algorithm.schedule=foo"], "algorithm.schedule"),
    (["algorithm.stall_timeout_s=0"], "algorithm.stall_timeout_s"),
    (["algorithm.delay_window=0"], "algorithm.delay_window"),
    (["algorithm.max_restarts=-1"], "algorithm.max_restarts"),
    (["algorithm.execute_horizon=0"], "algorithm.execute_horizon"),
    (["algorithm.execute_horizon=51"], "algorithm.execute_horizon"),
    (["algorithm.s_min=0"], "algorithm.s_min"),
    (["algorithm.initial_delay_ticks=-1"], "algorithm.initial_delay_ticks"),
    (["algorithm.warmup_inferences_excluded=-2"], "algorithm.warmup_inferences_excluded"),
    (["algorithm.max_guidance_weight=0"], "algorithm.max_guidance_weight"),
    (["algorithm.max_guidance_weight=nan"], "algorithm.max_guidance_weight"),
    (["algorithm.inference_timeout_s=-1"], "algorithm.inference_timeout_s"),
    (["algorithm.poll_interval_s=0"], "algorithm.poll_interval_s"),
    (["algorithm.inference_threads=0"], "algorithm.inference_threads"),
    (["algorithm.max_rejected_chunks=0"], "algorithm.max_rejected_chunks"),
    (["algorithm.max_chunk_jump=0"], "algorithm.max_chunk_jump"),
    (["algorithm.restart_on_failure=maybe"], "algorithm.restart_on_failure"),
    (["algorithm.startup_timeout_s=abc"], "algorithm.startup_timeout_s"),
    (["+algorithm.unknown_knob=1"], "algorithm.unknown_knob"),
    (["algorithm.not_a_key=1"], "algorithm.not_a_key"),
    (["algorithm=sequential", "algorithm.execute_horizon=0"], "algorithm.execute_horizon"),
    (["algorithm=sequential", "algorithm.inference_timeout_s=0"], "algorithm.inference_timeout_s"),
    (["algorithm=sequential", "algorithm.max_chunk_jump=-1"], "algorithm.max_chunk_jump"),
    (["algorithm=lockstep_eval", "algorithm.methods=[fast]"], "algorithm.methods"),
    (["algorithm=lockstep_eval", "algorithm.delays_ticks=[-1]"], "algorithm.delays_ticks"),
    (["algorithm=lockstep_eval", "algorithm.delay_distribution=gauss"], "algorithm.delay_distribution"),
    (["algorithm=rtc_split", "algorithm.jpeg_quality=0"], "algorithm.jpeg_quality"),
    (["algorithm=rtc_split", "algorithm.inference_timeout_s=0"], "algorithm.inference_timeout_s"),
    (["safety.max_delta_deg=-1"], "safety.max_delta_deg"),
    (["safety.max_gripper_delta=0"], "safety.max_gripper_delta"),
    (["safety.enforce_limits=sometimes"], "safety.enforce_limits"),
    (["cameras.num_img_obs=0"], "cameras.num_img_obs"),
    (["cameras.width=0"], "cameras.width"),
    (["cameras.max_frame_age_s=-1"], "cameras.max_frame_age_s"),
    (["cameras.img_obs_every=0"], "cameras.img_obs_every"),
    (["cameras.height=64"], "image_size"),
    (["log_level=LOUD"], "log_level"),
    (["episodes=0"], "episodes"),
    (["max_steps=0"], "max_steps"),
    (["seed=-1"], "seed"),
    (["report=perhaps"], "report"),
    (["objective=[nope]"], "objective"),
    (["robot.max_state_age_s=0"], "robot.max_state_age_s"),
    (["robot.max_delta_deg=-5"], "robot.max_delta_deg"),
    (["launcher=ray", "launcher.connect_timeout_s=0"], "launcher.connect_timeout_s"),
    (["robot=nope"], "robot"),
    (["policy=nope"], "policy"),
    (["+x=${nothere}"], "x"),
    (["policy.prompt=${oops.missing}"], "policy.prompt"),
    (["robot.foo=1"], "robot.foo"),
    (["+robot.foo=1"], "robot.foo"),
    (["policy.num_steps=0"], "policy.num_steps"),
    (["policy.device=tpu"], "policy.device"),
    (["policy.checkpoint=/nonexistent/ckpt"], "policy.checkpoint"),
    (["policy.checkpoint={truncated}"], "policy.checkpoint"),
    (["policy.checkpoint={corrupt_config}"], "policy.checkpoint"),
    (["policy.chunk_size=40", "algorithm.execute_horizon=20"], "policy.chunk_size"),
    (["policy.camera_names=[head,left,nope]"], "policy.camera_names"),
    (["policy.action_dim=13"], "policy.action_dim"),
    (["policy.normalizer.path={no_action}"], "policy.normalizer"),
    (["policy.normalizer.path={broken_json}"], "policy.normalizer"),
    (["policy.normalizer.path=/nonexistent/stats.json"], "policy.normalizer"),
    (["robot=igris_b", "cameras=none", "policy=hold", "robot.transport=zmq"], "robot.transport"),
    (["robot=igris_b", "cameras=none", "policy=hold", "+robot.topics_file={topics_bad}"], "robot.topics_file"),
    (["robot=igris_b", "cameras=none", "policy=hold", "+robot.topics_file={topics_unreadable}"], "robot.topics_file"),
]


@pytest.fixture(scope="module")
def broken(tmp_path_factory) -> dict[str, str]:
    return _files(tmp_path_factory.mktemp("broken"))


@contextlib.contextmanager
def logging_restored():
    """Hydra configures logging for the job it runs (``disable_existing_loggers`` with the
    ``disabled`` job logging): give every later test in this process the logging it had."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    was_disabled = {name: lg.disabled for name, lg in logging.root.manager.loggerDict.items()
                    if isinstance(lg, logging.Logger)}
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.disabled = was_disabled.get(name, False)


def run_app(args: list[str], run_dir: Path) -> tuple[int, str]:
    argv = ["inference", *args, f"hydra.run.dir={run_dir}", "hydra/job_logging=disabled",
            "hydra/hydra_logging=disabled"]
    err = io.StringIO()
    old = sys.argv
    sys.argv = argv
    try:
        with logging_restored(), contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            app.main()
        code = 0
    except SystemExit as exc:
        code = exc.code
    finally:
        sys.argv = old
    return code, err.getvalue()


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 50


@pytest.mark.parametrize("args,key", CASES, ids=[" ".join(a) for a, _ in CASES])
def test_malformed_config_fails_before_anything_starts(args, key, broken, tmp_path):
    args = [a.format(**broken) if "{" in a and "${" not in a else a for a in args]
    ours = f"/dev/shm/*_{os.getpid()}_*"  # blocks are named <kind>_<creator pid>_<random>
    shm_before = set(glob.glob(ours))
    code, err = run_app([*args, "logger=none"], tmp_path / "run")
    lines = err.strip().splitlines()
    print(f"{' '.join(args)} -> exit {code}: {err.strip()}")
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("config error: "), err
    assert key in lines[0], f"the line does not name {key!r}: {lines[0]}"
    assert mp.active_children() == []  # no inference process, no device process
    assert set(glob.glob(ours)) - shm_before == set()  # no shared memory
    # the robot was never built or commanded: no telemetry of any kind exists
    for name in ("ticks.csv", "events.jsonl", "summary.json", "inferences.csv"):
        assert not (tmp_path / "run" / name).exists(), name
