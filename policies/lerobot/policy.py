"""``policy=lerobot``: a LeRobot pretrained directory (``save_pretrained``) run by this engine.

LeRobot 0.6 needs Python >= 3.12 and torch < 2.12, so it usually lives in another interpreter than the
engine (``policy.python``: the interpreter of an environment with ``lerobot`` installed). Where this
class runs decides how the checkpoint runs:

- in an interpreter that imports ``lerobot`` (the RTC inference process started with ``policy.python``,
  or an engine installed into a LeRobot environment): in process (``runtime.LeRobotRuntime``);
- otherwise (the sequential loop, lockstep evaluation, the policy server in our venv): through a policy
  host process under ``policy.python`` (``proxy.HostProxy``), over a pair of pipes.

Either way the checkpoint's own saved pre/post-processors normalize, so the engine's normalizer is the
identity and chunks cross in robot space. What the checkpoint takes is read from its ``config.json``
(``features.CheckpointSpec``): the state, the images (our camera -> ``observation.images.<key>`` by name
or ``camera_map``), the prompt for language-conditioned policies (``policy.prompt``). A checkpoint that
needs what the robot does not provide is one ``config error: policy.path: ...`` line at start
(:meth:`LeRobotPolicy.preflight`), as is guidance its kind cannot do (``features.GUIDANCE_BY_KIND``;
``policy.algorithm_guidance`` carries ``algorithm.guidance`` into that check).
"""

from __future__ import annotations

import importlib.util
import logging
import re
import sys
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from policies.base import PolicyInput, PolicyMetadata
from policies.control_rate import ControlRate
from policies.lerobot.features import CheckpointError, CheckpointSpec, checkpoint_rate
from policies.registry import POLICY_REGISTRY
from services.errors import ConfigError
from services.knobs import NonNegativeInt, PositiveInt
from services.lerobot_python import probe_python, resolve_python

log = logging.getLogger(__name__)

# the engine's code that runs in LeRobot's interpreter when this one cannot import lerobot
RUNTIME_MODULE = "policies.lerobot.runtime"
DEVICE = re.compile(r"cpu|mps|cuda(:\d+)?")  # torch devices a LeRobot policy runs on


def lerobot_here() -> bool:
    """Whether this interpreter can import lerobot (then the policy runs in process)."""
    return sys.version_info >= (3, 12) and importlib.util.find_spec("lerobot") is not None


