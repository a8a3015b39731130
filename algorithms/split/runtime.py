"""Split RTC: the control loop runs here (robot, cameras, safety filter), the policy runs in a Ray
actor on the node advertising ``inference_pc`` (DESIGN.md section 6, "beyond the seed").

Same real-time chunking as ``algorithm=rtc`` and the *same* chunk logic
(``algorithms.rtc.chunk_logic``: ``ChunkScheduler`` for the current chunk, trigger, snapshot,
merge and underrun; ``DelayEstimator`` for ``d = max(Q)``); only the transport differs: instead of
shared memory and a spawned process, the snapshot (observation as compact numpy, frames optionally
JPEG, ``prev`` in model space, ``s``, ``d``) goes to the actor through Ray, and the chunk comes back
as an object reference the loop polls without blocking. The loop never waits on inference after an
episode's first chunk. ``d_actual`` is counted in control ticks from the snapshot to the merge on
*this* side, so the delay estimate includes the transport both ways -- RTC absorbs the network.

Telemetry per inference: ``latency_ms`` from submit to the result's arrival in this process (a
waiter thread stamps it), ``server_ms`` the actor's own time (decode + policy), ``transport_ms``
their difference, ``payload_bytes``; ``d_actual`` in ticks from snapshot to merge.

Faults: the actor dies or a request takes longer than ``stall_timeout_s`` -> the loop finishes the
current chunk through the safety filter, holds, and the run ends with ``AlgorithmFault``.
Ctrl-C: hold, kill the actor, flush telemetry.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from algorithms.common import AlgorithmFault
from algorithms.rtc.chunk_logic import DelayEstimator, Snapshot, clip_delay
from algorithms.rtc.control import RTCControlLoop, check_rtc_knobs
from algorithms.split.codec import encode_observation, payload_bytes
from algorithms.split.server import InferenceServer
from inference.ray_launcher import RayTarget

log = logging.getLogger(__name__)


@dataclass
class _Pending:
    """One request in flight. A daemon thread submits it to the actor and stamps its arrival, so
    the control tick neither pays Ray's serialization/RPC nor quantizes latency to the period."""

    episode: int
    snapshot: Snapshot | None  # None: an episode's first chunk (plain predict)
    d_estimate: int
    t_start: float
    tick: int
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


