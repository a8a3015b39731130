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

ROOT = Path(__file__).resolve().parents[2]
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
    out.update(_topics_files(tmp))
    out.update(_stats_files(tmp, stats))
    out.update(_video_files(tmp))
    out["lab"] = str(_lab_dir(tmp / "lab"))
    out.update(_normalizer_mode_files(tmp, stats))
    out.update(_rate_files(tmp))
    out["lerobot_ckpt"] = str(_lerobot_checkpoint(tmp / "lerobot_ckpt"))
    out.update(_weak_files(tmp))
    return out


def _weak_files(tmp: Path) -> dict[str, str]:
    """Weak checkpoints ``guidance: bid`` cannot contrast with: one that loads but writes chunks of
    another length (a real model, saved), and a truncated copy of the bundled one."""
    from policies.flow.checkpoint import load_config, save_checkpoint
    from policies.flow.model import FlowModel

    cfg, _ = load_config(CKPT)
    short = tmp / "weak_short_chunks"
    save_checkpoint(short, FlowModel(type(cfg).from_dict({**cfg.to_dict(), "chunk_size": 10})))
    return {"weak_short": str(short)}


def _stats_files(tmp: Path, stats: dict) -> dict[str, str]:
    """Stats files that exist and parse but whose contents the run cannot use."""
    out = {}
    inner_key = "stats" if "stats" in stats else None

    def variant(name: str, key: str, stat: str, change) -> None:
        copy = json.loads(json.dumps(stats))
        inner = copy[inner_key] if inner_key else copy
        inner[key][stat] = change(list(inner[key][stat]))
        (tmp / f"{name}.json").write_text(json.dumps(copy))  # NaN is written as NaN, as numpy would
        out[name] = str(tmp / f"{name}.json")

    variant("nan_stats", "action", "std", lambda v: [float("nan")] + v[1:])
    variant("inf_stats", "state", "mean", lambda v: v[:3] + [float("inf")] + v[4:])
    variant("negative_std", "state", "std", lambda v: [-abs(x) - 0.1 for x in v])
    variant("short_state", "state", "mean", lambda v: v[:-1])
    variant("zero_std", "action", "std", lambda v: [0.0] * len(v))
    return out


def _normalizer_mode_files(tmp: Path, stats: dict) -> dict[str, str]:
    """Stats files whose modes leave a key the policy uses without a usable normalization: ``action``
    gone from both ``stats`` and ``modes`` (it must not become identity), a mode whose stats are
    missing, a mode that does not exist."""

    def variant(name: str, change) -> None:
        copy = json.loads(json.dumps(stats))
        change(copy)
        (tmp / f"{name}.json").write_text(json.dumps(copy))
        out[name] = str(tmp / f"{name}.json")

    out: dict[str, str] = {}
    assert "stats" in stats and "modes" in stats, "the bundled stats.json has both"
    variant("no_action_anywhere", lambda c: (c["stats"].pop("action"), c["modes"].pop("action")))
    variant("minmax_without_min", lambda c: (c["modes"].update(action="minmax"), c["stats"]["action"].pop("min")))
    variant("unknown_mode", lambda c: c["modes"].update(action="tanh"))
    return out


def _rate_files(tmp: Path) -> dict[str, str]:
    """A copy of the bundled checkpoint whose config.json states a control rate that is no rate."""
    bad = tmp / "bad_rate"
    shutil.copytree(CKPT, bad)
    config = json.loads((bad / "config.json").read_text())
    config["meta"]["control_hz"] = "fast"
    (bad / "config.json").write_text(json.dumps(config))
    return {"bad_rate": str(bad)}


def _lerobot_checkpoint(root: Path) -> Path:
    """A directory laid out like LeRobot's save_pretrained output for the sim robot (config.json with
    its features, the processor files): enough for the start-time checks, which read the JSON only."""
    root.mkdir(parents=True)
    image = {"type": "VISUAL", "shape": [3, 96, 128]}
    (root / "config.json").write_text(
        json.dumps(
            {
                "type": "act",
                "chunk_size": 50,
                "n_action_steps": 50,
                "n_obs_steps": 1,
                "input_features": {
                    "observation.state": {"type": "STATE", "shape": [14]},
                    **{f"observation.images.{c}": image for c in ("head", "left", "right")},
                },
                "output_features": {"action": {"type": "ACTION", "shape": [14]}},
            }
        )
    )
    (root / "train_config.json").write_text(json.dumps({"env": {"fps": 50}, "dataset": {"repo_id": "local/none"}}))
    for name in ("model.safetensors", "policy_preprocessor.json", "policy_postprocessor.json"):
        (root / name).write_text("{}")
    return root


