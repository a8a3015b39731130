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

from algorithms.clock import make_clock
from algorithms.common import AlgorithmFault, ControlStep, EpisodeResult, episode_summary, run_episodes
from algorithms.rtc.chunk_logic import ChunkRejected, ChunkScheduler, DelayEstimator, Snapshot, clip_delay
from algorithms.split.codec import encode_observation, payload_bytes
from algorithms.split.server import InferenceServer

log = logging.getLogger(__name__)

GUIDANCE = ("vjp", "blend", "none")
SCHEDULES = ("exp", "linear", "ones", "zeros")


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
        chunk_size = run.policy_metadata.chunk_size
        self.s_min = int(execute_horizon if s_min is None else s_min)
        if not 1 <= self.s_min <= chunk_size:
            raise ValueError(f"algorithm.s_min/execute_horizon={self.s_min} must be in [1, chunk_size={chunk_size}]")
        if guidance not in GUIDANCE:
            raise ValueError(f"algorithm.guidance={guidance!r}; expected one of {GUIDANCE}")
        if schedule not in SCHEDULES:
            raise ValueError(f"algorithm.schedule={schedule!r}; expected one of {SCHEDULES}")
        if jpeg_quality is not None and not 1 <= int(jpeg_quality) <= 100:
            raise ValueError(f"algorithm.jpeg_quality={jpeg_quality}; expected null or 1..100")
        if delay_window < 1 or initial_delay_ticks < 0 or warmup_inferences_excluded < 0:
            raise ValueError("algorithm.delay_window >= 1, initial_delay_ticks >= 0, warmup_inferences_excluded >= 0")
        self.run_obj = run
        self.execute_horizon = int(execute_horizon)
        self.delay_window = int(delay_window)
        self.initial_delay_ticks = int(initial_delay_ticks)
        self.warmup_inferences_excluded = int(warmup_inferences_excluded)
        self.guidance = guidance
        self.schedule = schedule
        self.max_guidance_weight = float(max_guidance_weight)
        self.jpeg_quality = None if jpeg_quality is None else int(jpeg_quality)
        self.address = address
        self.namespace = namespace
        self.auth_mode = auth_mode
        self.auth_token_path = auth_token_path
        self.resources = dict(resources if resources is not None else {"inference_pc": 1.0})
        self.num_cpus = float(num_cpus)
        self.num_gpus = float(num_gpus)
        self.connect_timeout_s = float(connect_timeout_s)
        self.startup_timeout_s = float(startup_timeout_s)
        self.first_chunk_timeout_s = float(first_chunk_timeout_s)
        self.stall_timeout_s = float(stall_timeout_s)
        self.stop_on_success = bool(stop_on_success)

    def run(self) -> dict[str, Any]:
        return _SplitRuntime(self).execute()


