"""What a LeRobot checkpoint declares, read from its ``config.json`` alone (no lerobot import).

The engine checks a checkpoint against the robot before anything starts (``LeRobotPolicy.preflight``)
and maps our observation onto the checkpoint's keys; both only need the features the checkpoint's
config declares (``input_features`` / ``output_features``: LeRobot's ``PolicyFeature`` as JSON,
``{"type": "STATE" | "VISUAL" | "ENV" | "ACTION" | "LANGUAGE", "shape": [...]}``), the policy type and
its chunk length, so this module reads the JSON and nothing else: it runs in our interpreter, which
cannot import lerobot (LeRobot 0.6 needs Python >= 3.12).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from policies.control_rate import ControlRate, lerobot_dataset_rate, positive_hz, read_json

STATE_KEY = "observation.state"
IMAGE_PREFIX = "observation.images."
ACTION_KEY = "action"
# Flow-matching policies whose sampler goes through ``lerobot.policies.common.flow_matching.euler_integrate``
# (their velocity function is what our VJP guidance differentiates).
FLOW_TYPES = ("pi0", "pi05", "smolvla")
# Policies whose chunk comes from one forward pass or a sampler we cannot guide: the blend only.
BLEND_TYPES = ("act", "diffusion")
LANGUAGE_TYPES = ("pi0", "pi05", "pi0_fast", "smolvla", "xvla", "groot", "wall_x", "eo1", "molmoact2")
# Guidance each kind supports (``algorithm.guidance``); "none" always.
GUIDANCE_BY_KIND = {"flow": ("vjp", "blend", "none"), "blend": ("blend", "none")}


class CheckpointError(ValueError):
    """The directory is not a LeRobot pretrained checkpoint this engine can run, with the reason."""


@dataclass(frozen=True)
class CheckpointSpec:
    """The parts of a LeRobot ``config.json`` the engine relies on."""

    root: Path
    type: str
    state_dim: int | None
    images: Mapping[str, tuple[int, int, int]]  # checkpoint key -> (C, H, W)
    action_dim: int
    chunk_len: int  # actions one ``predict_action_chunk`` returns
    n_obs_steps: int = 1
    other_inputs: tuple[str, ...] = field(default_factory=tuple)  # inputs we cannot provide (ENV, ...)

    @property
    def kind(self) -> str:
        return "flow" if self.type in FLOW_TYPES else "blend"

    @property
    def guidance(self) -> tuple[str, ...]:
        return GUIDANCE_BY_KIND[self.kind]

    @property
    def uses_language(self) -> bool:
        return self.type in LANGUAGE_TYPES

    @classmethod
    def read(cls, path: str | Path) -> CheckpointSpec:
        root = Path(path).expanduser()
        if not root.is_dir():
            raise CheckpointError(f"{root} is not a directory (a LeRobot save_pretrained directory)")
        cfg_file = root / "config.json"
        if not cfg_file.is_file():
            raise CheckpointError(f"{root} has no config.json (not a LeRobot pretrained policy directory)")
        try:
            cfg = json.loads(cfg_file.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"cannot read {cfg_file}: {exc}") from None
        if not (root / "model.safetensors").is_file():
            raise CheckpointError(f"{root} has no model.safetensors (LeRobot's save_pretrained writes it)")
        for name in ("policy_preprocessor.json", "policy_postprocessor.json"):
            if not (root / name).is_file():
                raise CheckpointError(
                    f"{root} has no {name}: this engine uses the checkpoint's own saved "
                    "pre/post-processor pipelines for normalization (save them with the policy)"
                )
        ptype = str(cfg.get("type", ""))
        if not ptype:
            raise CheckpointError(f"{cfg_file} has no 'type' (act, diffusion, pi0, pi05, smolvla, ...)")
        inputs = _features(cfg, "input_features", cfg_file)
        outputs = _features(cfg, "output_features", cfg_file)
        if ACTION_KEY not in outputs:
            raise CheckpointError(f"{cfg_file}: output_features has no {ACTION_KEY!r}")
        state_dim = None
        images: dict[str, tuple[int, int, int]] = {}
        other = []
        for key, (ftype, shape) in inputs.items():
            if ftype == "STATE" and key == STATE_KEY:
                state_dim = int(shape[-1])
            elif ftype == "VISUAL" and key.startswith(IMAGE_PREFIX) and len(shape) == 3:
                images[key] = (int(shape[0]), int(shape[1]), int(shape[2]))
            else:
                other.append(f"{key} ({ftype} {list(shape)})")
        action_dim = int(outputs[ACTION_KEY][1][-1])
        if ptype == "diffusion":
            chunk_len = int(cfg.get("n_action_steps", 0))
        else:
            chunk_len = int(cfg.get("chunk_size") or cfg.get("n_action_steps") or 0)
        if chunk_len <= 0:
            raise CheckpointError(f"{cfg_file}: cannot tell the chunk length (chunk_size / n_action_steps)")
        return cls(
            root=root,
            type=ptype,
            state_dim=state_dim,
            images=images,
            action_dim=action_dim,
            chunk_len=chunk_len,
            n_obs_steps=int(cfg.get("n_obs_steps", 1) or 1),
            other_inputs=tuple(other),
        )

    def camera_keys(self, camera_names: Sequence[str], camera_map: Mapping[str, str] | None) -> dict[str, str]:
        """Our camera -> checkpoint image key for every image the checkpoint takes.

        ``camera_map`` (our name -> checkpoint key, ``observation.images.`` optional) first, then a
        camera whose name equals the key's suffix. Raises ``CheckpointError`` naming an image the
        cameras do not provide.
        """
        camera_map = {str(k): _image_key(str(v)) for k, v in dict(camera_map or {}).items()}
        unknown = [c for c in camera_map if c not in camera_names]
        if unknown:
            raise CheckpointError(f"camera_map names cameras {unknown} that camera_names {list(camera_names)} lacks")
        bad = [v for v in camera_map.values() if v not in self.images]
        if bad:
            raise CheckpointError(
                f"camera_map maps to {bad}, which the checkpoint does not take (its images: {sorted(self.images)})"
            )
        out: dict[str, str] = {}
        taken = set(camera_map.values())
        for cam in camera_names:
            if cam in camera_map:
                out[cam] = camera_map[cam]
            elif _image_key(cam) in self.images and _image_key(cam) not in taken:
                out[cam] = _image_key(cam)
        missing = sorted(set(self.images) - set(out.values()))
        if missing:
            raise CheckpointError(
                f"the checkpoint needs camera image(s) {missing} that no camera provides "
                f"(cameras {list(camera_names)}; map one with policy.camera_map.<camera>=<key>)"
            )
        return out

    def check(
        self,
        *,
        state_dim: int,
        action_dim: int,
        chunk_size: int,
        camera_names: Sequence[str],
        camera_map: Mapping[str, str] | None,
        guidance: str | None = None,
    ) -> dict[str, str]:
        """Everything the robot must provide; returns the camera map. Raises ``CheckpointError``."""
        if self.other_inputs:
            raise CheckpointError(
                f"the checkpoint ({self.type}) takes input(s) the engine does not provide: "
                f"{', '.join(self.other_inputs)}"
            )
        if self.state_dim is not None and self.state_dim != int(state_dim):
            raise CheckpointError(
                f"the checkpoint's {STATE_KEY} has {self.state_dim} dims, the robot's state "
                f"{state_dim} (policy.state_dim)"
            )
        if self.action_dim != int(action_dim):
            raise CheckpointError(
                f"the checkpoint's action has {self.action_dim} dims, the robot's {action_dim} (policy.action_dim)"
            )
        if int(chunk_size) > self.chunk_len:
            raise CheckpointError(
                f"policy.chunk_size={chunk_size} exceeds the {self.chunk_len} actions a "
                f"{self.type} chunk of this checkpoint has"
            )
        cams = self.camera_keys(camera_names, camera_map)
        if guidance is not None and guidance not in self.guidance:
            raise CheckpointError(
                f"algorithm.guidance={guidance} is not available for a {self.type} policy "
                f"(it supports {', '.join(self.guidance)})"
            )
        return cams


def checkpoint_rate(path: str | Path) -> ControlRate | None:
    """The control rate a LeRobot checkpoint was trained at. ``lerobot-train`` saves its
    ``train_config.json`` beside the policy: the simulation's ``env.fps`` when it trained with one,
    else the dataset's ``fps`` (``meta/info.json`` of ``dataset.root``, or of ``dataset.repo_id`` in
    the local LeRobot cache). None when neither is on this machine."""
    train = read_json(Path(path).expanduser() / "train_config.json")
    if not isinstance(train, Mapping):
        return None
    env = train.get("env")
    hz = positive_hz(env.get("fps")) if isinstance(env, Mapping) else None
    if hz is not None:
        return ControlRate(hz, f"{Path(path).expanduser() / 'train_config.json'} (env.fps)")
    dataset = train.get("dataset")
    if isinstance(dataset, Mapping):
        return lerobot_dataset_rate(dataset.get("repo_id"), dataset.get("root"))
    return None


def _image_key(name: str) -> str:
    return name if name.startswith(IMAGE_PREFIX) else IMAGE_PREFIX + name


def _features(cfg: Mapping[str, Any], name: str, where: Path) -> dict[str, tuple[str, tuple[int, ...]]]:
    raw = cfg.get(name)
    if not isinstance(raw, Mapping) or not raw:
        raise CheckpointError(f"{where}: no {name}")
    out = {}
    for key, feat in raw.items():
        if not isinstance(feat, Mapping) or "shape" not in feat:
            raise CheckpointError(f"{where}: {name}.{key} is not a feature ({{type, shape}})")
        out[str(key)] = (str(feat.get("type", "")).upper(), tuple(int(v) for v in feat["shape"]))
    return out
