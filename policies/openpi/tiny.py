"""Tiny pi0 / pi0.5 checkpoints that run openpi's own code on a CPU in seconds (tests, benchmarks, demos).

openpi's PyTorch model (``PI0Pytorch``) is built from its training config exactly as for a real
checkpoint, with openpi's ``dummy`` Gemma variant (width 64, depth 4: the variant openpi's own
``debug`` configs use) for both the VLM and the action expert. One thing openpi hard-codes does not
fit that width: ``PaliGemmaWithExpertModel`` always builds PaliGemma's SigLIP-So400m vision tower
(27 layers, width 1152, ~400M parameters) projecting to 2048, which only matches ``gemma_2b``. So
:func:`install_small_vision_tower` swaps in a one-layer SigLIP (width 32, 28-pixel patches, same
224x224 input) projecting to the VLM's width -- and only where the 2048 projection would not fit the
language model (never for a real checkpoint). Everything else -- transforms, tokenizer, normalization,
checkpoint loading, ``Policy.infer``, the denoiser -- is openpi's code unchanged.

Training configs (openpi ``TrainConfig``s, also registered under their names in openpi's config table,
so ``serve_policy``'s ``create_policy`` finds them):

- ``pi0_aloha_tiny``: openpi's ``pi0_aloha`` data config (ALOHA adapter, nested ``images`` dict, CHW
  frames, ``adapt_to_pi``, *delta* joint actions), pi0, horizon 50, z-score norm stats.
- ``pi05_aloha_tiny``: the same with pi0.5 (quantile norm stats, state as discrete prompt tokens).
- ``pi05_flat_tiny``: a flat-key adapter for a 14-dim bimanual robot, written the way openpi's
  ``LiberoInputs`` tells users to write one for their own robot: state from two keys
  (``observation/joint_pos/left|right``, 7 each), three HWC cameras (``observation/images/head|left|right``),
  *absolute* actions; pi0.5.

``python -m policies.openpi.tiny build DIR`` writes, with openpi's own helpers:

- ``DIR/openpi_data/big_vision/paligemma_tokenizer.model``: a small SentencePiece model trained here,
  where openpi's download helper looks for its cache (set ``OPENPI_DATA_HOME=DIR/openpi_data``), so
  openpi's real tokenizer code runs offline. Never put it in a real cache: real checkpoints need the real
  PaliGemma tokenizer.
- ``DIR/<config>/model.safetensors`` + ``DIR/<config>/assets/<asset_id>/norm_stats.json``: randomly
  initialised weights and norm stats computed with openpi's ``RunningStats`` over synthetic smooth
  trajectories passed through the config's own data transforms (as openpi's ``compute_norm_stats``
  does), laid out as openpi lays out a PyTorch checkpoint.

``python -m policies.openpi.tiny serve --config NAME --dir CKPT --port P`` serves a checkpoint with
openpi's ``scripts/serve_policy.py`` (its ``create_policy``) and openpi's ``WebsocketPolicyServer`` on
127.0.0.1 (``serve_policy.main`` itself binds 0.0.0.0).
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib.util
import logging
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

VISION = {
    "hidden_size": 32,
    "intermediate_size": 64,
    "num_hidden_layers": 1,
    "num_attention_heads": 2,
    "patch_size": 28,
}
TOKENIZER_RELPATH = Path("big_vision") / "paligemma_tokenizer.model"  # under OPENPI_DATA_HOME
ALOHA_CAMERAS = ("cam_high", "cam_left_wrist", "cam_right_wrist")
FLAT_CAMERAS = ("observation/images/head", "observation/images/left", "observation/images/right")


def install_small_vision_tower() -> None:
    """Make openpi's ``PaliGemmaWithExpertModel`` build a small vision tower when its VLM is narrower than 2048."""
    from openpi.models_pytorch import gemma_pytorch

    base = gemma_pytorch.PaliGemmaForConditionalGeneration
    if getattr(base, "_small_vision_tower", False):
        return

    class SmallVisionPaliGemma(base):  # type: ignore[misc, valid-type]
        _small_vision_tower = True

        def __init__(self, config: Any) -> None:
            vision = config.vision_config
            if vision.projection_dim != config.text_config.hidden_size:
                for key, value in VISION.items():
                    setattr(vision, key, value)
                vision.projection_dim = config.text_config.hidden_size
            super().__init__(config)

    gemma_pytorch.PaliGemmaForConditionalGeneration = SmallVisionPaliGemma