class _SplitRuntime:
    def __init__(self, algo: SplitRTCAlgorithm) -> None:
        self.algo = algo
        self.run = algo.run_obj
        self.actor: Any = None
        self.placement: dict[str, Any] = {}
        self.pending: _Pending | None = None
        self.fault: str | None = None
        self.rejected_chunks = 0
        self.discarded_results = 0
        self.transport_ms: list[float] = []
        self.payload_sizes: list[int] = []

    # ------------------------------------------------------------------ top level
    def execute(self) -> dict[str, Any]:
        run = self.run
        telemetry = run.make_telemetry()
        self.telemetry = telemetry
        robot = run.make_robot()
        summary: dict[str, Any] = {}
        results: list[EpisodeResult] = []
        step: ControlStep | None = None
        try:
            self._start_actor()  # before the robot: a missing cluster fails with the robot untouched
            if not robot.realtime:
                log.warning("rtc_split: robot is lockstep (realtime=false): delays are wall-clock, not ticks")
            robot.start()
            step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), telemetry,
                               run.make_recorder())
            step.start_recording(run.run_dir)
            self.step = step
            meta = run.policy_metadata
            self.H = meta.chunk_size
            self.scheduler = ChunkScheduler(meta.chunk_size, meta.action_dim, self.algo.s_min)
            self.estimator = DelayEstimator(self.algo.delay_window, self.algo.initial_delay_ticks,
                                            self.algo.warmup_inferences_excluded)
            results = run_episodes(step, run.episodes, run.seed, self._episode, lambda: self.fault is not None)
            summary = episode_summary(results)
        except AlgorithmFault as exc:  # the robot failed (stale state, dead camera): hold, report
            self.fault = self.fault or str(exc)
            telemetry.event("fault", cause=self.fault)
            if step is not None:
                step.hold()
        except BaseException:
            if step is not None:
                step.hold()
            raise
        finally:
            self._stop_actor()
            robot.stop()
            transport = np.asarray(self.transport_ms, dtype=np.float64)
            summary.update(
                algorithm="rtc_split", guidance=self.algo.guidance, schedule=self.algo.schedule,
                execute_horizon=self.algo.execute_horizon, s_min=self.algo.s_min,
                jpeg_quality=self.algo.jpeg_quality, rejected_chunks=self.rejected_chunks,
                stale_chunks=self.scheduler.stale_chunks if hasattr(self, "scheduler") else 0,
                discarded_results=self.discarded_results, fault=self.fault,
                inference_node=str(self.placement.get("node_id", ""))[:16],
                inference_host=self.placement.get("host"),
            )
            if transport.size:
                summary.update({f"transport_ms_p{p}": float(np.percentile(transport, p)) for p in (50, 95, 99)})
                summary["transport_ms_max"] = float(transport.max())
                summary["payload_bytes_mean"] = float(np.mean(self.payload_sizes))
            if step is not None:
                summary["safety"] = vars(step.safety.counters)
                summary.update(step.stop_recording())
            summary = telemetry.close(**summary)
        if self.fault is not None:
            raise AlgorithmFault(self.fault)
        return summary

    # ------------------------------------------------------------------ the actor
    def _start_actor(self) -> None:
        import ray

        from inference.ray_launcher import LaunchError, check_resources, connect

        a = self.algo
        address = connect(a.address, a.namespace, a.connect_timeout_s, a.auth_mode, a.auth_token_path)
        demand = dict(a.resources)
        if a.num_cpus > 0:
            demand["CPU"] = a.num_cpus
        if a.num_gpus > 0:
            demand["GPU"] = a.num_gpus
        check_resources(demand, address)
        self.actor = ray.remote(InferenceServer).options(
            resources=a.resources or None, num_cpus=a.num_cpus, num_gpus=a.num_gpus, max_restarts=0,
        ).remote(self.run)
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
        sched = self.scheduler
        snap = pending.snapshot
        base = dict(
            episode=episode, t_start=pending.t_start, t_end=t_end, latency_ms=latency_ms,
            server_ms=float(result["server_ms"]), policy_ms=float(result["policy_ms"]),
            transport_ms=transport_ms, payload_bytes=pending.nbytes, d_estimate=pending.d_estimate,
            s=snap.s if snap is not None else 0, snapshot_tick=pending.tick, merge_tick=tick,
            guidance=self.algo.guidance if (snap is not None and snap.s < self.H) else "none",
        )
        try:
            if snap is None:
                chunk_id = sched.start(result["robot"], result["model"])
                d_actual, disc, stale = 0, None, False
            else:
                merge = sched.merge(result["robot"], result["model"], snap.s)
                chunk_id, d_actual, stale = merge.chunk_id, merge.d_actual, merge.stale
                disc = None if np.isnan(merge.discontinuity) else merge.discontinuity
                self.estimator.observe(d_actual)  # measured here: includes the transport
        except ChunkRejected as exc:
            self.rejected_chunks += 1
            log.warning("rtc_split: rejected chunk: %s (not executed)", exc)
            self.telemetry.event("chunk_rejected", reason=str(exc), tick=tick)
            self.telemetry.inference({**base, "chunk_id": -1, "d_actual": None, "rejected": 1})
            return False
        # index d_actual of the new chunk runs at this tick, so its index 0 belongs to tick - d_actual
        self.step.new_chunk(episode, chunk_id, tick - d_actual, np.array(result["robot"], copy=True))
        self.telemetry.inference({**base, "chunk_id": chunk_id, "d_actual": d_actual,
                                  "discontinuity": disc, "stale": int(stale), "rejected": 0})
        return True

    def _on_fault(self, cause: str) -> None:
        log.error("rtc_split: %s; finishing the current chunk through the safety filter, then holding", cause)
        self.telemetry.event("inference_fault", cause=cause,
                             remaining=self.scheduler.remaining if hasattr(self, "scheduler") else 0)
        self.fault = cause
        self.pending = None

    # ------------------------------------------------------------------ one episode
    def _episode(self, episode: int, obs: Any) -> EpisodeResult:
        run, step, sched = self.run, self.step, self.scheduler
        result = EpisodeResult(episode)
        sched.reset()
        if self.pending is not None:  # a request of the previous episode: its chunk is discarded
            self.discarded_results += 1
            self.pending = None
        # first chunk: the robot holds still (no ticks yet) until it arrives
        self._submit(episode, 0, None)
        deadline = time.monotonic() + self.algo.first_chunk_timeout_s
        while not self._poll(0, episode, time.monotonic()):
            if self.fault is not None:
                step.hold()
                return result
            if self.pending is None:  # rejected: ask again
                self._submit(episode, 0, None)
            if time.monotonic() > deadline:
                self.fault = f"no first chunk within {self.algo.first_chunk_timeout_s} s"
                step.hold()
                return result
            time.sleep(0.001)

        clock = make_clock(1.0 / run.hz, step.robot.realtime)
        clock.start()
        tick = 0
        while tick < run.max_steps:
            scheduled, actual = clock.wait(tick)
            if tick > 0:
                obs, read_ms = step.observe()
            else:
                read_ms = 0.0
            c0 = time.perf_counter()
            self._poll(tick, episode, time.monotonic())
            if self.fault is None and self.pending is None and sched.should_trigger():
                self._submit(episode, tick, sched.snapshot())
            planned = sched.step()
            compute_ms = (time.perf_counter() - c0) * 1e3
            step.execute_tick(result, obs, planned, tick, scheduled, actual, read_ms, compute_ms)
            tick += 1
            if self.fault is not None and sched.remaining == 0:
                step.hold()
                break
            if result.success and self.algo.stop_on_success:
                break
        result.ticks = tick
        self.telemetry.event("episode_end", episode=episode, ticks=tick, success=result.success,
                             underruns=sched.underruns)
        return result
