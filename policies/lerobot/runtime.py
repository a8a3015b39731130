"""A LeRobot checkpoint, loaded with LeRobot's own code, run one chunk at a time (needs lerobot importable).

This module runs in an interpreter that has LeRobot 0.6 (Python >= 3.12): the policy host process
(``policies/lerobot/host.py``) or an RTC inference process started with ``policy.python``. It loads the
checkpoint the way LeRobot does (``PreTrainedConfig.from_pretrained``, the policy class's
``from_pretrained``, ``make_pre_post_processors(cfg, pretrained_path=...)``), so the checkpoint's saved
processor pipelines normalize the observation and unnormalize the chunk: no statistics are re-derived.

Spaces: the engine hands this runtime robot-space observations and gets robot-space actions back (its
normalizer is the identity, as for openpi). Guidance works in LeRobot's model space: the previous chunk
goes through the *preprocessor's* own normalizer step (its action statistics) before it becomes a target.

Guidance by kind (``features.GUIDANCE_BY_KIND``):

- flow (pi0, pi0.5, SmolVLA): these sample with ``lerobot.policies.common.flow_matching.euler_integrate``
  (openpi's convention, t = 1 noise -> 0 data). While one chunk is sampled, the name ``euler_integrate``
  in the policy's modeling module points at :class:`FlowIntegrator`, which receives the model's own
  denoising closure (prefix KV cache included) and integrates it with our sampler
  (``policies.guidance``: unguided Euler, or RTC's VJP guidance through that closure), in our time
  convention ``v_ours(A, tau) = -v_lerobot(A, t = 1 - tau)``; or, for comparison, with LeRobot's own
  ``RTCProcessor`` (``mode="lerobot_rtc"``). The noise comes from this runtime's generator in every mode.
- blend (ACT: one forward pass, no sampler; Diffusion: a DDPM/DDIM sampler over an epsilon model, whose
  inpainting we have not made honest): ``W * prev + (1 - W) * new`` after sampling, in model space.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from policies.guidance import euler_sample, guided_euler_sample, prefix_weights
from policies.lerobot.features import STATE_KEY, CheckpointSpec

log = logging.getLogger(__name__)

MODES = ("ours", "lerobot_rtc")


class FlowIntegrator:
    """Stands in for LeRobot's ``euler_integrate`` during one sample: our noise, our (guided) Euler loop."""

    def __init__(
        self,
        original: Any,
        noise: torch.Tensor,
        target: torch.Tensor | None = None,
        weights: np.ndarray | None = None,
        beta: float = 0.0,
        mode: str = "ours",
        delay: int = 0,
        execute_horizon: int = 0,
    ) -> None:
        self.original, self.noise, self.target, self.weights = original, noise, target, weights
        self.beta, self.mode, self.delay, self.execute_horizon = float(beta), mode, int(delay), int(execute_horizon)
        self.calls = 0

    def __call__(self, denoise_fn: Any, noise: torch.Tensor, num_steps: int, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        if tuple(noise.shape) != tuple(self.noise.shape):
            raise ValueError(
                f"model samples noise of shape {tuple(noise.shape)}, runtime drew {tuple(self.noise.shape)}"
            )
        x1 = self.noise.to(device=noise.device, dtype=noise.dtype)
        if self.mode == "lerobot_rtc":
            # LeRobot's own RTC: its processor wraps the same denoiser (t = 1 -> 0, identity Jacobian)
            return self.original(
                denoise_fn,
                x1,
                num_steps,
                rtc_processor=kwargs.get("rtc_processor"),
                rtc_enabled=self.target is not None,
                inference_delay=self.delay,
                prev_chunk_left_over=self.target,
                execution_horizon=self.execute_horizon,
            )
        batch = x1.shape[0]

        def velocity(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            t = (1.0 - tau).to(dtype=torch.float32).reshape(()).expand(batch)
            return -denoise_fn(a, t).to(a.dtype)

        if self.target is None:
            with torch.no_grad():
                return euler_sample(velocity, x1, int(num_steps))
        return guided_euler_sample(velocity, x1, self.target.to(x1), self.weights, int(num_steps), self.beta)


class LeRobotRuntime:
    """One LeRobot policy + its saved pipelines; chunks in robot space, float32 ``(chunk_size, action_dim)``."""

    def __init__(
        self,
        path: str,
        camera_keys: Mapping[str, str],
        chunk_size: int,
        prompt: str = "",
        device: str = "cpu",
        seed: int = 0,
        num_inference_steps: int | None = None,
    ) -> None:
        from lerobot.configs.policies import PreTrainedConfig
        from lerobot.policies.factory import get_policy_class, make_pre_post_processors

        self.spec = CheckpointSpec.read(path)
        self.camera_keys = dict(camera_keys)
        self.chunk_size = int(chunk_size)
        self.prompt = prompt
        self.device = torch.device(device)
        cfg = PreTrainedConfig.from_pretrained(path)
        cfg.device = str(self.device)
        if num_inference_steps is not None:
            for key in ("num_steps", "num_inference_steps"):
                if hasattr(cfg, key):
                    setattr(cfg, key, int(num_inference_steps))
        self.cfg = cfg
        self.policy = get_policy_class(cfg.type).from_pretrained(path, config=cfg)
        self.policy.to(self.device).eval()
        self.pre, self.post = make_pre_post_processors(
            cfg, pretrained_path=path, preprocessor_overrides={"device_processor": {"device": str(self.device)}}
        )
        self._action_norm = next((s for s in self.pre.steps if type(s).__name__ == "NormalizerProcessorStep"), None)
        self._modeling = importlib.import_module(type(self.policy).__module__)
        self._generator = torch.Generator(device="cpu").manual_seed(int(seed))
        self.last_model: np.ndarray | None = None
        log.info(
            "lerobot %s policy from %s (%d params, device %s)",
            cfg.type,
            path,
            sum(p.numel() for p in self.policy.parameters()),
            self.device,
        )

    # ------------------------------------------------------------------ observation -> batch
    def batch(self, state: np.ndarray, images: Mapping[str, np.ndarray]) -> dict[str, Any]:
        """Our robot-space observation -> the checkpoint's keys, through its preprocessor.

        state: (T, state_dim) float32; images: camera -> (N, 3, H, W) uint8 (the newest frame is used,
        resized to the checkpoint's declared size where it differs).
        """
        state = np.asarray(state, np.float32)
        obs: dict[str, Any] = {}
        if self.spec.state_dim is not None:
            obs[STATE_KEY] = torch.from_numpy(np.ascontiguousarray(state[-1]))
        for cam, key in self.camera_keys.items():
            frame = torch.from_numpy(np.ascontiguousarray(np.asarray(images[cam])[-1])).float().div_(255.0)
            c, h, w = self.spec.images[key]
            if tuple(frame.shape[-2:]) != (h, w):
                frame = torch.nn.functional.interpolate(frame[None], size=(h, w), mode="bilinear", align_corners=False)[
                    0
                ]
            obs[key] = frame
        if self.spec.uses_language:
            obs["task"] = self.prompt
        return self.pre(obs)

    def _normalize_actions(self, chunk: np.ndarray) -> torch.Tensor:
        t = torch.as_tensor(np.asarray(chunk, np.float32))[None].to(self.device)
        if self._action_norm is None:
            return t
        return self._action_norm._normalize_action(t, inverse=False)

    def _finish(self, actions: torch.Tensor) -> np.ndarray:
        self.last_model = actions.detach().float().cpu().numpy()[0, : self.chunk_size]
        out = self.post(actions)
        robot = out.detach().float().cpu().numpy()[0, : self.chunk_size]
        if robot.shape != (self.chunk_size, self.spec.action_dim):
            raise ValueError(
                f"{self.spec.type} returned a chunk of shape {robot.shape}; expected "
                f"({self.chunk_size}, {self.spec.action_dim})"
            )
        return np.ascontiguousarray(robot, dtype=np.float32)

    # ------------------------------------------------------------------ sampling
    def _flow_noise(self) -> torch.Tensor:
        cfg = self.cfg
        shape = (1, int(cfg.chunk_size), int(getattr(cfg, "max_action_dim", self.spec.action_dim)))
        return torch.randn(shape, generator=self._generator, dtype=torch.float32).to(self.device)

    @contextlib.contextmanager
    def _integrator(self, integrator: FlowIntegrator):
        original = self._modeling.euler_integrate
        self._modeling.euler_integrate = integrator
        try:
            yield integrator
        finally:
            self._modeling.euler_integrate = original

    def _sample(self, batch: dict[str, Any], integrator: FlowIntegrator | None = None) -> torch.Tensor:
        if self.spec.kind != "flow":
            with torch.no_grad():
                return self.policy.predict_action_chunk(self._stack_obs(batch))
        integrator = integrator or FlowIntegrator(self._modeling.euler_integrate, self._flow_noise())
        with self._integrator(integrator):
            if integrator.mode == "lerobot_rtc" and integrator.target is not None:
                out = self.policy.predict_action_chunk(
                    batch,
                    inference_delay=integrator.delay,
                    prev_chunk_left_over=integrator.target,
                    execution_horizon=integrator.execute_horizon,
                )
            else:
                out = self.policy.predict_action_chunk(batch)
        if integrator.calls != 1:
            raise RuntimeError(
                f"{self.spec.type}: expected one call of euler_integrate per chunk, saw {integrator.calls}"
            )
        return out

    def _stack_obs(self, batch: dict[str, Any]) -> dict[str, Any]:
        """Diffusion takes ``n_obs_steps`` observations (B, T, ...): the newest, repeated, as LeRobot's own
        queue does on an episode's first step (the engine keeps one frame per camera)."""
        n = self.spec.n_obs_steps
        if self.spec.type != "diffusion":
            return batch
        out = dict(batch)
        for key in [STATE_KEY, *self.spec.images]:
            if key in out:
                out[key] = out[key].unsqueeze(1).expand(-1, n, *out[key].shape[1:])
        out["observation.images"] = torch.stack([out[k] for k in self.spec.images], dim=-4)
        if hasattr(self.policy, "reset"):
            self.policy.reset()  # empty queues: predict_action_chunk uses this batch as given
        return out

    def predict(self, state: np.ndarray, images: Mapping[str, np.ndarray]) -> np.ndarray:
        return self._finish(self._sample(self.batch(state, images)))

    def guided(
        self,
        state: np.ndarray,
        images: Mapping[str, np.ndarray],
        prev: np.ndarray,
        delay: int,
        execute_horizon: int,
        guidance: str = "vjp",
        schedule: str = "exp",
        max_guidance_weight: float = 5.0,
        mode: str = "ours",
    ) -> np.ndarray:
        """A chunk continuing ``prev`` (robot space, (chunk_size, action_dim), zero-padded by the engine)."""
        if guidance == "none":
            return self.predict(state, images)
        if guidance not in self.spec.guidance:
            raise ValueError(
                f"guidance={guidance} is not available for a {self.spec.type} policy "
                f"(it supports {', '.join(self.spec.guidance)})"
            )
        if mode not in MODES:
            raise ValueError(f"mode={mode!r}; expected one of {MODES}")
        H = self.chunk_size
        execute_horizon = min(int(execute_horizon), H)
        weights = prefix_weights(H, int(delay), execute_horizon, schedule)
        batch = self.batch(state, images)
        prev = np.asarray(prev, np.float32)
        prev_model = self._normalize_actions(prev)  # (1, H, A) model space
        if guidance == "blend":
            new = self._sample(batch)[:, :H]
            w = torch.as_tensor(weights, dtype=new.dtype, device=new.device)[None, :, None]
            return self._finish(w * prev_model + (1.0 - w) * new)
        noise = self._flow_noise()
        model_h, model_a = noise.shape[1], noise.shape[2]
        target = torch.zeros((1, model_h, model_a), dtype=torch.float32, device=self.device)
        target[:, :H, : prev_model.shape[-1]] = prev_model
        model_w = np.zeros(model_h, np.float32)
        model_w[:H] = weights
        target[:, model_w == 0] = 0.0
        if not torch.isfinite(target).all():
            raise ValueError("previous chunk is not finite in model space")
        integrator = FlowIntegrator(
            self._modeling.euler_integrate,
            noise,
            target,
            model_w,
            max_guidance_weight,
            mode,
            delay=int(delay),
            execute_horizon=max(H - execute_horizon, int(delay)),
        )
        if mode == "lerobot_rtc":
            self._ensure_lerobot_rtc(schedule, max_guidance_weight, H - execute_horizon)
            integrator.target = target[:, :H]
        return self._finish(self._sample(batch, integrator))

    def _ensure_lerobot_rtc(self, schedule: str, beta: float, horizon: int) -> None:
        """LeRobot's own RTC processor on the policy (``rtc_config`` + ``init_rtc_processor``)."""
        from lerobot.policies.rtc.configuration_rtc import RTCConfig

        sched = {"exp": "EXP", "linear": "LINEAR", "ones": "ONES", "zeros": "ZEROS"}[schedule]
        from lerobot.configs import RTCAttentionSchedule

        self.policy.config.rtc_config = RTCConfig(
            enabled=True,
            prefix_attention_schedule=RTCAttentionSchedule[sched],
            max_guidance_weight=float(beta),
            execution_horizon=int(horizon),
        )
        self.policy.init_rtc_processor()

    def reset_noise(self, seed: int) -> None:
        self._generator.manual_seed(int(seed))

    def freeze(self) -> None:
        self.policy.eval()
        for p in self.policy.parameters():
            p.requires_grad_(False)
