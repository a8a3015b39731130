"""The remote half of split mode: a Ray actor on the ``inference_pc`` node that owns the policy.

It is the RTC inference process without the shared memory: it builds the policy *in its own
process* (``PolicyRunner.from_run``, CUDA there), and per request decodes the observation and runs
the runner with the ``prev``/``d``/``s`` the control side's ``RTCPlanner`` cut (or a plain predict for
an episode's first chunk), returning the chunk in model and robot space with its own timing. It
keeps no RTC state, so the delay the control side measures includes the network both ways.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from collections.abc import Mapping
from typing import Any

from algorithms.wire import chunk_reply, decode_request
from policies.base import policy_info
from policies.runner import PolicyRunner

log = logging.getLogger(__name__)


class InferenceServer:
    def __init__(self, run: Any) -> None:
        from robots import gl

        gl.select_backend()  # MUJOCO_GL before anything imports mujoco (policies may render)

        self.run = run
        self.runner = PolicyRunner.from_run(run)
        self.startup_s = self.runner.startup_s
        self.requests = 0
        log.info("split inference actor %d ready (policy built and warmed up in %.2f s)", os.getpid(), self.startup_s)

    def ready(self) -> dict[str, Any]:
        import ray

        return {
            "node_id": ray.get_runtime_context().get_node_id(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "startup_s": self.startup_s,
        }

    def infer(self, request: Mapping[str, Any]) -> dict[str, Any]:
        """One chunk. ``request``: ``algorithms.wire.encode_request`` (the observation, and the guide: None for a
        plain predict). Returns model/robot chunks (float32), ``server_ms`` / ``policy_ms`` (time
        inside this call / inside the policy) and ``info``, what the policy reported with the chunk
        (``last_info``, e.g. bidirectional decoding's choice)."""
        t0 = time.perf_counter()
        state, images, info, guide = decode_request(request)
        result = self.runner.infer_observation(state, images, info, guide)
        self.requests += 1
        return chunk_reply(
            request.get("seq"),
            result.model,
            result.robot,
            result.policy_ms,
            (time.perf_counter() - t0) * 1e3,
            policy_info(self.runner.policy),
        )
