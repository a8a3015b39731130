"""``policy=openpi``: openpi's PyTorch pi0 / pi0.5 checkpoints, in process, with real RTC guidance.

openpi is imported lazily (only when this policy is checked or built) because it is a large GPU-box
dependency that the rest of the project never needs. The checkpoint is loaded the way openpi's own
server does (``policy_config.create_trained_policy`` with the named training config), so its input
transforms (the robot adapter, delta actions, resizing, tokenizing the prompt, openpi's normalization)
and output transforms (unnormalization, absolute actions, the robot adapter) apply unchanged.

Spaces: like an openpi server, this adapter takes robot-space observations and returns robot-space
actions (openpi normalizes inside), so its config uses the identity normalizer, and the previous chunk
RTC hands back is in robot space (absolute actions). Guidance must run in openpi's *model* space
(normalized, padded, and for delta-action checkpoints relative to the state). So the previous chunk
goes through the checkpoint's own input transforms together with the *new* observation
(``prev_to_model: transforms``, the default): for ALOHA's ``DeltaActions`` that subtracts the new
state, exactly as openpi's ``AbsoluteActions`` will add it back to the new chunk, so the guided prefix
lands on what the robot was executing even while it moves. ``prev_to_model: stored`` instead guides
toward the model-space chunk this adapter sampled last (located by shift ``s``); that is only right for
absolute-action checkpoints and is used as well when a checkpoint's input transforms drop ``actions``.
Chunks of ``chunk_size < action_horizon`` actions are padded to the model's horizon with zero weight.

Guidance falls back to the blend ``W * prev + (1 - W) * new`` (and says so once in the log) only when
the denoiser really cannot be differentiated (``NotDifferentiableError``); any other error in the
guided sampler is a bug and propagates.

Start-time checks (:meth:`OpenPIPolicy.preflight`, called by config validation before anything starts):
openpi importable, the training config exists, the checkpoint is a readable openpi PyTorch checkpoint
whose tensors match that config, its norm stats exist and match ``state_dim``/``action_dim``,
``chunk_size <= action_horizon``, a prompt where the config has no default, the device exists.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.control_rate import ControlRate, lerobot_dataset_rate
from policies.guidance import blend, prefix_weights
from policies.openpi.obs_map import ObsKeyMap, images_to_uint8
from policies.registry import POLICY_REGISTRY
from services.errors import ConfigError

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "policy=openpi needs the openpi package: install it on the GPU box (docs/openpi.md): "
    "`git clone https://github.com/Physical-Intelligence/openpi`, openpi's pins, "
    "`pip install --no-deps -e openpi openpi/packages/openpi-client`, then "
    "`python -m policies.openpi.install --openpi-src openpi` (openpi's transformers patch); "
    "or serve the model elsewhere and use policy=openpi_remote"
)
PREV_TO_MODEL = ("transforms", "stored")


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


def resolve_train_config(name: str) -> Any:
    """openpi's ``TrainConfig`` for ``name``: an openpi config name (``pi05_aloha``), or ``module:NAME``
    (the module is imported first: NAME is a ``TrainConfig`` it defines, or a config it adds to openpi's
    table), for configs that live outside openpi's ``config.py``. Raises ValueError naming the problem."""
    _config = import_openpi()[0]
    module, sep, attr = name.rpartition(":")
    if sep:
        try:
            mod = importlib.import_module(module)
        except ImportError as exc:
            raise ValueError(f"cannot import module {module!r} ({exc})") from None
        found = getattr(mod, attr, None)
        if isinstance(found, _config.TrainConfig):
            return found
        name = attr
    return _config.get_config(name)  # ValueError: "Config 'x' not found. Did you mean 'y'?"


def checkpoint_mismatches(train_config: Any, weights: Path) -> list[str]:
    """Tensors of ``weights`` (safetensors) that do not fit the model ``train_config`` builds (empty: they fit).

    The model is built on torch's meta device (no memory, no init), so this is cheap; tied weights
    (saved once by safetensors) count as present when any of their names is in the file.
    """
    import safetensors
    import torch
    from openpi.models_pytorch import pi0_pytorch

    with safetensors.safe_open(str(weights), "pt") as f:
        shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    with torch.device("meta"):
        model = pi0_pytorch.PI0Pytorch(config=train_config.model)
    groups: dict[int, list[str]] = {}
    expected: dict[str, tuple[int, ...]] = {}
    for key, tensor in model.state_dict(keep_vars=True).items():
        groups.setdefault(id(tensor), []).append(key)
        expected[key] = tuple(tensor.shape)
    problems = [f"{k} missing" for names in groups.values() if not any(n in shapes for n in names) for k in names[:1]]
    problems += [
        f"{k} has shape {list(shapes[k])}, config wants {list(expected[k])}"
        for k in shapes
        if k in expected and shapes[k] != expected[k]
    ]
    problems += [f"{k} unexpected" for k in shapes if k not in expected]
    kind = lambda keys: "pi0.5" if "time_mlp_in.weight" in keys else "pi0"  # noqa: E731 - pi0.5's timestep MLP
    if problems and kind(shapes) != kind(expected):
        problems.insert(0, f"it holds a {kind(shapes)} model, the config a {kind(expected)} model")
    return problems


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