class SplitRTCAlgorithm:
    """RTC with the inference on a Ray node. RTC knobs as ``algorithm=rtc``; Ray knobs as
    ``launcher=ray`` (``address``, ``auth_mode``, ``resources``...). ``jpeg_quality``: null sends raw
    uint8 frames, 1-100 JPEG-compresses them (``cv2.imencode``)."""

    def __init__(
        self,
        run: Any,
        execute_horizon: int = 25,
        s_min: int | None = None,
        delay_window: int = 10,
        initial_delay_ticks: int = 4,
        warmup_inferences_excluded: int = 1,
        guidance: str = "vjp",
        schedule: str = "exp",
        max_guidance_weight: float = 5.0,
        jpeg_quality: int | None = None,
        address: str = "auto",
        namespace: str = "inference",
        auth_mode: str | None = "disabled",
        auth_token_path: str | None = None,
        resources: dict[str, float] | None = None,
        num_cpus: float = 1.0,
        num_gpus: float = 0.0,
        connect_timeout_s: float = 15.0,
        startup_timeout_s: float = 120.0,
        first_chunk_timeout_s: float = 30.0,
        stall_timeout_s: float = 5.0,
        stop_on_success: bool = True,
    ) -> None:
        self.s_min = check_rtc_knobs(run, execute_horizon, s_min, guidance, schedule, delay_window,
                                     initial_delay_ticks, warmup_inferences_excluded)
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"algorithm.jpeg_quality={jpeg_quality}; expected null or 1..100")
        self.run_obj = run
        self.execute_horizon = int(execute_horizon)
        self.delay_window = int(delay_window)
        self.initial_delay_ticks = int(initial_delay_ticks)
        self.warmup_inferences_excluded = int(warmup_inferences_excluded)
        self.guidance = guidance
        self.schedule = schedule
        self.max_guidance_weight = float(max_guidance_weight)
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.target = RayTarget(address, namespace, auth_mode, auth_token_path, resources, num_cpus, num_gpus,
                                connect_timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.first_chunk_timeout_s = float(first_chunk_timeout_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.stop_on_success = bool(stop_on_success)

    def run(self) -> dict[str, Any]:
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
        self.H = self.run.policy_metadata.chunk_size
        self.estimator = DelayEstimator(self.algo.delay_window, self.algo.initial_delay_ticks,
                                        self.algo.warmup_inferences_excluded)

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
        self._submit(episode, 0, None)

    def _poll_first(self, episode: int) -> bool:
        if self._poll(0, episode, time.monotonic()):
            return True
        if self.fault is None and self.pending is None:  # rejected: ask again
            self._submit(episode, 0, None)
        return False

    def _exchange(self, tick: int, episode: int, now: float) -> None:
        self._poll(tick, episode, time.monotonic())
        if self.fault is None and self.pending is None and self.scheduler.should_trigger():
            self._submit(episode, tick, self.scheduler.snapshot())

    # ------------------------------------------------------------------ the actor
    def _start_actor(self) -> None:
        import ray

        from inference.ray_launcher import LaunchError, check_resources

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
            raise AlgorithmFault(f"split inference actor failed at start: {exc}") from None
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
    def _submit(self, episode: int, tick: int, snapshot: Snapshot | None) -> None:
        hist = self.step.history.snapshot()
        last = self.step.history.last
        t_start = time.monotonic()
        obs = (hist.state, hist.images, dict(last.info) if last is not None else {})  # fresh arrays (np.stack)
        d_est = clip_delay(self.estimator.estimate(), snapshot.s, self.H) if snapshot is not None else 0
        guided = snapshot is not None and snapshot.s < self.H
        request = {
            "prev": snapshot.prev_model if guided else None,
            "s": snapshot.s if snapshot is not None else 0, "d": d_est,
            "guidance": self.algo.guidance, "schedule": self.algo.schedule,
            "max_guidance_weight": self.algo.max_guidance_weight,
        }
        self.pending = _Pending(episode, snapshot, d_est, t_start, tick)
        self.pending.send(self.actor, request, obs, self.algo.jpeg_quality, self.algo.stall_timeout_s + 1.0)

    def _poll(self, tick: int, episode: int, now: float) -> bool:
        """Merge the in-flight result if it arrived; True if the current chunk changed."""
        import ray

        pending = self.pending
        if pending is None or self.fault is not None:
            return False
        if not pending.arrived.is_set():
            if now - pending.t_start > self.algo.stall_timeout_s:
                self._on_fault(f"split inference stalled: no chunk {now - pending.t_start:.2f} s after the request "
                               f"(stall_timeout_s={self.algo.stall_timeout_s})")
            return False
        self.pending = None
        try:
            if pending.error is not None:
                raise pending.error
            result = ray.get(pending.ref)
        except Exception as exc:  # noqa: BLE001 - actor died, task raised, submit failed
            self._on_fault(f"split inference actor failed: {exc}")
            return False
        t_end = pending.t_arrive if pending.t_arrive is not None else time.monotonic()
        if pending.episode != episode:
            self.discarded_results += 1
            return False
        latency_ms = (t_end - pending.t_start) * 1e3
        transport_ms = max(0.0, latency_ms - float(result["server_ms"]))
        self.transport_ms.append(transport_ms)
        self.payload_sizes.append(pending.nbytes)
        snap = pending.snapshot
        record = dict(
            episode=episode, t_start=pending.t_start, t_end=t_end, latency_ms=latency_ms,
            server_ms=float(result["server_ms"]), policy_ms=float(result["policy_ms"]),
            transport_ms=transport_ms, payload_bytes=pending.nbytes, d_estimate=pending.d_estimate,
            s=snap.s if snap is not None else 0, snapshot_tick=pending.tick, merge_tick=tick,
            guidance=self.algo.guidance if (snap is not None and snap.s < self.H) else "none",
        )
        d_actual = self._merge(tick, episode, result["robot"], result["model"],
                               snap.s if snap is not None else None, record)
        if d_actual is None:
            return False
        if snap is not None:
            self.estimator.observe(d_actual)  # measured here: includes the transport
        return True

    def _on_fault(self, cause: str) -> None:
        self._report_fault(cause)
        self.fault = cause
        self.pending = None
