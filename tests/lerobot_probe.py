"""Probes that run inside the LeRobot side env (``.venvs/lerobot``), for tests/policies/test_lerobot.py and the benchmark.

Run by path (a package in LeRobot's env is named ``tests`` too): ``<lerobot python> tests/lerobot_probe.py build OUT``:: the tiny checkpoints (``policies/lerobot/tiny.py``).
``... gaps CKPT``: on random sim-sized observations, the previous chunk's
prefix vs a new chunk for the same observation and noise, unguided, with our VJP guidance and with LeRobot's own
RTC processor. JSON on the last stdout line.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CAMERAS = ("head", "left", "right")
# name -> (kind, extra tiny.py arguments)
CHECKPOINTS = {
    "act": ("act", []),
    "diffusion": ("diffusion", ["--chunk", "8"]),
    "smolvla": ("smolvla", []),
    "act_top_camera": ("act", ["--cameras", "top"]),  # needs a camera the sim robot does not have
}


def build(out: str) -> dict:
    from policies.lerobot.tiny import main as tiny

    for name, (kind, extra) in CHECKPOINTS.items():
        target = Path(out) / name
        if not (target / "config.json").is_file():
            tiny([kind, str(target), *extra])
    return {"built": sorted(CHECKPOINTS)}


def gaps(ckpt: str, trials: int = 4, delay: int = 4, shift: int = 5, chunk: int = 20, beta: float = 5.0) -> dict:
    """Mean |new[:d] - prev[:d]| (robot units) unguided / VJP / LeRobot RTC, and ms per chunk, same noise."""
    import torch

    from policies.lerobot.runtime import LeRobotRuntime

    trials, delay, shift, chunk, beta = int(trials), int(delay), int(shift), int(chunk), float(beta)
    torch.set_num_threads(1)
    rt = LeRobotRuntime(
        ckpt, {c: f"observation.images.{c}" for c in CAMERAS}, chunk_size=chunk, prompt="transfer the cube"
    )
    rt.freeze()
    rng = np.random.default_rng(0)
    out: dict = {"none": [], "vjp": [], "lerobot_rtc": [], "ms": {"none": [], "vjp": [], "lerobot_rtc": []}}
    for trial in range(trials):
        state = rng.normal(0.0, 0.3, (1, 14)).astype(np.float32)
        images = {c: rng.integers(0, 255, (1, 3, 96, 128), dtype=np.uint8) for c in CAMERAS}
        rt.reset_noise(1000 + trial)
        first = rt.predict(state, images)
        prev = np.zeros_like(first)
        prev[: chunk - shift] = first[shift:]
        for name, guidance, mode in (
            ("none", "none", "ours"),
            ("vjp", "vjp", "ours"),
            ("lerobot_rtc", "vjp", "lerobot_rtc"),
        ):
            rt.reset_noise(trial)  # the same noise for the three
            t0 = time.perf_counter()
            new = rt.guided(
                state,
                images,
                prev,
                delay=delay,
                execute_horizon=shift,
                guidance=guidance,
                max_guidance_weight=beta,
                mode=mode,
            )
            out["ms"][name].append((time.perf_counter() - t0) * 1e3)
            out[name].append(float(np.abs(new[:delay] - prev[:delay]).mean()))
    return {
        "trials": trials,
        "delay": delay,
        "shift": shift,
        "beta": beta,
        **{k: float(np.mean(out[k])) for k in ("none", "vjp", "lerobot_rtc")},
        "ms": {k: float(np.median(v)) for k, v in out["ms"].items()},
    }


def dataset(root: str, repo_id: str = "local/rollouts") -> dict:
    """A recorded dataset, loaded with LeRobot's own ``LeRobotDataset``: counts, features, one decoded frame, and
    every frame's rollout columns (proposed vs sent action, chunk, guidance, episode ends, success)."""
    import torch
    from lerobot.datasets.lerobot_dataset import LeRobotDataset

    ds = LeRobotDataset(repo_id, root=root)
    item = ds[len(ds) - 1]
    images = {k: list(item[k].shape) for k in ds.meta.camera_keys}
    cols = ds.hf_dataset.with_format("torch")
    flat = {
        k: torch.stack(list(cols[k])).reshape(len(ds), -1)
        for k in (
            "action",
            "proposed_action",
            "held",
            "chunk_id",
            "chunk_step",
            "guidance",
            "command_time",
            "next.done",
            "next.success",
            "episode_index",
            "frame_index",
        )
    }
    codes = json.loads((Path(root) / "meta" / "guidance_codes.json").read_text())
    return {
        "frames": ds.num_frames,
        "episodes": ds.num_episodes,
        "len": len(ds),
        "fps": ds.fps,
        "features": sorted(ds.features),
        "images": images,
        "state": list(item["observation.state"].shape),
        "action": list(item["action"].shape),
        "task": item.get("task"),
        "guidance_codes": codes,
        "proposed_minus_sent": (flat["proposed_action"] - flat["action"]).abs().amax(dim=1).tolist(),
        **{
            k: flat[k][:, 0].tolist()
            for k in (
                "held",
                "chunk_id",
                "chunk_step",
                "guidance",
                "command_time",
                "next.done",
                "next.success",
                "episode_index",
                "frame_index",
            )
        },
    }


def main(argv: list[str]) -> int:
    import logging

    logging.basicConfig(level=logging.WARNING)
    probe, *args = argv
    result = {"build": build, "gaps": gaps, "dataset": dataset}[probe](*args)
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
