"""FlowPolicy: the bundled learned chunk policy (pi0-style flow matching), CPU or GPU.

Model space in and out (``policies/base.py``): the engine normalizes the observation and hands back
the previous chunk in the same normalized space, so RTC guidance happens where the model works.
All guidance math comes from ``policies.guidance``.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np
import torch

from policies.base import Guidance, PolicyInput, PolicyMetadata, Schedule
from policies.control_rate import ControlRate
from policies.flow.bid import WeakPolicy
from policies.flow.checkpoint import (
    DEFAULT_CHECKPOINT,
    REPO_ROOT,
    control_rate,
    load_config,
    load_model_named,
    resolve_path,
)
from policies.flow.model import FlowModel, Prefix
from policies.guidance import (
    bid_select,
    blend,
    euler_sample,
    gated_select,
    guided_euler_sample,
    identity_guided_euler_sample,
    padded_prev,
    prefix_conditioned_sample,
    prefix_weights,
    select_coherent,
)
from policies.registry import POLICY_REGISTRY
from services.errors import ConfigError
from services.knobs import PositiveInt, Range

logger = logging.getLogger(__name__)


class _Mismatch(ValueError):
    """A config key that disagrees with the checkpoint (``key`` names it)."""

    def __init__(self, key: str, message: str) -> None:
        super().__init__(message)
        self.key = key


def _check(name: str, configured: Any, from_checkpoint: Any, checkpoint: str) -> None:
    if configured is not None and configured != from_checkpoint:
        raise _Mismatch(
            name,
            f"flow policy: {name}={configured!r} in the config but {name}={from_checkpoint!r} "
            f"in checkpoint {checkpoint}",
        )


def _device(device: str) -> torch.device:
    """``auto`` (cuda where available) | cpu | cuda[:N]; a CUDA device this machine lacks is an error."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as exc:
        raise ValueError(f"device {device!r} is not a torch device (auto | cpu | cuda[:N]): {exc}") from None
    if dev.type not in ("cpu", "cuda"):
        raise ValueError(f"device {device!r}: expected auto | cpu | cuda[:N]")
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r}: CUDA is not available on this machine (use device=auto or cpu)")
    return dev


def _load_checked(
    checkpoint: Path, chunk_size: Any, action_dim: Any, state_dim: Any, camera_names: Any, image_size: Any
) -> tuple[FlowModel, dict[str, Any]]:
    """Load the checkpoint on the CPU and check it keeps the config's promises (ValueError naming the key)."""
    model, meta = load_model_named(checkpoint, f"checkpoint {checkpoint}", f"checkpoint {checkpoint}")
    cfg, ck = model.cfg, str(checkpoint)
    _check("chunk_size", chunk_size, cfg.chunk_size, ck)
    _check("action_dim", action_dim, cfg.action_dim, ck)
    _check("state_dim", state_dim, cfg.state_dim, ck)
    _check("camera_names", None if camera_names is None else tuple(camera_names), cfg.camera_names, ck)
    _check("image_size", None if image_size is None else tuple(image_size), cfg.image_size, ck)
    return model, meta


