"""Split RTC: the control loop runs here (robot, cameras, safety filter), the policy runs in a Ray
actor on the node advertising ``inference_pc`` (DESIGN.md section 6, "beyond the seed").

Same real-time chunking as ``algorithm=rtc`` and the *same* control-side ``RTCPlanner`` (trigger,
snapshot, delay estimate and clip, merge, underrun); only the transport differs: instead of shared
memory and a spawned process, the request (observation as compact numpy, frames optionally JPEG,
``prev`` in model space, ``s``, ``d``) goes to the actor through Ray, and the chunk comes back as an
object reference the loop polls without blocking. The loop never waits on inference after an
episode's first chunk. ``d_actual`` is counted in control ticks from the snapshot to the merge on
*this* side, so the delay estimate includes the transport both ways -- RTC absorbs the network.

Telemetry per inference: ``latency_ms`` from submit to the result's arrival in this process (a
waiter thread stamps it), ``server_ms`` the actor's own time (decode + policy), ``transport_ms``
their difference, ``payload_bytes``; ``d_actual`` in ticks from snapshot to merge.

Faults: the actor dies or a request takes longer than ``inference_timeout_s`` -> the loop finishes the
current chunk through the safety filter, holds, and the run ends with ``AlgorithmFault``.
Ctrl-C: hold, kill the actor, flush telemetry.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np

from algorithms.common import AlgorithmFault, FaultKind
from algorithms.rtc.config import RTCConfig
from algorithms.rtc.control import RTCControlLoop
from algorithms.rtc.planner import Request
from algorithms.rtc_split.codec import encode_observation, payload_bytes
from algorithms.rtc_split.server import InferenceServer
from services.knobs import NonNegativeFloat, PositiveFloat, Range
from services.ray_connection import RayTarget

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """One request in flight. A daemon thread submits it to the actor and stamps its arrival, so
    the control tick neither pays Ray's serialization/RPC nor quantizes latency to the period."""

    request: Request
    t_start: float
    nbytes: int = 0
    ref: Any = None
    error: BaseException | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    t_arrive: float | None = None  # when the result reached this process

    def send(self, actor: Any, request: dict[str, Any], obs: tuple[Any, ...], jpeg_quality: int | None,
             timeout_s: float) -> None:
        """Encode ``obs`` (state, images, info: copies owned by this request) into ``request`` and
        submit it, all in the request's thread."""

        def run() -> None:
            import ray

            try:
                request["obs"] = encode_observation(*obs, jpeg_quality)
                self.nbytes = payload_bytes(request)
                self.ref = actor.infer.remote(request)
                done, _ = ray.wait([self.ref], timeout=timeout_s)
            except BaseException as exc:  # noqa: BLE001 - reported by the poll as a fault
                self.error, done = exc, [None]
            if done:
                self.t_arrive = time.monotonic()
                self.arrived.set()

        threading.Thread(target=run, name="split-request", daemon=True).start()


@dataclass(kw_only=True)
class SplitRTCAlgorithm(RTCConfig):
    """RTC with the inference on a Ray node. RTC knobs (``RTCConfig``) as ``algorithm=rtc``; Ray knobs
    as ``launcher=ray`` (``address``, ``auth_mode``, ``resources``...). ``jpeg_quality``: null sends raw
    uint8 frames, 1-100 JPEG-compresses them (``cv2.imencode``)."""

    run: Any
    jpeg_quality: Annotated[int, Range(ge=1, le=100)] | None = None
    address: str = "auto"
    namespace: str = "inference"
    auth_mode: str | None = "disabled"
    auth_token_path: str | None = None
    resources: dict[str, float] | None = None
    num_cpus: NonNegativeFloat = 1.0
    num_gpus: NonNegativeFloat = 0.0
    connect_timeout_s: PositiveFloat = 15.0
    startup_timeout_s: PositiveFloat = 120.0
    first_chunk_timeout_s: PositiveFloat = 30.0
    inference_timeout_s: PositiveFloat = 5.0
    stop_on_success: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_chunk_size(self.run.policy_metadata.chunk_size)
        if self.jpeg_quality is not None and not 1 <= int(self.jpeg_quality) <= 100:
            raise ValueError(f"algorithm.jpeg_quality={self.jpeg_quality}; expected null or 1..100")
        self.target = RayTarget(self.address, self.namespace, self.auth_mode, self.auth_token_path, self.resources,
                                self.num_cpus, self.num_gpus, self.connect_timeout_s)

    def execute(self) -> dict[str, Any]:
        return _SplitRuntime(self).execute()