def _topics_files(tmp: Path) -> dict[str, str]:
    """ROS 2 topics files that parse as JSON but cannot describe the robot."""

    def field(slice_=None):
        return {"attr": "position", **({"slice": slice_} if slice_ else {})}

    files = {
        # a field without its slice of the message
        "topics_no_slice": {
            "topics": {
                "arm": {
                    "topic": "/x/joint_states",
                    "msg_type": "JointState",
                    "fields": {"/observation/joint_pos/left": field()},
                }
            }
        },
        # a key the robot's own topics already produce, mapped a second time
        "topics_twice": {
            "topics": {
                "extra": {
                    "topic": "/x/more_states",
                    "msg_type": "JointState",
                    "fields": {"/observation/joint_pos/left": field([0, 6])},
                }
            }
        },
    }
    out = {}
    for name, content in files.items():
        (tmp / f"{name}.json").write_text(json.dumps(content))
        out[name] = str(tmp / f"{name}.json")
    return out


def _video_files(tmp: Path) -> dict[str, str]:
    """Files a video camera cannot play: text named .mp4, an empty file."""
    (tmp / "not_a_video.mp4").write_text("these are not frames\n")
    (tmp / "empty.avi").write_bytes(b"")
    return {"not_a_video": str(tmp / "not_a_video.mp4"), "empty_video": str(tmp / "empty.avi")}


def _lab_dir(conf: Path) -> Path:
    """A lab's own config directory (``--config-dir``): a YAML syntax error, a typo'd key, and a
    robot whose cameras name a source the model lacks."""
    (conf / "robot").mkdir(parents=True)
    (conf / "cameras").mkdir()
    sim = (ROOT / "conf" / "robot" / "sim.yaml").read_text()
    (conf / "robot" / "broken.yaml").write_text(sim.replace("hz: 20", "hz: [20"))
    (conf / "robot" / "typo.yaml").write_text(sim.replace("hz: 20", "hzz: 20"))
    (conf / "robot" / "tabs.yaml").write_text(sim.replace("  ", "\t", 1) if "  " in sim else "\tname: x\n")
    cams = (ROOT / "conf" / "cameras" / "sim.yaml").read_text()
    (conf / "cameras" / "mine.yaml").write_text(cams.replace("source: top", "source: ceiling"))
    return conf


