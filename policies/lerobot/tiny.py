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
be built locally (a tiny SmolVLM config + processor + tokenizer, :func:`tiny_smolvlm`, written into
``OUT_DIR/vlm`` unless ``--vlm-dir`` names one). pi0 / pi0.5 are not built here: in LeRobot 0.6.1 their
size comes from the variant names (``gemma_300m`` / ``gemma_2b`` only), the ``gemma_300m`` VLM does not run
(its image projector is hard-coded to 2048 wide), and the smallest that runs has 4.0 B parameters (see
docs/lerobot.md, "Why there is no tiny pi0 / pi0.5").
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
            "mean": torch.full((3, 1, 1), 0.45),
            "std": torch.full((3, 1, 1), 0.25),
            "min": torch.zeros((3, 1, 1)),
            "max": torch.ones((3, 1, 1)),
        }
    return out


def tiny_smolvlm(out: Path) -> Path:
    """A tiny SmolVLM (config + processor + tokenizer) in ``out``, what SmolVLA's ``vlm_model_name`` points at.

    SmolVLA builds its VLM from ``AutoConfig.from_pretrained(vlm_model_name)`` (random weights with
    ``load_vlm_weights=False``) and its processor / tokenizer from the same name, so a local directory
    with a 2-layer Llama text model, a 1-layer SigLIP-like vision tower (64 px, 16 px patches) and a
    character-level tokenizer carrying SmolVLM's special tokens runs LeRobot's real SmolVLA code offline.
    """
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, SmolVLMConfig
    from transformers.models.smolvlm import SmolVLMImageProcessor, SmolVLMProcessor, SmolVLMVideoProcessor

    out.mkdir(parents=True, exist_ok=True)
    special = [
        "<pad>",
        "<unk>",
        "<|im_start|>",
        "<end_of_utterance>",
        "<fake_token_around_image>",
        "<image>",
        "<global-img>",
        "<video>",
    ]
    vocab = {t: i for i, t in enumerate(special + [chr(c) for c in range(32, 127)] + ["\n"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split("", "isolated")  # one token per character
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        unk_token="<unk>",
        bos_token="<|im_start|>",
        eos_token="<end_of_utterance>",
        extra_special_tokens={
            "fake_image_token": "<fake_token_around_image>",
            "image_token": "<image>",
            "global_image_token": "<global-img>",
            "end_of_utterance_token": "<end_of_utterance>",
            "video_token": "<video>",
        },
    )
    image_processor = SmolVLMImageProcessor(
        do_resize=False, do_image_splitting=False, max_image_size={"longest_edge": 64}, size={"longest_edge": 64}
    )
    SmolVLMProcessor(
        image_processor=image_processor, tokenizer=fast, video_processor=SmolVLMVideoProcessor(), image_seq_len=4
    ).save_pretrained(out)
    SmolVLMConfig(
        text_config=dict(
            model_type="llama",
            hidden_size=64,
            intermediate_size=128,
            num_hidden_layers=2,
            num_attention_heads=4,
            num_key_value_heads=2,
            head_dim=16,
            vocab_size=len(vocab),
            max_position_embeddings=512,
        ),
        vision_config=dict(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=1,
            num_attention_heads=2,
            image_size=64,
            patch_size=16,
        ),
        scale_factor=2,
        image_token_id=vocab["<image>"],
        vocab_size=len(vocab),
    ).save_pretrained(out)
    return out


def make_config(kind: str, inputs: dict, outputs: dict, chunk: int, vlm_dir: str | None) -> Any:
    if kind == "act":
        from lerobot.policies.act.configuration_act import ACTConfig

        return ACTConfig(
            input_features=inputs,
            output_features=outputs,
            chunk_size=chunk,
            n_action_steps=chunk,
            pretrained_backbone_weights=None,
            dim_model=32,
            n_heads=2,
            dim_feedforward=64,
            n_encoder_layers=1,
            n_decoder_layers=1,
            n_vae_encoder_layers=1,
            latent_dim=8,
            device="cpu",
        )
    if kind == "diffusion":
        from lerobot.policies.diffusion.configuration_diffusion import DiffusionConfig

        horizon = 1 << max(3, (2 * chunk - 1).bit_length())  # a multiple of 2**len(down_dims), >= chunk + 1
        return DiffusionConfig(
            input_features=inputs,
            output_features=outputs,
            n_obs_steps=2,
            horizon=horizon,
            n_action_steps=chunk,
            drop_n_last_frames=horizon - chunk - 1,
            pretrained_backbone_weights=None,
            use_group_norm=True,
            crop_shape=None,
            down_dims=(32, 64),
            kernel_size=3,
            n_groups=4,
            diffusion_step_embed_dim=32,
            spatial_softmax_num_keypoints=8,
            num_inference_steps=10,
            device="cpu",
        )
    if kind == "smolvla":
        from lerobot.policies.smolvla.configuration_smolvla import SmolVLAConfig

        return SmolVLAConfig(
            input_features=inputs,
            output_features=outputs,
            chunk_size=chunk,
            n_action_steps=chunk,
            vlm_model_name=str(vlm_dir),
            load_vlm_weights=False,
            num_vlm_layers=2,
            num_steps=10,
            resize_imgs_with_padding=(64, 64),
            tokenizer_max_length=16,
            max_state_dim=16,
            max_action_dim=16,
            device="cpu",
        )
    raise ValueError(f"unknown kind {kind!r}; expected one of {KINDS}")


def build(
    kind: str,
    out: Path,
    state_dim: int = 14,
    action_dim: int = 14,
    cameras: list[str] | None = None,
    height: int = 96,
    width: int = 128,
    chunk: int = 20,
    seed: int = 0,
    vlm_dir: str | None = None,
) -> Path:
    from lerobot.policies.factory import get_policy_class, make_pre_post_processors

    cameras = list(cameras if cameras is not None else ["head", "left", "right"])
    torch.manual_seed(seed)
    inputs, outputs = features(state_dim, action_dim, cameras, height, width)
    if kind == "smolvla" and not vlm_dir:
        vlm_dir = str(tiny_smolvlm(out / "vlm"))  # the checkpoint's config.json names this directory
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
    build(
        args.kind,
        args.out,
        args.state_dim,
        args.action_dim,
        cams,
        args.height,
        args.width,
        args.chunk,
        args.seed,
        args.vlm_dir,
    )
    print(args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