@POLICY_REGISTRY.register("lerobot")
class LeRobotPolicy:
    def __init__(
        self,
        path: str,
        chunk_size: int,
        action_dim: int,
        state_dim: int,
        camera_names: Sequence[str] = (),
        camera_map: Mapping[str, str] | None = None,
        python: str | None = None,
        prompt: str = "",
        device: str = "cpu",
        seed: NonNegativeInt = 0,
        num_inference_steps: PositiveInt | None = None,
        threads: PositiveInt | None = None,
        algorithm_guidance: str | None = None,
    ) -> None:
        spec = CheckpointSpec.read(path)
        cams = spec.check(
            state_dim=state_dim,
            action_dim=action_dim,
            chunk_size=chunk_size,
            camera_names=tuple(camera_names),
            camera_map=camera_map,
        )
        self.spec = spec
        self.camera_keys = cams
        self.seed = int(seed)
        self.metadata = PolicyMetadata(
            chunk_size=int(chunk_size),
            action_dim=int(action_dim),
            state_dim=int(state_dim),
            camera_names=tuple(cams),
            supports_vjp=spec.kind == "flow",
        )
        kwargs = dict(
            path=str(spec.root),
            camera_keys=cams,
            chunk_size=int(chunk_size),
            prompt=str(prompt or ""),
            device=str(device),
            seed=int(seed),
            num_inference_steps=num_inference_steps,
        )
        if lerobot_here():
            from policies.lerobot.runtime import LeRobotRuntime

            if threads:
                import torch

                torch.set_num_threads(int(threads))
            self.backend: Any = LeRobotRuntime(**kwargs)
            self.where = "in process"
        else:
            interpreter = resolve_python(python)
            if interpreter is None:
                raise ValueError(
                    "policy.python: lerobot is not importable in this interpreter; set policy.python to "
                    "the python of an environment with lerobot 0.6 (e.g. .venvs/lerobot/bin/python)"
                )
            from policies.lerobot.proxy import HostProxy

            if threads is None and "torch" in sys.modules:
                threads = sys.modules["torch"].get_num_threads()  # the runner's cap for this process, if any
            self.backend = HostProxy(interpreter, kwargs, threads=threads)
            self.where = f"host process {self.backend.pid} ({interpreter})"
        log.info("lerobot %s checkpoint %s: %s", spec.type, spec.root, self.where)

    # ------------------------------------------------------------------ start-time checks
    @classmethod
    def trained_control_hz(cls, node: Mapping[str, Any]) -> ControlRate | None:
        """The rate the checkpoint was trained at (its train_config.json: ``env.fps`` or the dataset's
        ``fps``), compared with ``robot.hz`` at start; None when the files on this machine do not say."""
        return checkpoint_rate(str(node.get("path")))

    @classmethod
    def preflight(cls, node: Mapping[str, Any], path: str) -> None:
        """The checkpoint fits the robot (state, action, cameras, chunk), the guidance asked for is one its
        kind does, and an interpreter that imports lerobot is there: else one ConfigError naming the key."""
        try:
            spec = CheckpointSpec.read(str(node.get("path")))
            spec.check(
                state_dim=int(node.get("state_dim", 0)),
                action_dim=int(node.get("action_dim", 0)),
                chunk_size=int(node.get("chunk_size", 0)),
                camera_names=tuple(node.get("camera_names") or ()),
                camera_map=node.get("camera_map"),
            )
        except CheckpointError as exc:
            raise ConfigError(f"{path}.path: {exc}") from None
        device = str(node.get("device", "cpu"))
        if not DEVICE.fullmatch(device):
            raise ConfigError(
                f"{path}.device: {device!r}; expected cpu, cuda, cuda:<N> or mps (a torch device in "
                "LeRobot's interpreter)"
            )
        guidance = node.get("algorithm_guidance")
        if guidance is not None and str(guidance) not in spec.guidance:
            raise ConfigError(
                f"algorithm.guidance: algorithm.guidance={guidance} is not available for the {spec.type} "
                f"checkpoint {spec.root} (a {spec.type} policy supports {', '.join(spec.guidance)})"
            )
        if lerobot_here():
            return
        python = resolve_python(node.get("python"))
        if python is None:
            raise ConfigError(
                f"{path}.python: lerobot is not importable in this interpreter ({sys.executable}); set "
                "policy.python to the python of an environment with lerobot 0.6 "
                "(`make lerobot-env` builds .venvs/lerobot)"
            )
        try:
            probe_python(python, RUNTIME_MODULE)
        except ValueError as exc:
            raise ConfigError(f"{path}.python: {exc}") from None

    # ------------------------------------------------------------------ Policy protocol
    def _obs(self, obs: PolicyInput) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        from policies.openpi.obs_map import images_to_uint8

        images = images_to_uint8({c: obs.images[c] for c in self.metadata.camera_names})
        return np.asarray(obs.state, np.float32), images

    def predict(self, obs: PolicyInput) -> np.ndarray:
        return self.backend.predict(*self._obs(obs))

    def guided_inference(
        self,
        obs: PolicyInput,
        prev_chunk: np.ndarray,
        delay: int,
        execute_horizon: int,
        guidance: str = "vjp",
        schedule: str = "exp",
        max_guidance_weight: float = 5.0,
        mode: str = "ours",
    ) -> np.ndarray:
        state, images = self._obs(obs)
        return self.backend.guided(
            state,
            images,
            np.asarray(prev_chunk, np.float32),
            delay=int(delay),
            execute_horizon=int(execute_horizon),
            guidance=str(guidance),
            schedule=str(schedule),
            max_guidance_weight=float(max_guidance_weight),
            mode=mode,
        )

    def reset_noise(self, seed: int) -> None:
        self.backend.reset_noise(int(seed))

    def warmup(self) -> None:
        """One unguided and (for guidable kinds) one guided chunk on a blank observation; noise restored."""
        H = self.metadata.chunk_size
        blank = PolicyInput(
            state=np.zeros((1, self.metadata.state_dim), np.float32),
            images={c: np.zeros((1, 3, *self.spec.images[k][1:]), np.float32) for c, k in self.camera_keys.items()},
        )
        chunk = self.predict(blank)
        self.guided_inference(blank, chunk, min(1, H), max(0, H - 1), "vjp" if self.metadata.supports_vjp else "blend")
        self.reset_noise(self.seed)

    def freeze(self) -> None:
        self.backend.freeze()

    def close(self) -> None:
        close = getattr(self.backend, "close", None)
        if close is not None:
            close()
