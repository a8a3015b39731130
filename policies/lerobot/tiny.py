"""Tiny LeRobot checkpoints for tests and benchmarks, built with LeRobot's own classes (random weights).

``<lerobot env python> -m policies.lerobot.tiny KIND OUT_DIR [--state-dim 14 ...]`` builds the policy
from its LeRobot config class, its pre/post-processors from ``make_pre_post_processors`` with dataset
statistics, and saves all three with LeRobot's own ``save_pretrained``: a directory like the ones
``lerobot-train`` writes (``config.json``, ``model.safetensors``, ``policy_preprocessor.json`` + state,
``policy_postprocessor.json`` + state). Nothing is downloaded: vision backbones start from random
weights (``pretrained_backbone_weights=None``). The statistics are the bundled transfer-cube flow
checkpoint's state/action statistics (``policies/flow/checkpoints/transfer_cube/stats.json``), so the
normalization is the sim robot's real one.

Kinds: ``act``, ``diffusion`` (blend guidance), ``smolvla`` (flow: VJP guidance) where its VLM config can
be built locally (``--vlm-dir``: a tiny SmolVLM config + processor written by :func:`tiny_smolvlm`).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[2]
STATS = REPO / "policies" / "flow" / "checkpoints" / "transfer_cube" / "stats.json"
KINDS = ("act", "diffusion", "smolvla")

log = logging.getLogger(__name__)


def features(state_dim: int, action_dim: int, cameras: list[str], height: int, width: int) -> tuple[dict, dict]:
    from lerobot.configs.types import FeatureType, PolicyFeature

    inputs = {"observation.state": PolicyFeature(type=FeatureType.STATE, shape=(state_dim,))}
    for cam in cameras:
        inputs[f"observation.images.{cam}"] = PolicyFeature(type=FeatureType.VISUAL, shape=(3, height, width))
    outputs = {"action": PolicyFeature(type=FeatureType.ACTION, shape=(action_dim,))}
    return inputs, outputs


def dataset_stats(state_dim: int, action_dim: int, cameras: list[str]) -> dict[str, dict[str, torch.Tensor]]:
    """State/action statistics of the sim robot (the bundled checkpoint's), images in [0, 1]."""
    raw = json.loads(STATS.read_text())["stats"]
    out: dict[str, dict[str, torch.Tensor]] = {}
    for key, ours, dim in (("observation.state", "state", state_dim), ("action", "action", action_dim)):
        stats = {k: torch.tensor(raw[ours][k], dtype=torch.float32) for k in ("mean", "std", "min", "max")}
        if stats["mean"].shape[0] != dim:
            raise ValueError(f"{STATS} has {stats['mean'].shape[0]} {ours} dims, asked for {dim}")
        stats["std"] = stats["std"].clamp_min(1e-3)
        stats["max"] = torch.maximum(stats["max"], stats["min"] + 1e-3)
        out[key] = stats
    for cam in cameras:
        out[f"observation.images.{cam}"] = {
            "mean": torch.full((3, 1, 1), 0.45), "std": torch.full((3, 1, 1), 0.25),
            "min": torch.zeros((3, 1, 1)), "max": torch.ones((3, 1, 1))}
    return out


def make_config(kind: str, inputs: dict, outputs: dict, chunk: int, vlm_dir: str | None) -> Any:
    if kind == "act":
        from lerobot.policies.act.configuration_act import ACTConfig

        return ACTConfig(input_features=inputs, output_features=outputs, chunk_size=chunk, n_action_steps=chunk,
                         pretrained_backbone_weights=None, dim_model=32, n_heads=2, dim_feedforward=64,
                         n_encoder_layers=1, n_decoder_layers=1, n_vae_encoder_layers=1, latent_dim=8, device="cpu")
    if kind == "diffusion":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        horizon = 1 << max(3, (2 * chunk - 1).bit_length())  # a multiple of 2**len(down_dims), >= chunk + 1
        return DiffusionConfig(input_features=inputs, output_features=outputs, n_obs_steps=2, horizon=horizon,
                               n_action_steps=chunk, drop_n_last_frames=horizon - chunk - 1,
                               pretrained_backbone_weights=None, use_group_norm=True, crop_shape=None,
                               down_dims=(32, 64), kernel_size=3, n_groups=4, diffusion_step_embed_dim=32,
                               spatial_softmax_num_keypoints=8, num_inference_steps=10, device="cpu")
    if kind == "smolvla":
        from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

        if not vlm_dir:
            raise ValueError("smolvla needs --vlm-dir (a local tiny SmolVLM config + processor: tiny_smolvlm)")
        return SmolVLAConfig(input_features=inputs, output_features=outputs, chunk_size=chunk, n_action_steps=chunk,
                             vlm_model_name=str(vlm_dir), load_vlm_weights=False, num_vlm_layers=2,
                             num_steps=10, device="cpu")
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def build(kind: str, out: Path, state_dim: int = 14, action_dim: int = 14, cameras: list[str] | None = None,
          height: int = 96, width: int = 128, chunk: int = 20, seed: int = 0, vlm_dir: str | None = None) -> Path:
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cameras = list(cameras if cameras is not None else ["head", "left", "right"])
    torch.manual_seed(seed)
    inputs, outputs = features(state_dim, action_dim, cameras, height, width)
    cfg = make_config(kind, inputs, outputs, chunk, vlm_dir)
    policy = get_policy_class(cfg.type)(cfg)
    pre, post = make_pre_post_processors(cfg, dataset_stats=dataset_stats(state_dim, action_dim, cameras))
    out.mkdir(parents=True, exist_ok=True)
    policy.save_pretrained(out)
    pre.save_pretrained(out)
    post.save_pretrained(out)
    log.info("%s: %d params -> %s", kind, sum(p.numel() for p in policy.parameters()), out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("kind", choices=KINDS)
    parser.add_argument("out", type=Path)
    parser.add_argument("--state-dim", type=int, default=14)
    parser.add_argument("--action-dim", type=int, default=14)
    parser.add_argument("--cameras", default="head,left,right", help="comma-separated; empty for none")
    parser.add_argument("--height", type=int, default=96)
    parser.add_argument("--width", type=int, default=128)
    parser.add_argument("--chunk", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vlm-dir", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO)
    cams = [c for c in args.cameras.split(",") if c]
    build(args.kind, args.out, args.state_dim, args.action_dim, cams, args.height, args.width, args.chunk,
          args.seed, args.vlm_dir)
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
