"""The remote half of split mode: a Ray actor on the ``inference_pc`` node that owns the policy.

It is the RTC inference process without the shared memory: it builds the policy *in its own
process* (``run.make_policy()``, CUDA there), and per request decodes the observation, runs
``guided_inference`` with the ``prev``/``d``/``s`` the control side cut with the shared chunk logic
(or a plain ``predict`` for an episode's first chunk) and returns the chunk in model and robot space
with its own timing. It keeps no RTC state: the control loop owns the scheduler and the delay
estimator, so the delay it measures includes the network both ways.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any, Mapping

import numpy as np

from algorithms.split.codec import decode_observation

log = logging.getLogger(__name__)


class InferenceServer:
    def __init__(self, run: Any) -> None:
        from robots import gl  # noqa: F401 - MUJOCO_GL before anything imports mujoco (policies may render)

        t0 = time.monotonic()
        self.run = run
        self.policy = run.make_policy()
        self.normalizer = run.make_normalizer()
        self.policy.freeze()
        self.policy.warmup()
        self.startup_s = time.monotonic() - t0
        self.requests = 0
        log.info("split inference actor %d ready (policy built and warmed up in %.2f s)", os.getpid(), self.startup_s)

    def ready(self) -> dict[str, Any]:
        import ray

        return {"node_id": ray.get_runtime_context().get_node_id(), "pid": os.getpid(),
                "host": socket.gethostname(), "startup_s": self.startup_s}

    def infer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One chunk. ``request``: obs (codec payload), prev (H, A) model space or None, s, d, guidance,
        schedule, max_guidance_weight. Returns model/robot chunks (float32) and ``server_ms`` /
        ``policy_ms`` (time inside this call / inside the policy)."""
        t0 = time.perf_counter()
        state, images, info = decode_observation(request["obs"])
        inp = self.normalizer.policy_input(state, images, info)
        t_policy = time.perf_counter()
        prev = request.get("prev")
        if prev is not None:
            model = self.policy.guided_inference(
                inp, np.asarray(prev, np.float32), int(request["d"]), int(request["s"]),
                guidance=request["guidance"], schedule=request["schedule"],
                max_guidance_weight=float(request["max_guidance_weight"]),
            )
        else:
            model = self.policy.predict(inp)
        policy_ms = (time.perf_counter() - t_policy) * 1e3
        model = np.asarray(model, dtype=np.float32)
        robot = np.asarray(self.normalizer.action_to_robot(model), dtype=np.float32) if model.ndim == 2 else model
        self.requests += 1
        return {"model": model, "robot": robot, "policy_ms": policy_ms,
                "server_ms": (time.perf_counter() - t0) * 1e3, "seq": self.requests}