def _flat_adapter() -> tuple[type, type]:
    import openpi.transforms as _transforms
    from openpi.policies.libero_policy import _parse_image

    @dataclasses.dataclass(frozen=True)
    class BimanualFlatInputs(_transforms.DataTransformFn):
        """Flat keys -> openpi's model inputs for a 14-dim bimanual robot (state from two keys)."""

        def __call__(self, data: dict) -> dict:
            state = np.concatenate(
                [np.asarray(data["observation/joint_pos/left"]), np.asarray(data["observation/joint_pos/right"])]
            )
            names = ("base_0_rgb", "left_wrist_0_rgb", "right_wrist_0_rgb")
            images = {name: _parse_image(data[key]) for name, key in zip(names, FLAT_CAMERAS, strict=True)}
            inputs = {"state": state, "image": images, "image_mask": {name: np.True_ for name in names}}
            if "actions" in data:
                inputs["actions"] = np.asarray(data["actions"])
            if "prompt" in data:
                inputs["prompt"] = data["prompt"]
            return inputs

    @dataclasses.dataclass(frozen=True)
    class BimanualFlatOutputs(_transforms.DataTransformFn):
        def __call__(self, data: dict) -> dict:
            return {"actions": np.asarray(data["actions"][..., :14])}

    return BimanualFlatInputs, BimanualFlatOutputs


def _train_configs() -> dict[str, Any]:
    import openpi.models.pi0_config as pi0_config
    import openpi.training.config as _config
    import openpi.transforms as _transforms

    def model(pi05: bool) -> Any:
        return pi0_config.Pi0Config(
            pi05=pi05, paligemma_variant="dummy", action_expert_variant="dummy", pytorch_compile_mode=None
        )

    flat_in, flat_out = _flat_adapter()
    aloha = _config.LeRobotAlohaDataConfig(assets=_config.AssetsConfig(asset_id="trossen"))
    configs = [
        _config.TrainConfig(
            name="pi0_aloha_tiny",
            model=model(False),
            data=aloha,
            policy_metadata={"reset_pose": [0, -1.5, 1.5, 0, 0, 0]},
        ),
        _config.TrainConfig(
            name="pi05_aloha_tiny",
            model=model(True),
            data=aloha,
            policy_metadata={"reset_pose": [0, -1.5, 1.5, 0, 0, 0]},
        ),
        _config.TrainConfig(
            name="pi05_flat_tiny",
            model=model(True),
            data=_config.SimpleDataConfig(
                assets=_config.AssetsConfig(asset_id="bimanual_flat"),
                data_transforms=lambda _model: _transforms.Group(inputs=[flat_in()], outputs=[flat_out()]),
            ),
        ),
    ]
    table = _config._CONFIGS_DICT  # noqa: SLF001 - where openpi's own configs live (get_config reads it)
    for cfg in configs:
        table.setdefault(cfg.name, cfg)
    return {cfg.name: table[cfg.name] for cfg in configs}


install_small_vision_tower()
CONFIGS = _train_configs()
pi0_aloha_tiny = CONFIGS["pi0_aloha_tiny"]
pi05_aloha_tiny = CONFIGS["pi05_aloha_tiny"]
pi05_flat_tiny = CONFIGS["pi05_flat_tiny"]


# ---------------------------------------------------------------------------------------------- building
def train_tokenizer(path: Path, vocab_size: int = 400) -> Path:
    """A small SentencePiece model over prompts and openpi's pi0.5 state strings (byte fallback: any text encodes)."""
    import io

    import sentencepiece as spm

    rng = np.random.default_rng(0)
    words = (
        "pick up the cube transfer it to the other arm place box table left right hand grasp move "
        "open close towel fold put food plate do something hold still"
    ).split()
    lines = []
    for _ in range(400):
        prompt = " ".join(rng.choice(words, size=rng.integers(2, 9)))
        state = " ".join(map(str, rng.integers(0, 256, size=rng.integers(8, 33))))
        lines += [prompt, f"Task: {prompt}, State: {state};\nAction: "]
    model = io.BytesIO()
    spm.SentencePieceTrainer.train(
        sentence_iterator=iter(lines),
        model_writer=model,
        vocab_size=vocab_size,
        model_type="bpe",
        byte_fallback=True,
        character_coverage=1.0,
        num_threads=1,
        minloglevel=2,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.getvalue())
    return path


def synthetic_samples(train_config: Any, count: int = 256, seed: int = 0) -> list[dict]:
    """Raw observation dicts with action chunks from smooth bimanual trajectories (radians; grippers 0..1)."""
    rng = np.random.default_rng(seed)
    horizon = int(train_config.model.action_horizon)
    t = np.arange(horizon + 1) * 0.05
    home = np.array([0, -0.96, 1.16, 0, -0.3, 0, 0.5] * 2)
    samples = []
    for _ in range(count):
        amp, freq, phase = rng.uniform(0.05, 0.4, 14), rng.uniform(0.2, 1.0, 14), rng.uniform(0, 2 * np.pi, 14)
        traj = home + amp * np.sin(2 * np.pi * freq * t[:, None] + phase)
        traj[:, [6, 13]] = np.clip(0.5 + 0.5 * np.sin(2 * np.pi * freq[[6, 13]] * t[:, None] + phase[[6, 13]]), 0, 1)
        samples.append(
            raw_observation(train_config, traj[0].astype(np.float32), rng, actions=traj[1:].astype(np.float32))
        )
    return samples