def model_space_target(
    prev_model: np.ndarray, weights: np.ndarray, horizon: int, width: int
) -> tuple[np.ndarray, np.ndarray]:
    """``(horizon, width)`` guidance target and ``(horizon,)`` weights from a ``(H, <= width)`` model-space chunk.

    Rows past ``H`` (``chunk_size < action_horizon``) and rows with zero weight (the engine's zero
    padding, meaningless after openpi's transforms) are zeroed; weighted rows must be finite.
    """
    H = weights.shape[0]
    if prev_model.shape[0] != H or prev_model.shape[1] > width or H > horizon:
        raise ValueError(
            f"previous chunk in model space has shape {prev_model.shape}; expected ({H}, <= {width}) "
            f"within the model's horizon {horizon}"
        )
    w = np.zeros(horizon, dtype=np.float32)
    w[:H] = weights
    target = np.zeros((horizon, width), dtype=np.float32)
    target[:H, : prev_model.shape[1]] = prev_model
    target[w == 0] = 0.0
    if not np.isfinite(target).all():
        raise ValueError("previous chunk is not finite in model space on its weighted prefix")
    return target, w


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
        prev_to_model: str = "transforms",
    ) -> None:
        _config, _policy_config, self._openpi_model = import_openpi()
        import torch

        from policies.openpi.sampler import OpenPIFlowSampler

        if prev_to_model not in PREV_TO_MODEL:
            raise ValueError(f"prev_to_model={prev_to_model!r}; expected one of {PREV_TO_MODEL}")
        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size),
            action_dim=int(action_dim),
            state_dim=int(state_dim),
            camera_names=tuple(camera_names),
            supports_vjp=True,
        )
        self.obs_map = ObsKeyMap.from_config(obs_keys, tuple(camera_names), int(state_dim))
        self.prompt = prompt
        self.device = device
        self.prev_to_model = prev_to_model
        train_config = resolve_train_config(train_config_name)
        self._policy = _policy_config.create_trained_policy(
            train_config, ckpt_dir, default_prompt=prompt or None, pytorch_device=device
        )
        if not getattr(self._policy, "_is_pytorch_model", False):
            raise ValueError(
                f"policy=openpi runs openpi's PyTorch models; {ckpt_dir} holds a JAX checkpoint. Convert it with "
                "openpi's examples/convert_jax_model_to_pytorch.py (it writes model.safetensors)"
            )
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
    def trained_control_hz(cls, node: Mapping[str, Any]) -> ControlRate | None:
        """The rate the training data was recorded at, where the training config says: openpi's configs
        train on a LeRobot dataset (``data.repo_id``) whose ``meta/info.json`` states its ``fps``; read when
        that dataset is in the local LeRobot cache. None otherwise (openpi not importable, no repo id, the
        dataset not on this machine): the rate is then unknown and not checked."""
        try:
            repo_id = getattr(resolve_train_config(str(node.get("train_config_name"))).data, "repo_id", None)
        except (OpenPINotInstalledError, ValueError):
            return None
        return lerobot_dataset_rate(repo_id) if isinstance(repo_id, str) else None

    @classmethod
    def preflight(cls, node: Mapping[str, Any], path: str) -> None:
        """Start-time checks of a ``policy=openpi`` node (config validation calls this before anything starts)."""
        try:
            import_openpi()
        except OpenPINotInstalledError as exc:
            raise ConfigError(f"{path}: {exc}") from None
        try:
            obs_map = ObsKeyMap.from_config(
                node.get("obs_keys"), tuple(node.get("camera_names") or ()), node.get("state_dim")
            )
        except ValueError as exc:
            raise ConfigError(
                f"{path}.{exc}" if str(exc).startswith("obs_keys") else f"{path}.obs_keys: {exc}"
            ) from None
        if node.get("prev_to_model", "transforms") not in PREV_TO_MODEL:
            raise ConfigError(f"{path}.prev_to_model: {node.get('prev_to_model')!r}; expected one of {PREV_TO_MODEL}")
        name = str(node.get("train_config_name"))
        try:
            train_config = resolve_train_config(name)
        except ValueError as exc:
            raise ConfigError(f"{path}.train_config_name: {name!r} is not an openpi training config: {exc}") from None
        model = train_config.model
        if getattr(model, "model_type", None) is None or not hasattr(model, "pi05"):
            raise ConfigError(
                f"{path}.train_config_name: {name} is a {type(model).__name__} model; "
                "policy=openpi runs pi0 / pi0.5 (Pi0Config)"
            )
        cls._preflight_checkpoint(node, path, name, train_config, obs_map)
        if int(node.get("chunk_size", 50)) > int(model.action_horizon):
            raise ConfigError(
                f"{path}.chunk_size: {node.get('chunk_size')} exceeds the model's action_horizon "
                f"{model.action_horizon} ({name})"
            )
        if int(node.get("action_dim", 0)) > int(model.action_dim):
            raise ConfigError(
                f"{path}.action_dim: {node.get('action_dim')} exceeds the model's action_dim "
                f"{model.action_dim} ({name})"
            )
        default_prompt = getattr(train_config.data, "default_prompt", None) or getattr(
            getattr(train_config.data, "model_transforms", None), "default_prompt", None
        )
        if not node.get("prompt") and not default_prompt:
            raise ConfigError(f"{path}.prompt: required ({name} has no default prompt; pi0/pi0.5 tokenize one)")
        device = str(node.get("device", "cuda"))
        if device.startswith("cuda"):
            import torch

            if not torch.cuda.is_available():
                raise ConfigError(
                    f"{path}.device: {device} but torch.cuda.is_available() is False here "
                    "(policy.device=cpu to run on the CPU)"
                )

    @staticmethod
    def _preflight_checkpoint(
        node: Mapping[str, Any], path: str, name: str, train_config: Any, obs_map: ObsKeyMap
    ) -> None:
        """Checkpoint readable and matching the training config and our dims (local directories only)."""
        ckpt = str(node.get("ckpt_dir"))
        if "://" in ckpt:
            return  # openpi downloads gs:// checkpoints when it loads them
        root = Path(ckpt)
        if not root.is_dir():
            raise ConfigError(f"{path}.ckpt_dir: {ckpt} is not a directory")
        weights = root / "model.safetensors"
        if not weights.is_file():
            what = (
                (
                    "holds a JAX checkpoint (params/); policy=openpi runs openpi's PyTorch models: convert it with "
                    "openpi's examples/convert_jax_model_to_pytorch.py"
                )
                if (root / "params").is_dir()
                else ("has no model.safetensors (an openpi PyTorch checkpoint: model.safetensors + assets/<asset_id>/)")
            )
            raise ConfigError(f"{path}.ckpt_dir: {ckpt} {what}")
        if not os.access(weights, os.R_OK):
            raise ConfigError(f"{path}.ckpt_dir: {weights} is not readable")
        try:
            problems = checkpoint_mismatches(train_config, weights)
        except Exception as exc:  # noqa: BLE001 - a corrupt header, a truncated file, ...
            raise ConfigError(f"{path}.ckpt_dir: cannot read {weights} ({type(exc).__name__}: {exc})") from None
        if problems:
            more = f" (+{len(problems) - 3} more)" if len(problems) > 3 else ""
            raise ConfigError(
                f"{path}.ckpt_dir: {weights} does not fit training config {name}: {'; '.join(problems[:3])}{more}"
            )
        import tyro
        from openpi.training import checkpoints as _checkpoints

        data = train_config.data  # openpi's DataConfigFactory.create_base_config picks the asset id this way
        asset_id = data.assets.asset_id or (None if data.repo_id is tyro.MISSING else data.repo_id)
        try:
            stats = _checkpoints.load_norm_stats(root / "assets", str(asset_id))
        except FileNotFoundError:
            raise ConfigError(
                f"{path}.ckpt_dir: no norm stats at {root / 'assets' / str(asset_id) / 'norm_stats.json'} "
                f"(openpi loads them from the checkpoint; asset id {asset_id!r} from {name})"
            ) from None
        keys = obs_map.state
        sent = int(node.get("state_dim", 0)) if isinstance(keys, str) else sum(b - a for _, a, b in keys)
        for key, ours, dims in (
            ("state_dim", sent, stats["state"].mean.shape[-1]),
            ("action_dim", int(node.get("action_dim", 0)), stats["actions"].mean.shape[-1]),
        ):
            if ours != dims:
                raise ConfigError(
                    f"{path}.{key}: {ours} but the checkpoint's norm stats have {dims} "
                    f"{key.split('_')[0]} dims ({root / 'assets' / str(asset_id)})"
                )

    # ------------------------------------------------------------------ openpi plumbing
    def _inputs(self, obs: PolicyInput, prev: np.ndarray | None = None) -> dict:
        """The checkpoint's input transforms on our observation (+ ``actions``: a robot-space chunk)."""
        raw = self.obs_map.encode(obs.state, images_to_uint8(obs.images), self.prompt or None)
        if prev is not None:
            raw["actions"] = np.array(prev, dtype=np.float32)
        return self._policy._input_transform(raw)

    def _observation(self, inputs: dict) -> Any:
        torch = self._torch
        model_inputs = {k: v for k, v in inputs.items() if k != "actions"}
        batched = _tree_map(lambda x: torch.from_numpy(np.array(x)).to(self.device)[None, ...], model_inputs)
        return self._openpi_model.Observation.from_dict(batched)

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

    def _warn_once(self, key: str, msg: str, *args: Any) -> None:
        if key not in self._warned:
            self._warned.add(key)
            log.warning(msg, *args)

    def _prev_in_model_space(self, inputs: dict, prev: np.ndarray, execute_horizon: int) -> np.ndarray | None:
        """``prev`` (robot space) in model space: through the input transforms, else the stored chunk."""
        if "actions" in inputs:
            return np.asarray(inputs["actions"], dtype=np.float32)
        if self.prev_to_model == "transforms":
            self._warn_once(
                "no-actions",
                "openpi: this checkpoint's input transforms drop 'actions'; guiding toward "
                "the stored model-space chunk (right only for absolute-action checkpoints)",
            )
        shift = locate_prev(prev, self._last_robot, execute_horizon)
        return None if shift is None else shift_model_chunk(self._last_model, shift)

    # ------------------------------------------------------------------ Policy protocol
    def predict(self, obs: PolicyInput) -> np.ndarray:
        inputs = self._inputs(obs)
        return self._finish(inputs, self.sampler.sample(self._observation(inputs), self._noise()))

    def guided_inference(
        self, obs, prev_chunk, delay, execute_horizon, guidance="vjp", schedule="exp", max_guidance_weight=5.0
    ) -> np.ndarray:
        from policies.openpi.sampler import NotDifferentiableError

        prev = np.asarray(prev_chunk, dtype=np.float32)
        if guidance == "none":
            return self.predict(obs)
        H = self.metadata.chunk_size
        execute_horizon = min(
            int(execute_horizon), H
        )  # the chunk ran out before this request: nothing left to continue
        weights = prefix_weights(H, int(delay), execute_horizon, schedule)
        if guidance == "vjp" and self._vjp_ok:
            inputs = self._inputs(obs, prev if self.prev_to_model == "transforms" else None)
            prev_model = self._prev_in_model_space(inputs, prev, int(execute_horizon))
            if prev_model is not None:
                target, model_w = model_space_target(
                    prev_model, weights, int(self._model_cfg.action_horizon), int(self._model_cfg.action_dim)
                )
                try:
                    out = self.sampler.guided_sample(
                        self._observation(inputs), self._noise(), target, model_w, max_guidance_weight
                    )
                    return self._finish(inputs, out)
                except NotDifferentiableError as exc:
                    self._vjp_ok = False
                    log.warning("openpi model cannot be differentiated (%s); RTC falls back to blend", exc)
            else:
                self._warn_once("unmatched", "openpi: prev chunk is not one this adapter produced; blending this time")
        return blend(prev, self.predict(obs), weights)

    def warmup(self) -> None:
        """One unguided and one guided sample on a blank observation, so the first real chunk pays no
        first-call costs (allocator, autograd graph); the sampling noise stream is restored after."""
        from policies.base import PolicyInput

        state = self._generator.get_state()
        H = self.metadata.chunk_size
        blank = PolicyInput(
            state=np.zeros((1, self.metadata.state_dim), np.float32),
            images={c: np.zeros((1, 3, 224, 224), np.uint8) for c in self.metadata.camera_names},
        )
        chunk = self.predict(blank)
        self.guided_inference(blank, chunk, min(1, H), max(0, H - 1), "vjp")
        self._generator.set_state(state)
        self._last_robot = self._last_model = None

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