@POLICY_REGISTRY.register("flow")
class FlowPolicy:
    """Loads a checkpoint directory and samples action chunks with ``num_steps`` Euler steps.

    Parameters (all config keys of ``conf/policy/flow.yaml``):
        checkpoint: checkpoint directory; relative paths are resolved against the repo root.
        chunk_size, action_dim, state_dim, camera_names, image_size: expected values, checked
            against the checkpoint (``None`` = take the checkpoint's). image_size is (height, width).
        device: ``auto`` (cuda if available), ``cpu`` or ``cuda[:i]``.
        compile: ``torch.compile`` the action expert at :meth:`warmup` (falls back with a warning
            where no compiler toolchain exists).
        compile_mode: torch.compile's ``mode``. ``reduce-overhead`` adds CUDA graphs: this network is
            small, so on a GPU a chunk costs kernel launches more than arithmetic, and replaying each
            Euler step's launches as one graph removes most of that (``benchmarks/results/inference_cuda.md``).
            On a CPU it compiles as ``default``.
        autocast_bf16: run the network under bf16 autocast (the Euler state stays float32).
        cudnn_benchmark: set ``torch.backends.cudnn.benchmark`` (no effect on CPU).
        num_steps: Euler steps per chunk.
        seed: seed of the sampling-noise generator (reproducible chunks for a fixed input order).
        select_samples: K, the chunks sampled per request under ``guidance: select`` (one batched
            sampling call; the encoder runs once). K = 1 is naive async.
        select_stale_gate: under ``guidance: select``, run the unselected first sample (a plain
            sample, as naive async runs) whenever the previous chunk is an outlier among the K fresh samples
            (``policies.guidance.prev_is_stale``: the world changed under the old plan), so a stale
            plan never picks which fresh sample runs.
        bid_samples: N (>= 2), under ``guidance: bid`` (bidirectional decoding): the chunks sampled per
            request from this checkpoint and from the weak one each (2N samples per chunk); the kept
            one is ``policies.guidance.bid_select``'s.
        bid_weak_checkpoint: the weak policy ``guidance: bid`` contrasts with: a checkpoint directory
            (relative to the repository root) or the name of a bundled one, normally an earlier
            checkpoint of the same training run. Its chunk size, dims, cameras and image size must
            match; required for ``guidance: bid`` (a config error at start otherwise); None: no
            weak network is loaded.
        normalizer: accepted and ignored: the engine owns normalization.
    """

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check (before any process exists): the device exists, the checkpoint loads
        and matches the configured dims, cameras, image size and horizon."""
        try:
            _device(str(node.get("device", "auto")))
        except ValueError as exc:
            raise ConfigError(f"{path}.device: {exc}") from None
        try:
            _load_checked(
                resolve_path(node.get("checkpoint", DEFAULT_CHECKPOINT)),
                node.get("chunk_size"),
                node.get("action_dim"),
                node.get("state_dim"),
                node.get("camera_names"),
                node.get("image_size"),
            )
        except ValueError as exc:
            raise ConfigError(f"{path}.{getattr(exc, 'key', 'checkpoint')}: {exc}") from None
        weak = node.get("bid_weak_checkpoint")
        if weak:
            try:
                strong = resolve_path(node.get("checkpoint", DEFAULT_CHECKPOINT))
                WeakPolicy.load(str(weak), load_config(strong)[0], strong)
            except ValueError as exc:
                raise ConfigError(f"{path}.bid_weak_checkpoint: {exc}") from None

    @classmethod
    def describe_for_robot(cls, node: Any, robot: Any) -> str | None:
        """For a start-time error about dims: when the configured checkpoint was trained for a robot of
        other dims than ``robot``'s, what it drives (config.json's ``meta.task``); else None (the
        mismatch is in the config, not the robot)."""
        ckpt = resolve_path(node.get("checkpoint", DEFAULT_CHECKPOINT))
        try:
            model, meta = load_config(ckpt)
        except (OSError, ValueError, KeyError):
            return None
        if (model.action_dim, model.state_dim) == (int(robot["action_dim"]), int(robot["state_dim"])):
            return None
        task = meta.get("task")
        shown = ckpt.relative_to(REPO_ROOT) if ckpt.is_relative_to(REPO_ROOT) else ckpt
        bundled = (
            "the bundled policy (policy=flow, "
            if ckpt.parent == REPO_ROOT / "policies/flow/checkpoints"
            else "policy=flow ("
        )
        return f"{bundled}checkpoint {shown}) was trained on {task or 'its own task'} and drives that robot only"

    @classmethod
    def trained_control_hz(cls, node: Any) -> ControlRate | None:
        """The rate the configured checkpoint was trained at (config.json), compared with ``robot.hz``
        at start; None when the checkpoint does not say."""
        try:
            return control_rate(resolve_path(node.get("checkpoint", DEFAULT_CHECKPOINT)))
        except ValueError as exc:
            raise ConfigError(f"policy.checkpoint: {exc}") from None

    @classmethod
    def supports_bid_guidance(cls, node: Any) -> bool:
        """Every checkpoint, given a weak one to contrast with (``require_bid_guidance``)."""
        return True

    @classmethod
    def require_bid_guidance(cls, node: Any, path: str) -> None:
        """Start-time check of ``guidance: bid``: the weak checkpoint is configured (``preflight``
        checks that it loads and matches)."""
        if not node.get("bid_weak_checkpoint"):
            raise ConfigError(
                f"{path}.bid_weak_checkpoint: required for guidance=bid (the weak policy bidirectional "
                "decoding contrasts with: an earlier checkpoint of the same model, a directory or a "
                "bundled checkpoint name)"
            )

    @classmethod
    def supports_identity_guidance(cls, node: Any) -> bool:
        """Every checkpoint: the Euler sampler takes the correction without the Jacobian."""
        return True

    @classmethod
    def supports_select_guidance(cls, node: Any) -> bool:
        """Every checkpoint: the sampler draws ``select_samples`` chunks in one batched call."""
        return True

    @classmethod
    def supports_trained_guidance(cls, node: Any) -> bool:
        """Whether the configured checkpoint was trained with action-prefix conditioning (start-time
        check of ``guidance: trained``; reads config.json only)."""
        try:
            cfg, _ = load_config(resolve_path(node.get("checkpoint", DEFAULT_CHECKPOINT)))
        except (OSError, ValueError, KeyError):
            return False
        return cfg.train_prefix_max > 0

    def __init__(
        self,
        checkpoint: str = DEFAULT_CHECKPOINT,
        chunk_size: int | None = None,
        action_dim: int | None = None,
        state_dim: int | None = None,
        camera_names: Sequence[str] | None = None,
        image_size: Sequence[int] | None = None,
        device: str = "auto",
        compile: bool = False,  # noqa: A002 - config key
        compile_mode: Literal["default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs"] = "default",
        autocast_bf16: bool = False,
        cudnn_benchmark: bool = False,
        num_steps: PositiveInt = 10,
        seed: int = 0,
        select_samples: PositiveInt = 8,
        select_stale_gate: bool = False,
        bid_samples: Annotated[int, Range(ge=2)] = 8,
        bid_weak_checkpoint: str | None = None,
        normalizer: Any = None,
    ) -> None:
        if num_steps <= 0:
            raise ValueError(f"flow policy: num_steps must be positive, got {num_steps}")
        if select_samples <= 0:
            raise ValueError(f"flow policy: select_samples must be positive, got {select_samples}")
        if bid_samples < 2:
            raise ValueError(f"flow policy: bid_samples must be >= 2, got {bid_samples}")
        self.bid_samples = int(bid_samples)
        self.select_samples = int(select_samples)
        self.select_stale_gate = bool(select_stale_gate)
        self.checkpoint = resolve_path(checkpoint)
        self.device = _device(device)
        model, self.meta = _load_checked(self.checkpoint, chunk_size, action_dim, state_dim, camera_names, image_size)
        cfg = model.cfg
        self.model: FlowModel = model.to(self.device)
        self.weak: WeakPolicy | None = None  # guidance: bid's weak network
        if bid_weak_checkpoint:
            try:
                self.weak = WeakPolicy.load(str(bid_weak_checkpoint), cfg, self.checkpoint, self.device)
            except ValueError as exc:
                raise _Mismatch("bid_weak_checkpoint", f"flow policy: {exc}") from None
        self.num_steps = int(num_steps)
        self.seed = int(seed)
        self.compile = bool(compile)
        self.compile_mode = str(compile_mode)
        self.autocast_bf16 = bool(autocast_bf16)
        if cudnn_benchmark and self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True
        self._generator = torch.Generator(device=self.device)
        self._generator.manual_seed(self.seed)
        self._velocity = self.model.velocity
        self._encode = self.model.encode_prefix
        self.compiled = False  # torch.compile in effect (set by warmup; False again after a fallback)
        self._warned_prefix = False  # the delay exceeded the longest prefix trained (said once)
        self._last_info: dict[str, float] = {}  # what the last call reports (last_info)
        self.metadata = PolicyMetadata(
            chunk_size=cfg.chunk_size,
            action_dim=cfg.action_dim,
            state_dim=cfg.state_dim,
            camera_names=tuple(cfg.camera_names),
            image_size=tuple(cfg.image_size),
            state_history=1,
            num_img_obs=1,
            supports_vjp=True,
            needs_privileged=False,
            supports_trained=cfg.train_prefix_max > 0,
            supports_identity=True,
            supports_select=True,
            supports_bid=self.weak is not None,
        )
        self.freeze()

    # -- lifecycle ------------------------------------------------------------------------------
    def freeze(self) -> None:
        """Eval mode, no parameter gradients (the guidance VJP is w.r.t. the chunk only)."""
        self.model.eval()
        self.model.requires_grad_(False)

    def warmup(self) -> None:
        """Compile (if asked) and run one inference of each kind this policy serves on a blank input
        (a compiled network traces each batch shape once: ``select``'s K-chunk batch is one of them,
        and tracing it in the control loop would stall a chunk). The noise generator is left as it was."""
        if self.compile:
            try:
                self._velocity = torch.compile(self.model.velocity, dynamic=False, mode=self.compile_mode)
                self._encode = torch.compile(self.model.encode_prefix, dynamic=False, mode=self.compile_mode)
                self.compiled = True
            except Exception as exc:  # pragma: no cover - depends on the toolchain
                logger.warning("torch.compile unavailable (%s); running eagerly", exc)
        m = self.metadata
        h, w = m.image_size
        obs = PolicyInput(
            state=np.zeros((1, m.state_dim), np.float32),
            images={c: np.zeros((1, 3, h, w), np.float32) for c in m.camera_names},
        )
        noise = np.zeros((m.chunk_size, m.action_dim), np.float32)
        try:
            self.predict(obs, noise=noise)
            self.guided_inference(obs, noise, delay=1, execute_horizon=1, noise=noise)
            if self.metadata.supports_trained:
                self.guided_inference(obs, noise, delay=1, execute_horizon=1, guidance="trained", noise=noise)
            state = self._generator.get_state()
            self.guided_inference(obs, noise, delay=1, execute_horizon=1, guidance="select", noise=noise)
            if self.weak is not None:
                self.guided_inference(obs, noise, delay=1, execute_horizon=1, guidance="bid", noise=noise)
            self._generator.set_state(state)
        except Exception as exc:
            if self.compiled:
                logger.warning("compiled flow model failed at warmup (%s); running eagerly", exc)
                self._velocity, self._encode = self.model.velocity, self.model.encode_prefix
                self.compiled = False
                self.predict(obs, noise=noise)
            else:
                raise

    # -- helpers --------------------------------------------------------------------------------
    @property
    def _copy_graph_outputs(self) -> bool:
        """CUDA graphs (compiled in mode reduce-overhead or max-autotune, on a GPU) reuse their output
        buffers: a later replay (the next Euler step, or the next chunk's generation) overwrites what
        an earlier one returned, so the encoded prefix and each velocity are copied out (a few KB)."""
        return self.compiled and self.device.type == "cuda" and self.compile_mode in ("reduce-overhead", "max-autotune")

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.autocast_bf16:
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _tensors(self, obs: PolicyInput) -> tuple[torch.Tensor, torch.Tensor]:
        m = self.metadata
        state = np.asarray(obs.state, dtype=np.float32)
        state = state.reshape(-1, state.shape[-1])[-1]
        if state.shape != (m.state_dim,):
            raise ValueError(f"flow policy: state has dim {state.shape[-1]}, expected {m.state_dim}")
        frames = []
        for cam in m.camera_names:
            if cam not in obs.images:
                raise ValueError(f"flow policy: camera {cam!r} missing; got {sorted(obs.images)}")
            img = np.asarray(obs.images[cam], dtype=np.float32)
            img = img.reshape(-1, *img.shape[-3:])[-1]
            if img.shape != (3, *m.image_size):
                raise ValueError(
                    f"flow policy: camera {cam!r} image shape {img.shape}, expected (3, {m.image_size[0]}, "
                    f"{m.image_size[1]})"
                )
            frames.append(img)
        s = torch.from_numpy(state).to(self.device)[None]
        stacked = np.stack(frames) if frames else np.zeros((0, 3, *m.image_size), np.float32)  # state-only
        im = torch.from_numpy(stacked).to(self.device)[None]
        return s, im

    def _noise(self, noise: np.ndarray | None) -> torch.Tensor:
        m = self.metadata
        if noise is not None:
            t = torch.as_tensor(np.asarray(noise, np.float32), device=self.device)
            return t.reshape(1, m.chunk_size, m.action_dim).clone()
        return torch.randn((1, m.chunk_size, m.action_dim), generator=self._generator, device=self.device)

    def _velocity_fn(self, prefix: Prefix):
        def fn(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            with self._autocast():
                v = self._velocity(prefix, a, tau)
            return v.clone() if self._copy_graph_outputs and v.dtype == torch.float32 else v.float()

        return fn

    def _encode_prefix(self, obs: PolicyInput) -> Prefix:
        return self._encode_tensors(*self._tensors(obs))

    def _encode_tensors(self, state: torch.Tensor, images: torch.Tensor) -> Prefix:
        with self._autocast():
            prefix = self._encode(state, images)
        if not self._copy_graph_outputs:
            return prefix
        return Prefix(
            [(k.clone(), v.clone()) for k, v in prefix.kv], None if prefix.tokens is None else prefix.tokens.clone()
        )

    def reset_noise(self, seed: int | None = None) -> None:
        """Re-seed the sampling-noise generator (``seed`` defaults to the configured one)."""
        self._generator.manual_seed(self.seed if seed is None else int(seed))

    def velocity(self, obs: PolicyInput, actions: np.ndarray, tau: float) -> np.ndarray:
        """One bare network call ``v(A, tau)`` (prefix included); for benchmarks and probes."""
        with torch.inference_mode():
            prefix = self._encode_prefix(obs)
            a = torch.as_tensor(np.asarray(actions, np.float32), device=self.device)[None]
            v = self._velocity_fn(prefix)(a, torch.tensor(float(tau), device=self.device))
        return v[0].cpu().numpy()

    def last_info(self) -> dict[str, float]:
        """What the last call reports beside its chunk, recorded with the inference: under
        ``guidance: select`` with ``select_stale_gate``, ``select_stale`` (1.0: the previous chunk was
        an outlier among the samples, and the first sample ran unselected); under ``guidance: bid``,
        ``bid_index`` (which of the N strong samples was kept; 0 is the one drawn from the caller's
        noise, the chunk naive execution would run) and the kept one's ``bid_backward`` and
        ``bid_forward`` terms; else nothing."""
        return dict(self._last_info)

    # -- Policy protocol --------------------------------------------------------------------------
    def predict(self, obs: PolicyInput, *, noise: np.ndarray | None = None) -> np.ndarray:
        """Unguided chunk (chunk_size, action_dim) float32 in model space.

        ``noise`` (optional, (H, action_dim)) replaces the generator's draw, for reproducibility.
        """
        self._last_info = {}
        with torch.inference_mode():
            prefix = self._encode_prefix(obs)
            a = euler_sample(self._velocity_fn(prefix), self._noise(noise), self.num_steps)
        return a[0].float().cpu().numpy()

    def guided_inference(
        self,
        obs: PolicyInput,
        prev_chunk: np.ndarray,
        delay: int,
        execute_horizon: int,
        guidance: Guidance = "vjp",
        schedule: Schedule = "exp",
        max_guidance_weight: float = 5.0,
        *,
        noise: np.ndarray | None = None,
    ) -> np.ndarray:
        """A chunk continuing ``prev_chunk`` (model space; shorter inputs are zero-padded to H).

        ``guidance``: ``vjp`` (RTC, gradients through the action expert), ``trained`` (the first
        ``delay`` actions of ``prev`` as a clean prefix, for a checkpoint trained so: one unguided
        inference's cost), ``identity`` (RTC guidance without the Jacobian: no reverse pass),
        ``select`` (``select_samples`` unguided chunks, the most coherent with ``prev`` kept),
        ``bid`` (bidirectional decoding: ``bid_samples`` chunks from this checkpoint and as many from
        the weak one, ``policies.guidance.bid_select``'s choice kept; ``execute_horizon = H`` leaves
        no overlap, so only the forward contrast counts, as at an episode's first chunk),
        ``blend`` (``W*prev + (1-W)*new``) or ``none`` (plain predict: naive asynchronous execution).
        """
        m = self.metadata
        self._last_info = {}
        if guidance == "none":
            return self.predict(obs, noise=noise)
        try:
            prev = padded_prev(prev_chunk, m.chunk_size, m.action_dim, "prev_chunk")
        except ValueError as exc:
            raise ValueError(f"flow policy: {exc}") from None
        if guidance == "trained":
            return self._prefix_conditioned(obs, prev, int(delay), int(execute_horizon), noise)
        weights = prefix_weights(m.chunk_size, int(delay), int(execute_horizon), schedule)
        if guidance == "select":
            candidates = self._candidates(obs, noise)
            if not self.select_stale_gate:
                return candidates[select_coherent(candidates, prev, weights)]
            index, stale = gated_select(candidates, prev, weights)
            self._last_info = {"select_stale": float(stale)}
            return candidates[index]
        if guidance == "bid":
            return self._bid(obs, prev, weights, noise)
        if guidance == "blend":
            return blend(prev, self.predict(obs, noise=noise), weights)
        if guidance not in ("vjp", "identity"):
            raise ValueError(
                f"flow policy: unknown guidance {guidance!r}; "
                "expected vjp, identity, select, bid, trained, blend or none"
            )
        sample = guided_euler_sample if guidance == "vjp" else identity_guided_euler_sample
        with torch.no_grad():
            prefix = self._encode_prefix(obs)
            y = torch.from_numpy(prev).to(self.device)[None]
            a = sample(
                self._velocity_fn(prefix),
                self._noise(noise),
                y,
                torch.from_numpy(weights).to(self.device),
                self.num_steps,
                float(max_guidance_weight),
            )
        return a[0].float().cpu().numpy()

    def _candidates(self, obs: PolicyInput, noise: np.ndarray | None) -> np.ndarray:
        """K = ``select_samples`` plain chunks ``(K, H, action_dim)`` for one observation in one batched
        sampling call (the observation encoded once), for ``guidance: select``.
        ``noise`` (optional) is the first candidate's, the others are drawn."""
        m = self.metadata
        with torch.inference_mode():
            prefix = self._encode_prefix(obs)
            first = self._noise(noise)
            rest = torch.randn(
                (self.select_samples - 1, m.chunk_size, m.action_dim), generator=self._generator, device=self.device
            )
            candidates = euler_sample(self._velocity_fn(prefix), torch.cat([first, rest]), self.num_steps)
        return candidates.float().cpu().numpy()

    def _bid(self, obs: PolicyInput, prev: np.ndarray, weights: np.ndarray, noise: np.ndarray | None) -> np.ndarray:
        """``guidance: bid``: N chunks from this network (the first from ``noise``, the others drawn) and
        N from the weak one, all from this policy's noise generator in a fixed order (strong, then
        weak), so an evaluation that re-seeds it per episode compares methods on the same draws."""
        n = self.bid_samples
        if self.weak is None:
            raise ValueError("flow policy: guidance=bid needs a weak checkpoint (policy.bid_weak_checkpoint)")
        with torch.inference_mode():
            state, images = self._tensors(obs)
            prefix = self._encode_tensors(state, images)
            draws = self._bid_noise(noise)
            strong = euler_sample(self._velocity_fn(prefix), draws[:n], self.num_steps).float().cpu().numpy()
        weak = self.weak.sample(state, images, draws[n:], self.num_steps, self._autocast)
        chunk, self._last_info = _bid_choice(strong, prev, weights, weak)
        return chunk

    def _bid_noise(self, noise: np.ndarray | None) -> torch.Tensor:
        """One ``guidance: bid`` request's draws ``(2N, H, A)``: the N strong chunks' noise, then the N
        weak ones'. ``noise`` ``(H, A)`` is the first strong chunk's (drawn first otherwise: with the
        same generator state, the chunk predict would make), the others come from this policy's
        generator in that order; ``(2N, H, A)`` is all of them."""
        m, n = self.metadata, self.bid_samples
        shape = (m.chunk_size, m.action_dim)
        if noise is not None and np.size(noise) == 2 * n * m.chunk_size * m.action_dim:
            return torch.as_tensor(np.asarray(noise, np.float32), device=self.device).reshape(2 * n, *shape).clone()
        first = self._noise(noise)
        rest = torch.randn((n - 1, *shape), generator=self._generator, device=self.device)
        weak = torch.randn((n, *shape), generator=self._generator, device=self.device)
        return torch.cat([first, rest, weak])

    def bid_inference_batch(self, requests: Sequence[Any]) -> list[tuple[np.ndarray, dict[str, float]]]:
        """B ``guidance: bid`` requests (``policies.batched.BatchRequest``) in two sampling calls, the N
        strong chunks of every request in one and the N weak ones in the other, then each request's
        ``bid_select``: (chunk, report) per request. A request's ``noise`` is what ``_bid_noise``
        takes; without it the draws come from this policy's generator, request by request. Each
        chunk is the request's ``guided_inference`` on the same draws, to float tolerance (the
        batched products sum in another order, so a near tie between two samples may choose the
        other)."""
        m, n = self.metadata, self.bid_samples
        if self.weak is None:
            raise ValueError("flow policy: guidance=bid needs a weak checkpoint (policy.bid_weak_checkpoint)")
        if not requests:
            return []
        tensors = [self._tensors(req.inp) for req in requests]
        draws = [self._bid_noise(req.noise) for req in requests]
        state, images = torch.cat([s for s, _ in tensors]), torch.cat([im for _, im in tensors])
        with torch.inference_mode():
            prefix = self._encode_tensors(state, images).repeat(n)
            strong_noise = torch.cat([d[:n] for d in draws])
            strong = euler_sample(self._velocity_fn(prefix), strong_noise, self.num_steps).float().cpu().numpy()
        weak = self.weak.sample(state, images, torch.cat([d[n:] for d in draws]), self.num_steps, self._autocast, n)
        out = []
        for i, req in enumerate(requests):
            g, rows = req.guide, slice(i * n, (i + 1) * n)
            prev = padded_prev(g.prev_model, m.chunk_size, m.action_dim, "prev_chunk")
            weights = prefix_weights(m.chunk_size, int(g.delay_ticks), int(g.execute_horizon), g.schedule)
            out.append(_bid_choice(strong[rows], prev, weights, weak[rows]))
        return out

    def _prefix_conditioned(
        self, obs: PolicyInput, prev: np.ndarray, delay: int, execute_horizon: int, noise: np.ndarray | None
    ) -> np.ndarray:
        """``guidance: trained``: the first ``d`` actions of ``prev`` given clean, ``d`` = the delay
        clipped to the guided region (``H - s``) and to the longest prefix seen in training."""
        m, d_max = self.metadata, self.model.cfg.train_prefix_max
        if not m.supports_trained:
            raise ValueError(
                f"flow policy: guidance=trained needs a checkpoint trained with action-prefix "
                f"conditioning (model.train_prefix_max > 0); {self.checkpoint} has none"
            )
        d = max(0, min(delay, m.chunk_size - execute_horizon, d_max))
        if delay > d_max and not self._warned_prefix:
            logger.warning(
                "flow policy: delay %d > the longest prefix trained (%d): conditioning on %d actions", delay, d_max, d
            )
            self._warned_prefix = True
        with torch.inference_mode():
            prefix = self._encode_prefix(obs)
            y = torch.from_numpy(prev).to(self.device)[None]
            a = prefix_conditioned_sample(self._velocity_fn(prefix), self._noise(noise), y, d, self.num_steps)
        return a[0].float().cpu().numpy()

    def guided_inference_batch(self, requests: Sequence[Any]) -> list[np.ndarray]:
        """B requests (``policies.batched.BatchRequest``: model-space input, ``Guide``, optional
        noise) in ONE sampling call: the observations encoded as one batch, one
        network call per Euler step and one reverse pass per step for all VJP rows. Each chunk equals
        its request's ``guided_inference`` (same noise) to float tolerance; see ``policies.batched``."""
        from policies.batched import batched_guided_sample, finish_blends, plan_batch

        m = self.metadata
        if not requests:
            return []
        plan = plan_batch(requests, m.chunk_size, m.action_dim, self.model.cfg.train_prefix_max)
        tensors = [self._tensors(req.inp) for req in requests]
        noise = torch.randn((len(requests), m.chunk_size, m.action_dim), generator=self._generator, device=self.device)
        for i, req in enumerate(requests):
            if req.noise is not None:
                noise[i] = torch.as_tensor(np.asarray(req.noise, np.float32), device=self.device).reshape(
                    m.chunk_size, m.action_dim
                )
        dev = self.device
        with torch.no_grad():
            prefix = self._encode_tensors(torch.cat([s for s, _ in tensors]), torch.cat([im for _, im in tensors]))
            a = batched_guided_sample(
                self._velocity_fn(prefix),
                noise,
                torch.from_numpy(plan.prev).to(dev),
                torch.from_numpy(plan.weights).to(dev),
                torch.from_numpy(plan.betas).to(dev),
                torch.from_numpy(plan.clean).to(dev),
                self.num_steps,
                torch.from_numpy(plan.identity).to(dev),
            )
        return finish_blends(a.float().cpu().numpy(), plan)


def _bid_choice(
    strong: np.ndarray, prev: np.ndarray, weights: np.ndarray, weak: np.ndarray
) -> tuple[np.ndarray, dict[str, float]]:
    """``bid_select``'s chunk among the N strong samples, and the report that goes with it."""
    choice = bid_select(strong, prev, weights, weak)
    return strong[choice.index], {
        "bid_index": float(choice.index),
        "bid_backward": float(choice.backward[choice.index]),
        "bid_forward": float(choice.forward[choice.index]),
    }
