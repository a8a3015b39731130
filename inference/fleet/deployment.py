"""The Serve deployment: one replica = one model copy + one batcher, holding no robot state.

Requests from any robot enter ``__call__`` (stamped), wait in Serve's batch queue
(``@serve.batch``: up to ``max_batch_size`` requests, at most ``batch_wait_timeout_s`` for the first
one) and are answered by ONE guided sampling call for the whole batch (``policies.batched``: each
row keeps its own delay, horizon, previous chunk and guidance). The policy runs in one worker
thread, so the replica's event loop keeps admitting (and stamping) requests while a batch
computes: the next batch forms during the current one.

Observability: each reply carries its queue wait, batch size and compute time; the replica keeps a
batch-size histogram and per-robot counts (``stats()``) and exports Serve metrics (Prometheus, via
the Ray dashboard agent): ``fleet_batch_size``, ``fleet_queue_ms``, ``fleet_compute_ms`` histograms
and ``fleet_requests``/``fleet_overloaded`` counters, tagged by replica.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import socket
import time
from collections import Counter
from collections.abc import Mapping
from typing import Any

import numpy as np
from ray import serve

from algorithms.wire import OVERLOADED, REFUSED, chunk_reply, decode_request, error_reply
from policies.base import GUIDANCE_CAPABILITY
from policies.batched import BatchRequest, infer_batch

log = logging.getLogger(__name__)


def _bounds(lo: float, hi: float, n: int) -> list[float]:
    return [float(x) for x in np.geomspace(lo, hi, n)]


class FleetReplica:
    """One replica. ``cfg``: the resolved run config as a plain dict (its ``policy``, ``cameras``
    and normalizer keys build the policy here, on the replica's node); ``fleet``: the service knobs
    (``FleetConfig`` as a dict)."""

    def __init__(self, cfg: Mapping[str, Any], fleet: Mapping[str, Any]) -> None:
        from omegaconf import OmegaConf

        from inference.run import make_normalizer, make_policy
        from policies.runner import PolicyRunner
        from robots import gl

        gl.select_backend()
        self.fleet = dict(fleet)
        conf = OmegaConf.create(dict(cfg))
        if self.fleet.get("device", "auto") != "auto" and "device" in conf.policy:
            conf.policy.device = self.fleet["device"]  # the replica's node decides, not the robot's config
        self.runner = PolicyRunner.build(
            lambda: make_policy(conf), lambda: make_normalizer(conf), self.fleet.get("torch_threads")
        )
        self.batched = callable(getattr(self.runner.policy, "guided_inference_batch", None))
        self._batched_call.set_max_batch_size(int(self.fleet["max_batch_size"]))
        self._batched_call.set_batch_wait_timeout_s(float(self.fleet["batch_wait_timeout_s"]))
        self.max_queue_wait_s = float(self.fleet["max_queue_wait_s"])
        self._pool = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="fleet-policy")
        self.replica = f"{socket.gethostname()}:{os.getpid()}"
        self.batch_sizes: Counter[int] = Counter()
        self.per_robot: Counter[str] = Counter()
        self.requests = self.overloaded = self.batches = 0
        self.started_at = time.monotonic()
        self._metrics()
        log.info(
            "fleet replica %s ready: %s, batched=%s, max batch %d, wait %.1f ms",
            self.replica,
            type(self.runner.policy).__name__,
            self.batched,
            self.fleet["max_batch_size"],
            1e3 * float(self.fleet["batch_wait_timeout_s"]),
        )

    def _metrics(self) -> None:
        try:
            from ray.serve import metrics
        except ImportError:  # pragma: no cover
            self._m = None
            return
        tags = ("replica_host",)
        self._m = {
            "batch": metrics.Histogram(
                "fleet_batch_size",
                "requests per batched policy call",
                boundaries=[float(b) for b in range(1, 65)],
                tag_keys=tags,
            ),
            "queue": metrics.Histogram(
                "fleet_queue_ms",
                "wait in the replica before the batch started",
                boundaries=_bounds(0.1, 5000, 24),
                tag_keys=tags,
            ),
            "compute": metrics.Histogram(
                "fleet_compute_ms", "one batched policy call", boundaries=_bounds(0.1, 5000, 24), tag_keys=tags
            ),
            "requests": metrics.Counter("fleet_requests", "requests answered", tag_keys=tags),
            "overloaded": metrics.Counter("fleet_overloaded", "requests shed as overloaded", tag_keys=tags),
        }
        for m in self._m.values():
            m.set_default_tags({"replica_host": self.replica})

    # ------------------------------------------------------------------ the API
    async def __call__(self, request: dict[str, Any]) -> dict[str, Any]:
        """One robot's request -> its chunk (or a named error) with timings."""
        request["_t_enter"] = time.monotonic()
        return await self._batched_call(request)

    def stats(self) -> dict[str, Any]:
        """This replica's numbers: batch-size histogram, per-robot request counts, sheds."""
        return {
            "replica": self.replica,
            "requests": self.requests,
            "batches": self.batches,
            "overloaded": self.overloaded,
            "batch_sizes": dict(sorted(self.batch_sizes.items())),
            "per_robot": dict(self.per_robot),
            "uptime_s": time.monotonic() - self.started_at,
            "batched": self.batched,
            "max_batch_size": int(self.fleet["max_batch_size"]),
        }

    def metadata(self) -> dict[str, Any]:
        """What a robot checks at start: the policy's chunk shape and guidance support."""
        m = self.runner.metadata
        return {
            "chunk_size": int(m.chunk_size),
            "action_dim": int(m.action_dim),
            "state_dim": int(m.state_dim),
            "camera_names": list(m.camera_names),
            "supports_vjp": bool(m.supports_vjp),
            **{flag: bool(getattr(m, flag, False)) for flag in GUIDANCE_CAPABILITY.values()},
            "policy": type(self.runner.policy).__name__,
            "batched": self.batched,
            "replica": self.replica,
        }

    def check_health(self) -> None:
        """Serve's health check: the worker thread must be alive (raises otherwise)."""
        if self._pool._shutdown:  # noqa: SLF001 - no public flag
            raise RuntimeError("policy worker is shut down")

    # ------------------------------------------------------------------ batching
    @serve.batch(max_batch_size=8, batch_wait_timeout_s=0.005)
    async def _batched_call(self, requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
        t_batch = time.monotonic()
        replies: list[dict[str, Any] | None] = [None] * len(requests)
        rows: list[int] = []
        batch: list[BatchRequest] = []
        for i, req in enumerate(requests):
            queue_ms = (t_batch - req["_t_enter"]) * 1e3
            if queue_ms > 1e3 * self.max_queue_wait_s:
                self.overloaded += 1
                if self._m:
                    self._m["overloaded"].inc()
                replies[i] = error_reply(
                    f"fleet service overloaded: the request waited {queue_ms:.0f} ms in replica {self.replica} "
                    f"(> fleet.max_queue_wait_s={self.max_queue_wait_s:g} s)",
                    OVERLOADED,
                    queue_ms=queue_ms,
                    batch_size=0,
                    policy_ms=0.0,
                    server_ms=queue_ms,
                    replica=self.replica,
                )
                continue
            try:
                batch.append(self._row(req))
                rows.append(i)
            except (KeyError, ValueError, TypeError) as exc:
                replies[i] = error_reply(
                    f"fleet request refused: {type(exc).__name__}: {exc}",
                    REFUSED,
                    queue_ms=queue_ms,
                    batch_size=0,
                    policy_ms=0.0,
                    server_ms=queue_ms,
                    replica=self.replica,
                )
        if batch:
            loop = asyncio.get_running_loop()
            results = await loop.run_in_executor(self._pool, infer_batch, self.runner, batch)
            t_done = time.monotonic()
            self.batches += 1
            self.batch_sizes[len(batch)] += 1
            if self._m:
                self._m["batch"].observe(len(batch))
                self._m["compute"].observe(results[0].policy_ms)
            for i, res in zip(rows, results):
                req = requests[i]
                queue_ms = (t_batch - req["_t_enter"]) * 1e3
                timings = dict(queue_ms=queue_ms, batch_size=len(batch), replica=self.replica)
                server_ms = (t_done - req["_t_enter"]) * 1e3
                self.requests += 1
                self.per_robot[str(req.get("robot", "?"))] += 1
                if self._m:
                    self._m["queue"].observe(queue_ms)
                    self._m["requests"].inc()
                if res.error is not None:
                    replies[i] = error_reply(
                        f"fleet request refused: {res.error}",
                        REFUSED,
                        policy_ms=res.policy_ms,
                        server_ms=server_ms,
                        **timings,
                    )
                else:
                    replies[i] = chunk_reply(
                        req.get("seq"), res.model, res.robot, res.policy_ms, server_ms, res.info, **timings
                    )
        return replies  # type: ignore[return-value]

    def _row(self, req: Mapping[str, Any]) -> BatchRequest:
        state, images, info, guide = decode_request(req)
        return BatchRequest(self.runner.policy_input(state, images, info), guide)


def build_app(cfg: Mapping[str, Any], fleet: Any) -> Any:
    """The Serve application for one policy: ``FleetReplica`` with the service's options."""
    import dataclasses

    knobs = dataclasses.asdict(fleet) | {"resources": dict(fleet.resources)}
    return serve.deployment(FleetReplica, **fleet.deployment_options()).bind(dict(cfg), knobs)