def raw_observation(
    train_config: Any,
    state: np.ndarray,
    rng: np.random.Generator,
    actions: np.ndarray | None = None,
    prompt: str = "transfer the cube",
    size: tuple[int, int] = (96, 128),
) -> dict:
    """One request dict in the layout the config's adapter reads (what a robot client sends openpi)."""
    h, w = size
    if train_config.name.startswith("pi05_flat"):
        data: dict[str, Any] = {"observation/joint_pos/left": state[:7], "observation/joint_pos/right": state[7:]}
        data.update({key: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for key in FLAT_CAMERAS})
    else:
        data = {
            "state": state,
            "images": {cam: rng.integers(0, 256, (3, h, w), dtype=np.uint8) for cam in ALOHA_CAMERAS},
        }
    if actions is not None:
        data["actions"] = actions
    data["prompt"] = prompt
    return data


def norm_stats(train_config: Any, samples: list[dict]) -> dict[str, Any]:
    """openpi's ``compute_norm_stats`` on ``samples``: the config's data transforms, then ``RunningStats``.

    The samples are already in the inference layout, so the dataset repack transforms are skipped.
    """
    import openpi.shared.normalize as normalize
    import openpi.transforms as _transforms

    data_config = train_config.data.create(train_config.assets_dirs, train_config.model)
    transform = _transforms.compose(data_config.data_transforms.inputs)
    stats = {key: normalize.RunningStats() for key in ("state", "actions")}
    for sample in samples:
        out = transform(
            {
                k: (dict(v) if isinstance(v, dict) else np.array(v) if isinstance(v, np.ndarray) else v)
                for k, v in sample.items()
            }
        )
        for key in stats:
            stats[key].update(np.asarray(out[key])[None])
    return {key: s.get_statistics() for key, s in stats.items()}


def write_checkpoint(train_config: Any, out_dir: Path, seed: int = 0) -> Path:
    """Random weights + norm stats in openpi's PyTorch checkpoint layout (``model.safetensors``, ``assets/<id>/``)."""
    import openpi.shared.normalize as normalize
    import safetensors.torch
    import torch
    from openpi.models_pytorch import pi0_pytorch

    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    model = pi0_pytorch.PI0Pytorch(config=train_config.model)
    safetensors.torch.save_model(model, str(out_dir / "model.safetensors"))
    asset_id = train_config.data.create(train_config.assets_dirs, train_config.model).asset_id
    normalize.save(out_dir / "assets" / asset_id, norm_stats(train_config, synthetic_samples(train_config, seed=seed)))
    return out_dir


def build(root: Path, names: tuple[str, ...] = tuple(CONFIGS)) -> None:
    """Tokenizer (first: building a data config builds openpi's tokenizer) and one checkpoint per config."""
    data_home = Path(os.environ.setdefault("OPENPI_DATA_HOME", str(root / "openpi_data")))
    if not (data_home / TOKENIZER_RELPATH).exists():
        train_tokenizer(data_home / TOKENIZER_RELPATH)
    for name in names:
        write_checkpoint(CONFIGS[name], root / name)
        log.info("wrote %s", root / name)


# ---------------------------------------------------------------------------------------------- serving
def serve(config: str, ckpt_dir: str, port: int, default_prompt: str | None = None) -> None:
    """openpi's ``serve_policy.create_policy`` + ``WebsocketPolicyServer``, bound to 127.0.0.1."""
    from openpi.serving import websocket_policy_server

    src = Path(os.environ.get("OPENPI_SRC", Path(__file__).resolve().parents[3] / "shared" / "openpi"))
    spec = importlib.util.spec_from_file_location("serve_policy", src / "scripts" / "serve_policy.py")
    if spec is None or spec.loader is None:
        raise FileNotFoundError(f"openpi's scripts/serve_policy.py not found under OPENPI_SRC={src}")
    serve_policy = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(serve_policy)
    args = serve_policy.Args(
        default_prompt=default_prompt, port=port, policy=serve_policy.Checkpoint(config=config, dir=ckpt_dir)
    )
    policy = serve_policy.create_policy(args)
    server = websocket_policy_server.WebsocketPolicyServer(
        policy=policy, host="127.0.0.1", port=port, metadata=policy.metadata
    )
    print(f"openpi serve_policy: {config} on ws://127.0.0.1:{port}", flush=True)
    server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="cmd")
    b = sub.add_parser("build", help="tokenizer + checkpoints under DIR")
    b.add_argument("dir", type=Path)
    b.add_argument("--configs", nargs="*", default=list(CONFIGS))
    t = sub.add_parser("tokenizer", help="the small tokenizer into DATA_HOME (an OPENPI_DATA_HOME)")
    t.add_argument("data_home", type=Path)
    s = sub.add_parser("serve", help="serve a checkpoint with openpi's serve_policy on 127.0.0.1")
    s.add_argument("--config", required=True)
    s.add_argument("--dir", required=True)
    s.add_argument("--port", type=int, required=True)
    s.add_argument("--default-prompt", default=None)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, force=True)
    if args.cmd == "build":
        build(args.dir, tuple(args.configs))
    elif args.cmd == "tokenizer":
        print(train_tokenizer(args.data_home / TOKENIZER_RELPATH))
    elif args.cmd == "serve":
        serve(args.config, args.dir, args.port, args.default_prompt)
    else:
        parser.print_help()
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