# (overrides, the key the one line must name)
CASES = [
    (["robot.hz=0"], "robot.hz"),
    (["robot.task=transfer_cube_spin"], "robot.task"),  # a task the sim does not have
    (["robot.hz=-5"], "robot.hz"),
    (["robot.action_dim=0", "policy.action_dim=0"], "robot.action_dim"),
    (["algorithm.guidance=foo"], "algorithm.guidance"),
    # the bundled checkpoint was not trained with action prefixes: training-time RTC is refused at start
    (["algorithm.guidance=trained"], "algorithm.guidance"),
    (["algorithm=rtc_split", "algorithm.guidance=trained"], "algorithm.guidance"),
    (["algorithm=lockstep_eval", "algorithm.methods=[naive,rtc_trained]"], "algorithm.methods"),
    # identity guidance needs a sampler to guide: the scripted expert has none
    (["policy=scripted", "cameras=none", "algorithm.guidance=identity"], "algorithm.guidance"),
    (
        ["algorithm=lockstep_eval", "policy=scripted", "cameras=none", "algorithm.methods=[rtc_identity]"],
        "algorithm.methods",
    ),
    # select needs a policy that samples several chunks: the scripted expert does not
    (["policy=scripted", "cameras=none", "algorithm.guidance=select"], "algorithm.guidance"),
    (["algorithm=lockstep_eval", "policy=scripted", "cameras=none", "algorithm.methods=[select]"], "algorithm.methods"),
    (["policy.select_samples=0"], "policy.select_samples"),
    (["policy.select_stale_gate=sometimes"], "policy.select_stale_gate"),
    (["algorithm=lockstep_eval", "algorithm.methods=[rtc_capped]"], "algorithm.methods"),
    (["algorithm.guided_cap_ticks=-1"], "algorithm.guided_cap_ticks"),
    (["algorithm.schedule=foo"], "algorithm.schedule"),
    (["algorithm.stall_timeout_s=0"], "algorithm.stall_timeout_s"),
    (["algorithm.delay_window=0"], "algorithm.delay_window"),
    (["algorithm.max_restarts=-1"], "algorithm.max_restarts"),
    (["algorithm.execute_horizon=0"], "algorithm.execute_horizon"),
    (["algorithm.execute_horizon=51"], "algorithm.execute_horizon"),
    # an old spelling names the new one
    (["algorithm.s_min=4"], "algorithm.s_min", "renamed: use algorithm.execute_horizon"),
    (["+algorithm.s_min=4"], "algorithm.s_min", "renamed: use algorithm.execute_horizon"),
    (["algorithm.initial_delay_ticks=-1"], "algorithm.initial_delay_ticks"),
    (["algorithm.warmup_inferences_excluded=-2"], "algorithm.warmup_inferences_excluded"),
    (["algorithm.max_guidance_weight=0"], "algorithm.max_guidance_weight"),
    (["algorithm.max_guidance_weight=nan"], "algorithm.max_guidance_weight"),
    (["algorithm.inference_timeout_s=-1"], "algorithm.inference_timeout_s"),
    (["algorithm.poll_interval_s=0"], "algorithm.poll_interval_s"),
    (["algorithm.inference_threads=0"], "algorithm.inference_threads"),
    (["algorithm.max_rejected_chunks=0"], "algorithm.max_rejected_chunks"),
    (["algorithm.max_chunk_jump=0"], "algorithm.max_chunk_jump"),
    (["algorithm.max_restarts=maybe"], "algorithm.max_restarts"),
    (["algorithm.max_restarts=-1"], "algorithm.max_restarts"),
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
    (["policy.compile_mode=fastest"], "policy.compile_mode"),
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
    (
        ["robot=igris_b", "cameras=none", "policy=hold", "+robot.topics_file={topics_no_slice}"],
        "robot.topics_file",
        "'slice'",
    ),
    (
        ["robot=igris_b", "cameras=none", "policy=hold", "+robot.topics_file={topics_twice}"],
        "robot.topics_file",
        "mapped by two topics",
    ),
    # device knobs, checked from the cameras' declared ranges and their preflight (no camera is built)
    (["cameras.width=100000", "cameras.height=100000"], "cameras.width", "<= 4096"),
    (["cameras.devices.head.fps=0"], "cameras.devices.head.fps", "must be > 0"),
    (["cameras.devices.right.fps=-15"], "cameras.devices.right.fps", "must be > 0"),
    (["cameras.devices.left.source=ceiling"], "cameras.devices.left.source", "not a camera of the sim model"),
    (["+cameras.devices.head.start_timeout_s=0"], "cameras.devices.head.start_timeout_s", "must be > 0"),
    (["cameras.devices.head.fps=fast"], "cameras.devices.head.fps", "expected float"),
    (["robot=igris_b", "cameras=video", "policy=hold"], "cameras.devices.head.device", "does not exist"),
    (
        ["robot=igris_b", "cameras=video", "policy=hold", "cameras.devices.head.device={not_a_video}"],
        "cameras.devices.head.device",
        "cannot open",
    ),
    (
        ["robot=igris_b", "cameras=video", "policy=hold", "cameras.devices.head.device={empty_video}"],
        "cameras.devices.head.device",
        "cannot open",
    ),
    (
        ["robot=igris_b", "cameras=video", "policy=hold", "+cameras.devices.head.fps=0"],
        "cameras.devices.head.fps",
        "> 0",
    ),
    (
        ["robot=igris_b", "cameras=igris_b", "policy=hold", "cameras.devices.head.fourcc=MJPEG"],
        "cameras.devices.head.fourcc",
        "4 characters",
    ),
    (
        ["robot=igris_b", "cameras=igris_b", "policy=hold", "cameras.devices.left.fps=0"],
        "cameras.devices.left.fps",
        "> 0",
    ),
    (
        ["robot=igris_b", "cameras=igris_b", "policy=hold", "+cameras.devices.head.open_timeout_s=0"],
        "cameras.devices.head.open_timeout_s",
        "> 0",
    ),
    (
        ["robot=igris_b", "cameras=ros_topics", "policy=hold", "+cameras.devices.head.reliability=maybe"],
        "cameras.devices.head.reliability",
        "not one of",
    ),
    (
        ["robot=igris_b", "cameras=ros_topics", "policy=hold", "+cameras.devices.head.depth=0"],
        "cameras.devices.head.depth",
        ">= 1",
    ),
    (
        ["robot=igris_b", "cameras=ros_topics", "policy=hold", "+cameras.devices.head.transport=zmq"],
        "cameras.devices.head.transport",
        "not one of",
    ),
    (
        ["robot=igris_b", "cameras=ros_topics", "policy=hold", "+cameras.devices.head.domain_id=300"],
        "cameras.devices.head.domain_id",
        "<= 232",
    ),
    (
        [
            "robot=igris_b",
            "cameras=ros_topics",
            "policy=hold",
            "cameras.devices.right.topic='/igris_b/{{robot_name}}/image'",
        ],
        "cameras.devices.right.topic",
        "placeholders",
    ),
    # policy knobs checked before any connection or plan
    (["policy=openpi_remote", "policy.port=70000"], "policy.port", "<= 65535"),
    (["policy=openpi_remote", "policy.host="], "policy.host", "empty"),
    (["policy=openpi_remote", "policy.obs_keys.image_layout=whc"], "policy.obs_keys", "image_layout"),
    (["policy=openpi_remote", "+policy.obs_keys.bogus=1"], "policy.obs_keys", "unknown entries"),
    (["policy=openpi_remote", "policy.request_timeout_s=0"], "policy.request_timeout_s", "> 0"),
    (["policy=scripted", "cameras=none", "policy.hz=0"], "policy.hz", "> 0"),
    (["policy=scripted", "cameras=none", "policy.replan_s=-1"], "policy.replan_s", "> 0"),
    (["policy=scripted", "cameras=none", "policy.approach_offsets_m=[]"], "policy.approach_offsets_m", "at least one"),
    (["policy=scripted", "cameras=none", "policy.hover_ends_s=[1.5,3.0]"], "policy.hover_ends_s", "outside"),
    (["policy=scripted", "cameras=none", "policy.hidden_strategy=oracle"], "policy.hidden_strategy", "oracle"),
    (["policy=scripted", "cameras=none", "policy.consistency_tol_rad=0"], "policy.consistency_tol_rad", "> 0"),
    (
        ["algorithm=lockstep_eval", "policy=scripted", "cameras=none", "algorithm.methods=[select]"],
        "algorithm.methods",
        "guidance 'select'",
    ),
    # bidirectional decoding needs a weak checkpoint that answers like the policy's own
    (["algorithm.guidance=bid"], "policy.bid_weak_checkpoint", "required for guidance=bid"),
    (["algorithm=lockstep_eval", "algorithm.methods=[naive,bid]"], "policy.bid_weak_checkpoint", "required"),
    (
        ["algorithm.guidance=bid", "policy.bid_weak_checkpoint=/nonexistent/weak"],
        "policy.bid_weak_checkpoint",
        "not found",
    ),
    (
        ["algorithm.guidance=bid", "policy.bid_weak_checkpoint={weak_short}"],
        "policy.bid_weak_checkpoint",
        "chunk_size=10",
    ),
    (
        ["algorithm.guidance=bid", "policy.bid_weak_checkpoint={truncated}"],
        "policy.bid_weak_checkpoint",
        "cannot be loaded",
    ),
    (["policy.bid_samples=1", "policy.bid_weak_checkpoint=transfer_cube_prefix"], "policy.bid_samples", ">= 2"),
    (["policy=scripted", "cameras=none", "algorithm.guidance=bid"], "algorithm.guidance", "guidance 'bid'"),
    # robot knobs the sim cannot honour
    (["robot.hz=1000"], "robot.hz", "<= 500"),
    (["robot.seed=-1"], "robot.seed", ">= 0"),
    # robot=gym (robots/gym): the env decides the rate and sizes; what contradicts it is refused at start
    (["robot=gym", "policy=hold", "robot.env_id=NoSuchEnv-v9"], "robot.env_id", "no environment"),
    (["robot=gym", "policy=hold", "robot.env_id=gym_pusht/PushT-v0"], "robot.env_id", "not installed"),
    (["robot=gym", "policy=hold", "robot.env_id=CartPole-v1"], "robot.env_id", "Box"),
    (["robot=gym", "policy=hold", "robot.action_dim=3"], "robot.action_dim", "action space has 1"),
    (["robot=gym", "policy=hold", "robot.state_dim=4"], "robot.state_dim", "has 3"),
    (["robot=gym", "policy=hold", "policy.action_dim=2"], "policy.action_dim", "robot.action_dim=1"),
    (["robot=gym", "policy=flow"], "policy.action_dim", "does not match robot.action_dim=1"),
    (
        ["robot=gym", "policy=hold", "cameras=gym", "cameras.devices.image.source=pixels"],
        "cameras.devices.image.source",
        "not an image",
    ),
    (["robot=gym", "policy=hold", "robot.hz=30"], "robot.hz", "not Pendulum-v1's rate"),
    (["robot=gym", "policy=hold", "robot.action_noise_std=-0.1"], "robot.action_noise_std", ">= 0"),
    (["robot=gym", "policy=hold", "robot.state_keys=[x]"], "robot.state_keys", "no keys"),
    (["robot=gym", "policy=hold", "robot.success=return"], "robot.success_return", "registers none"),
    (["robot=gym", "policy=hold", "+robot.env_kwargs.bogus=1"], "robot.env_kwargs", "bogus"),
    (["robot=gym", "policy=hold", "robot.home_action=[5]"], "robot.home_action", "outside the action bounds"),
    (["robot=gym", "policy=hold", "cameras=sim"], "cameras", "needs robot"),
    # telemetry, recording, launcher, real-time settings
    (["logger=wandb", "logger.mode=onlin"], "logger.mode", "not one of"),
    (["logger=wandb", "logger.log_every_ticks=0"], "logger.log_every_ticks", ">= 1"),
    (["record=mcap", "record.jpeg_quality=101"], "record.jpeg_quality", "<= 100"),
    (["record=mcap", "record.image_every=0"], "record.image_every", ">= 1"),
    (["record=mcap", "record.queue_size=0"], "record.queue_size", ">= 1"),
    (["launcher=ray", "launcher.auth_mode=maybe"], "launcher.auth_mode", "not one of"),
    (
        ["launcher=ray", "launcher.auth_mode=token", "launcher.auth_token_path=/nonexistent/ray_token"],
        "launcher.auth_token_path",
        "does not exist",
    ),
    (["realtime.control_priority=100"], "realtime.control_priority", "1..99"),
    (["realtime.device_nice=abc"], "realtime.device_nice", "expected int"),
    (["+realtime.bogus=1"], "realtime.bogus", "unknown key"),
    # the contents of the normalizer's stats file, for every key the policy reads and writes
    (["policy.normalizer.path={nan_stats}"], "policy.normalizer", "action.std are not finite"),
    (["policy.normalizer.path={inf_stats}"], "policy.normalizer", "state.mean are not finite"),
    (["policy.normalizer.path={negative_std}"], "policy.normalizer", "state.std are negative"),
    (["policy.normalizer.path={short_state}"], "policy.normalizer", "state.mean have dim 13"),
    (["policy.normalizer.path={zero_std}", "+policy.normalizer.eps=0"], "policy.normalizer", "zero scale"),
    (["+policy.normalizer.eps=-1"], "policy.normalizer", "eps must be >= 0"),
    # a robot's cameras come with it; a pairing that cannot work is refused before anything starts
    (["robot=igris_b", "cameras=sim", "policy=hold"], "cameras", "needs robot robots.sim.robot.SimRobot"),
    (["robot=igris_c", "cameras=sim", "policy=hold"], "cameras", "leave cameras= out"),
    # the bundled policy on a real robot: what it drives, and what to run instead
    (["robot=igris_b"], "policy.action_dim", "policy=openpi"),
    (["robot=igris_c", "algorithm=rtc"], "policy.action_dim", "docs/lerobot.md"),
    # a checkpoint that states its control rate runs at that robot.hz unless told otherwise
    (["robot.hz=50"], "robot.hz", "policy.allow_rate_mismatch=true"),
    (["robot.hz=10"], "robot.hz", "trained at 20 Hz"),
    (["robot.hz=50", "policy.allow_rate_mismatch=maybe"], "policy.allow_rate_mismatch", "expected bool"),
    (["policy.checkpoint={bad_rate}"], "policy.checkpoint", "control_hz='fast'"),
    # every key the policy uses has an explicit normalization mode and the stats it needs
    (["policy.normalizer.path={no_action_anywhere}"], "policy.normalizer", "no mode for 'action'"),
    (["policy.normalizer.path={minmax_without_min}"], "policy.normalizer", "lack ['min']"),
    (["policy.normalizer.path={unknown_mode}"], "policy.normalizer", "'tanh'"),
    (["+policy.normalizer.modes={{state: zscore}}"], "policy.normalizer", "no mode for 'action'"),
    # the live viewer's knobs, including what its server process would otherwise die of after the start
    (["viewer=rerun", "viewer.web_port=-1"], "viewer.web_port", ">= 0"),
    (["viewer=rerun", "viewer.web_port=abc"], "viewer.web_port", "expected int"),
    (["viewer=rerun", "viewer.grpc_port=70000"], "viewer.grpc_port", "<= 65535"),
    (["viewer=rerun", "+viewer.unknown_key=1"], "viewer.unknown_key", "unknown key"),
    (["+viewer.unknown_key=1"], "viewer.unknown_key", "unknown key"),
    (["viewer=rerun", "viewer.bind=localhost"], "viewer.bind", "not an IP address"),
    (["viewer=rerun", "viewer.bind="], "viewer.bind", "not an IP address"),
    (["viewer=rerun", "viewer.bind=192.0.2.1"], "viewer.bind", "cannot be bound"),
    (["viewer=rerun", "viewer.server_memory_limit=lots"], "viewer.server_memory_limit", "not a size"),
    (["viewer=rerun", "viewer.server_memory_limit=150%"], "viewer.server_memory_limit", "at most 100%"),
    (["viewer=rerun", "viewer.application_id="], "viewer.application_id", "empty"),
    (["viewer=rerun", "viewer.image_encoding=png"], "viewer.image_encoding", "not one of"),
    (["viewer=rerun", "viewer.serve=false", "viewer.save_rrd=false"], "viewer", "nothing to do"),
    # recorders: their folder, LeRobot's interpreter and knobs
    (["record=mcap", "+record.bogus=1"], "record.bogus", "unknown key"),
    (["record=mcap", "record.directory="], "record.directory", "empty"),
    (["record=mcap", "record.directory=/tmp/elsewhere"], "record.directory", "inside the run directory"),
    (["record=lerobot", "record.directory=../up"], "record.directory", "inside the run directory"),
    (["record=lerobot", "record.fps=0"], "record.fps", ">= 1"),
    (["record=lerobot", "record.fps=abc"], "record.fps", "expected int"),
    (["record=lerobot", "+record.bogus=1"], "record.bogus", "unknown key"),
    (["record=lerobot", "record.repo_id="], "record.repo_id", "empty"),
    (["record=lerobot", "record.python=/nonexistent/python"], "record.python", "does not exist"),
    (["record=lerobot", "record.queue_size=0"], "record.queue_size", ">= 1"),
    # where the Ray pieces connect
    (["launcher=ray", "launcher.address=nohost"], "launcher.address", "expected host:port"),
    (["launcher=ray", "launcher.namespace="], "launcher.namespace", "empty"),
    (
        ["algorithm=rtc_fleet", "policy=scripted", "cameras=none", "algorithm.address=nohost:0"],
        "algorithm.address",
        "expected host:port",
    ),
    (["algorithm=rtc_fleet", "policy=scripted", "cameras=none", "algorithm.app_name="], "algorithm.app_name", "empty"),
    (
        [
            "algorithm=rtc_fleet",
            "policy=scripted",
            "cameras=none",
            "algorithm.auth_mode=token",
            "algorithm.auth_token_path=/nonexistent/token",
        ],
        "algorithm.auth_token_path",
        "does not exist",
    ),
    # policy=lerobot's own knobs, checked before its interpreter is even looked for
    (
        ["policy=lerobot", "policy.path={lerobot_ckpt}", "algorithm.execute_horizon=10", "policy.device=tpu"],
        "policy.device",
        "expected cpu, cuda",
    ),
    (
        ["policy=lerobot", "policy.path={lerobot_ckpt}", "algorithm.execute_horizon=10", "policy.threads=0"],
        "policy.threads",
        ">= 1",
    ),
    (
        [
            "policy=lerobot",
            "policy.path={lerobot_ckpt}",
            "algorithm.execute_horizon=10",
            "policy.num_inference_steps=0",
        ],
        "policy.num_inference_steps",
        ">= 1",
    ),
    (
        ["policy=lerobot", "policy.path={lerobot_ckpt}", "algorithm.execute_horizon=10", "policy.seed=-1"],
        "policy.seed",
        ">= 0",
    ),
    (
        ["policy=lerobot", "policy.path={lerobot_ckpt}", "algorithm.execute_horizon=10", "+policy.bogus=1"],
        "policy.bogus",
        "unknown key",
    ),
    (
        ["policy=lerobot", "policy.path={lerobot_ckpt}", "algorithm.execute_horizon=10", "policy.chunk_size=60"],
        "policy.path",
        "exceeds",
    ),
    # guidance and evaluation knobs
    (["algorithm.guided_cap_ticks=abc"], "algorithm.guided_cap_ticks", "expected int or None"),
    (["algorithm=lockstep_eval", "algorithm.methods=[]"], "algorithm.methods", "empty"),
    (["algorithm=lockstep_eval", "algorithm.delays_ticks=[]"], "algorithm.delays_ticks", "empty"),
    # Hydra's own refusals, said the same way
    (["robot.hz=[20"], "robot.hz", "cannot parse override"),
    (["hydra.job.chdir=maybe"], "hydra.job.chdir", "not a valid bool"),
    (["hydra/launcher=nope"], "hydra/launcher", "Could not find"),
    (["cameras=nope"], "cameras", "available: "),
    # a lab's own config directory: its files are checked like the repository's
    (["--config-dir={lab}", "robot=broken"], "robot", "YAML error in"),
    (["--config-dir", "{lab}", "robot=broken"], "robot", "broken.yaml, line"),
    (["--config-dir={lab}", "robot=tabs"], "robot", "tabs.yaml"),
    (["--config-dir={lab}", "robot=typo"], "robot.hzz", "unknown key"),
    (["--config-dir={lab}", "cameras=mine"], "cameras.devices.head.source", "'ceiling' is not a camera"),
    (["--config-dir={lab}", "robot=nope"], "robot", "broken"),
    (["--config-dir=/nonexistent/lab_conf", "robot=sim"], "--config-dir", "not found"),
    (["--config-name", "nope"], "--config-name", "Cannot find primary config"),
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
    was_disabled = {
        name: lg.disabled for name, lg in logging.root.manager.loggerDict.items() if isinstance(lg, logging.Logger)
    }
    try:
        yield
    finally:
        root.handlers[:] = handlers
        root.setLevel(level)
        for name, lg in logging.root.manager.loggerDict.items():
            if isinstance(lg, logging.Logger):
                lg.disabled = was_disabled.get(name, False)


def run_app(args: list[str], run_dir: Path) -> tuple[int, str]:
    argv = [
        "inference",
        *args,
        f"hydra.run.dir={run_dir}",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
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


@pytest.mark.parametrize(
    "args,key,why", [(c[0], c[1], c[2] if len(c) > 2 else "") for c in CASES], ids=[" ".join(c[0]) for c in CASES]
)
def test_malformed_config_fails_before_anything_starts(args, key, why, broken, tmp_path):
    args = [a.format(**broken) if "{" in a and "${" not in a else a for a in args]
    ours = f"/dev/shm/*_{os.getpid()}_*"  # blocks are named <kind>_<creator pid>_<random>
    shm_before = set(glob.glob(ours))
    quiet_logger = [] if any(a.startswith("logger=") for a in args) else ["logger=none"]
    code, err = run_app([*args, *quiet_logger], tmp_path / "run")
    lines = err.strip().splitlines()
    print(f"{' '.join(args)} -> exit {code}: {err.strip()}")
    assert code == 2, err
    assert len(lines) == 1, err
    assert lines[0].startswith("config error: "), err
    assert key in lines[0], f"the line does not name {key!r}: {lines[0]}"
    if why:  # the newer cases: the key comes first, then why
        assert lines[0].startswith(f"config error: {key}: "), f"the line does not start with {key!r}: {lines[0]}"
        assert why in lines[0], f"the line does not say {why!r}: {lines[0]}"
    assert mp.active_children() == []  # no inference process, no device process
    assert set(glob.glob(ours)) - shm_before == set()  # no shared memory
    # the robot was never built or commanded: no telemetry of any kind exists
    for name in ("ticks.csv", "events.jsonl", "summary.json", "inferences.csv"):
        assert not (tmp_path / "run" / name).exists(), name