class _SplitRuntime(RTCControlLoop):
    """One run's control side with the policy in a Ray actor."""

    name = "rtc_split"

    def __init__(self, algo: SplitRTCAlgorithm) -> None:
        super().__init__(algo)
        self.actor: Any = None
        self.placement: dict[str, Any] = {}
        self.pending: _Pending | None = None
        self.transport_ms: list[float] = []
        self.payload_sizes: list[int] = []

    # ------------------------------------------------------------------ control-loop hooks
    def _start_inference_early(self) -> None:
        self._start_actor()  # before the robot: a missing cluster fails with the robot untouched

    def _start_inference(self, robot: Any) -> None:
        pass

    def _stop_inference(self) -> None:
        self._stop_actor()

    def _summary_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            jpeg_quality=self.algo.jpeg_quality, inference_node=str(self.placement.get("node_id", ""))[:16],
            inference_host=self.placement.get("host"),
        )
        transport = np.asarray(self.transport_ms, dtype=np.float64)
        if transport.size:
            fields.update({f"transport_ms_p{p}": float(np.percentile(transport, p)) for p in (50, 95, 99)})
            fields["transport_ms_max"] = float(transport.max())
            fields["payload_bytes_mean"] = float(np.mean(self.payload_sizes))
        return fields

    def _begin_episode(self, episode: int) -> None:
        if self.pending is not None:  # a request of the previous episode: its chunk is discarded
            self.discarded_results += 1
            self.pending = None
        self._request_if_due(0)

    def _can_send(self) -> bool:
        return self.pending is None

    def _poll_first(self, episode: int) -> bool:
        if self._poll(0, episode, time.monotonic()):
            return True
        self._request_if_due(0)  # rejected: ask again
        return False

    def _exchange(self, tick: int, episode: int, now: float) -> None:
        self._poll(tick, episode, time.monotonic())
        self._request_if_due(tick)

    # ------------------------------------------------------------------ the actor
    def _start_actor(self) -> None:
        import ray

        from services.ray_connection import LaunchError, check_resources

        a, target = self.algo, self.algo.target
        address = target.connect()
        demand = target.demand
        check_resources(demand, address)
        self.actor = ray.remote(InferenceServer).options(**target.actor_options(), max_restarts=0).remote(self.run)
        try:
            self.placement = ray.get(self.actor.ready.remote(), timeout=a.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise LaunchError(
                f"the split inference actor was not ready within {a.startup_timeout_s:g} s "
                f"(placement on {demand} + policy build + warmup)"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise AlgorithmFault(f"split inference actor failed at start: {exc}", FaultKind.STARTUP) from None
        self.telemetry.event("inference_actor_ready", **{k: v for k, v in self.placement.items()})
        log.info("rtc_split: inference actor on node %s (%s, pid %s), policy ready in %.2f s",
                 str(self.placement["node_id"])[:8], self.placement["host"], self.placement["pid"],
                 self.placement["startup_s"])

    def _stop_actor(self) -> None:
        if self.actor is None:
            return
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001
            log.warning("rtc_split: could not kill the inference actor", exc_info=True)
        self.actor = None
        self.pending = None

    # ------------------------------------------------------------------ requests
    def _send(self, req: Request) -> None:
        hist = self.step.history.snapshot()
        last = self.step.history.last
        obs = (hist.state, hist.images, dict(last.info) if last is not None else {})  # fresh arrays (np.stack)
        guide = req.guide
        request = {
            "prev": guide.prev_model if guide is not None else None, "s": guide.executed_ticks if guide is not None else req.s,
            "d": req.d,
            "guidance": str(guide.guidance) if guide is not None else None,
            "schedule": str(guide.schedule) if guide is not None else None,
            "max_guidance_weight": guide.max_guidance_weight if guide is not None else None,
        }
        self.pending = _Pending(req, time.monotonic())
        self.pending.send(self.actor, request, obs, self.algo.jpeg_quality, self.algo.inference_timeout_s + 1.0)

    def _poll(self, tick: int, episode: int, now: float) -> bool:
        """Merge the in-flight result if it arrived; True if the current chunk changed."""
        import ray

        pending = self.pending
        if pending is None or self.fault is not None:
            return False
        if not pending.arrived.is_set():  # bounded by algorithm.inference_timeout_s (RTCControlLoop)
            return False
        self.pending = None
        try:
            if pending.error is not None:
                raise pending.error
            result = ray.get(pending.ref)
        except Exception as exc:  # noqa: BLE001 - actor died, task raised, submit failed
            import ray

            died = isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError))
            self._inference_fault(f"split inference actor failed: {exc}",
                                  FaultKind.INFERENCE_DIED if died else FaultKind.INFERENCE_ERROR)
            return False
        t_end = pending.t_arrive if pending.t_arrive is not None else time.monotonic()
        req = pending.request
        if req.episode != episode:
            self.discarded_results += 1
            return False
        latency_ms = (t_end - pending.t_start) * 1e3
        transport_ms = max(0.0, latency_ms - float(result["server_ms"]))
        self.transport_ms.append(transport_ms)
        self.payload_sizes.append(pending.nbytes)
        record = self._record(
            req, episode, tick, t_start=pending.t_start, t_end=t_end, latency_ms=latency_ms,
            server_ms=float(result["server_ms"]), policy_ms=float(result["policy_ms"]),
            transport_ms=transport_ms, payload_bytes=pending.nbytes,
        )
        return self._merge(tick, episode, req.seq, result["robot"], result["model"], record) is not None

    def _on_fault(self, fault: AlgorithmFault) -> bool:
        self.pending = None  # no restart for an actor: the run ends after the current chunk
        return False
