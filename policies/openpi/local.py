"""``policy=openpi``: openpi's PyTorch pi0 / pi0.5 checkpoints, in process, with real RTC guidance.

openpi is imported lazily (only when this policy is built) because it is a large GPU-box
dependency that the rest of the project never needs. The checkpoint is loaded the way openpi's
own server does (``policy_config.create_trained_policy`` with the named training config), so its
input transforms (key repacking, resizing, tokenizing the prompt, openpi's normalization) and
output transforms (unnormalization, per-robot output adapter) apply unchanged.

Spaces: like an openpi server, this adapter takes robot-space observations and returns
robot-space actions (openpi normalizes inside), so its config uses the identity normalizer.
RTC guidance, however, must run in openpi's *normalized* action space (guiding in robot units is
a known bug). openpi's output transforms are not invertible in general (robot adapters, delta
actions), so the adapter keeps the normalized chunk it sampled last beside the robot-space chunk it
returned: the engine hands back ``prev = returned[s:]`` (zero-padded), the adapter locates that
shift ``s`` in the returned chunk and guides toward ``normalized[s:]``. When it cannot (first
chunk of an episode, a chunk it did not produce) or the model cannot be differentiated, it falls
back to the blend ``W * prev + (1 - W) * new`` and says so once in the log.
"""

from __future__ import annotations

import logging
from typing import Any, Sequence

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.guidance import blend, prefix_weights
from policies.openpi.obs_map import ObsKeyMap, images_to_uint8
from policies.registry import POLICY_REGISTRY

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "policy=openpi needs the openpi package: install it on the GPU box with "
    "`git clone https://github.com/Physical-Intelligence/openpi && pip install -e openpi` "
    "(see README; openpi's PyTorch models also need its transformers patch: "
    "`cp -r openpi/src/openpi/models_pytorch/transformers_replace/* "
    "$(python -c 'import transformers, os; print(os.path.dirname(transformers.__file__))')/`), "
    "or serve the model elsewhere and use policy=openpi_remote"
)


class OpenPINotInstalledError(ImportError, ValueError):
    """openpi is not importable here (a ValueError too, so start-time validation reports it as a config error)."""


def import_openpi() -> tuple[Any, Any, Any]:
    """(training config module, policy_config module, model module) or the install error."""
    try:
        from openpi.models import model as _model
        from openpi.policies import policy_config as _policy_config
        from openpi.training import config as _config
    except ImportError as exc:
        raise OpenPINotInstalledError(f"{INSTALL_HINT} (import failed: {exc})") from exc
    return _config, _policy_config, _model


def locate_prev(prev: np.ndarray, returned: np.ndarray | None, hint: int, atol: float = 1e-6) -> int | None:
    """The shift ``s`` with ``prev[:H - s] == returned[s:]`` (the engine's ``prev = chunk[s:]``), or None.

    ``hint`` (the engine passes the consumed count as ``execute_horizon``) is tried first.
    """
    if returned is None or prev.shape != returned.shape:
        return None
    H = returned.shape[0]
    order = [hint] + [s for s in range(H) if s != hint]
    for s in order:
        if 0 <= s < H and np.allclose(prev[: H - s], returned[s:], atol=atol, rtol=0.0):
            return s
    return None


def shift_model_chunk(raw: np.ndarray, s: int) -> np.ndarray:
    """``raw[s:]`` zero-padded back to ``len(raw)`` (the model-space twin of the engine's ``prev``)."""
    out = np.zeros_like(raw)
    out[: raw.shape[0] - s] = raw[s:]
    return out


@POLICY_REGISTRY.register("openpi")
class OpenPIPolicy:
    def __init__(
        self,
        train_config_name: str,
        ckpt_dir: str,
        chunk_size: int = 50,
        action_dim: int = 24,
        state_dim: int = 24,
        camera_names: Sequence[str] = (),
        prompt: str = "",
        num_inference_steps: int = 10,
        device: str = "cuda",
        obs_keys: dict | None = None,
        seed: int = 0,
    ) -> None:
        _config, _policy_config, self._openpi_model = import_openpi()
        import torch

        from policies.openpi.sampler import OpenPIFlowSampler

        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size), action_dim=int(action_dim), state_dim=int(state_dim),
            camera_names=tuple(camera_names), supports_vjp=True,
        )
        self.obs_map = ObsKeyMap.from_config(obs_keys, tuple(camera_names))
        self.prompt = prompt
        self.device = device
        train_config = _config.get_config(train_config_name)
        self._policy = _policy_config.create_trained_policy(
            train_config, ckpt_dir, default_prompt=prompt or None, pytorch_device=device,
        )
        if not getattr(self._policy, "_is_pytorch_model", False):
            raise ValueError(
                f"policy=openpi runs openpi's PyTorch models; {ckpt_dir} holds a JAX checkpoint. Convert it with "
                "openpi's examples/convert_jax_model_to_pytorch.py (it writes model.safetensors)")
        self._model = self._policy._model
        self._model_cfg = train_config.model
        self.sampler = OpenPIFlowSampler(self._model, num_inference_steps)
        self._torch = torch
        self._generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self._last_robot: np.ndarray | None = None
        self._last_model: np.ndarray | None = None
        self._vjp_ok = True
        self._warned: set[str] = set()

    @classmethod
    def validate_config(cls, cfg: dict) -> None:
        """Fail before anything starts when openpi is missing (the message names the install step)."""
        import_openpi()

    # ------------------------------------------------------------------ openpi plumbing
    def _observation(self, obs: PolicyInput) -> tuple[Any, Any]:
        """PolicyInput (identity-normalized = robot space) -> (openpi Observation, transformed inputs)."""
        torch = self._torch
        raw = self.obs_map.encode(obs.state, images_to_uint8(obs.images), self.prompt or None)
        if self.obs_map.prompt is not None and self.prompt:
            raw.setdefault(self.obs_map.prompt, self.prompt)
        inputs = self._policy._input_transform(raw)
        batched = _tree_map(lambda x: torch.from_numpy(np.array(x)).to(self.device)[None, ...], inputs)
        return self._openpi_model.Observation.from_dict(batched), inputs

    def _noise(self) -> Any:
        torch = self._torch
        shape = (1, int(self._model_cfg.action_horizon), int(self._model_cfg.action_dim))
        return torch.randn(shape, generator=self._generator, dtype=torch.float32).to(self.device)

    def _finish(self, inputs: dict, actions_model: Any) -> np.ndarray:
        """openpi's output transforms on the sampled (normalized) chunk -> our chunk in robot space."""
        model_np = actions_model.detach().float().cpu().numpy()[0]
        outputs = self._policy._output_transform({"state": np.asarray(inputs["state"]), "actions": model_np.copy()})
        actions = np.asarray(outputs["actions"], dtype=np.float32)
        H, D = self.metadata.chunk_size, self.metadata.action_dim
        if actions.shape[0] < H or actions.shape[1] < D:
            raise ValueError(f"openpi returned actions of shape {actions.shape}; policy expects ({H}, {D})")
        self._last_robot = np.array(actions[:H, :D], dtype=np.float32)
        self._last_model = model_np[:H]
        return self._last_robot.copy()

    # ------------------------------------------------------------------ Policy protocol
    def predict(self, obs: PolicyInput) -> np.ndarray:
        observation, inputs = self._observation(obs)
        return self._finish(inputs, self.sampler.sample(observation, self._noise()))

    def guided_inference(self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp",
                         max_guidance_weight=5.0) -> np.ndarray:
        prev = np.asarray(prev_chunk, dtype=np.float32)
        H = self.metadata.chunk_size
        weights = prefix_weights(H, int(delay), int(execute_horizon), schedule)
        if guidance == "none":
            return self.predict(obs)
        shift = locate_prev(prev, self._last_robot, int(execute_horizon)) if guidance == "vjp" else None
        if guidance == "vjp" and self._vjp_ok and shift is not None:
            observation, inputs = self._observation(obs)
            prev_model = shift_model_chunk(self._last_model, shift)
            model_w = np.zeros(int(self._model_cfg.action_horizon), dtype=np.float32)
            model_w[:H] = weights
            try:
                out = self.sampler.guided_sample(observation, self._noise(), prev_model, model_w, max_guidance_weight)
                return self._finish(inputs, out)
            except RuntimeError as exc:
                self._vjp_ok = False
                log.warning("openpi model cannot be differentiated (%s); RTC falls back to blend", exc)
        elif guidance == "vjp" and "unmatched" not in self._warned:
            self._warned.add("unmatched")
            log.warning("openpi: prev chunk is not one this adapter produced; blending this time")
        return blend(prev, self.predict(obs), weights)

    def warmup(self) -> None:
        pass

    def freeze(self) -> None:
        self._model.eval()
        for p in self._model.parameters():
            p.requires_grad_(False)


def _tree_map(fn: Any, tree: Any) -> Any:
    if isinstance(tree, dict):
        return {k: _tree_map(fn, v) for k, v in tree.items()}
    if isinstance(tree, (np.ndarray, np.generic)) or np.isscalar(tree):
        return fn(tree)
    return tree
