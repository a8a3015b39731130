"""The control side of real-time chunking, whatever carries the inference.

``algorithm=rtc`` (a spawned process over shared memory) and ``algorithm=rtc_split`` (a Ray actor on
another node) differ only in how a snapshot reaches the policy and how a chunk comes back. Both
control loops are this class: it owns the robot, the safety filter, the ``RTCPlanner`` (trigger,
snapshot, delay estimate, merge: the same object the lockstep evaluator runs) and the telemetry; it
runs the episodes, waits for each episode's first chunk with the robot still, ticks on the
drift-free clock, hands each planner request to the transport and each returned chunk back to the
planner (``d_actual``, rejection of non-finite chunks), finishes the current chunk and holds after an
inference fault, and turns a robot fault into a reported one. A transport subclass supplies the
hooks below.
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from typing import Any

import numpy as np

from services.clock import make_clock
from algorithms.common import AlgorithmFault, ControlStep, EpisodeResult, FaultKind, episode_summary, run_episodes
from algorithms.rtc.chunk_logic import ChunkRejected
from algorithms.rtc.planner import Request, RTCPlanner
from robots.base import RobotError
from services.realtime import RealtimeSession

log = logging.getLogger(__name__)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class RTCControlLoop:
    """One run's control side. ``algo`` is the algorithm object: its RTC knobs (``RTCConfig``) go to
    the planner; it also carries ``first_chunk_timeout_s`` and ``stop_on_success``.

    Hooks for a transport:
      ``_start_inference_early()``  before the robot starts (e.g. reach a cluster: fail untouched)
      ``_start_inference(robot)``   robot started, scheduler made: get the policy ready
      ``_begin_episode(episode)``   an episode starts (ask for its first chunk)
      ``_poll_first(episode)``      True once the first chunk is merged; may end the run
                                    (``_inference_fault``) or push ``self.first_chunk_deadline`` back
      ``_exchange(tick, episode, now)``  per tick, before the action is taken: merge what arrived
                                    (``_merge``), check health, and send the planner's next request
                                    (``_send(request)``) when ``_can_send()``
      ``_send(request)``            carry one planner request (observation + snapshot) to the policy
      ``_can_send()``               False while the inference side cannot take a request
      ``_stop_inference()``         every exit path; never raises
      ``_summary_fields()``         transport numbers for summary.json
      ``_on_fault(fault)``          an inference fault: restart the inference side (return True) or not

    Every fault, at start or mid-run, ends the same way: ``self.fault`` (an ``AlgorithmFault`` with
    kind, message and tick) is recorded in events.jsonl and summary.json, the robot finishes the
    current chunk through the safety filter (inference faults) or at once (robot faults) and holds,
    and ``execute`` raises it (the app exits 3).
    """

    name = "rtc"

    def __init__(self, algo: Any) -> None:
        self.algo = algo
        self.run = algo.run
        self.fault: AlgorithmFault | None = None
        self.rejected_chunks = 0
        self.rejected_in_a_row = 0
        self.discarded_results = 0
        self.first_chunk_deadline = 0.0
        self.tick: int | None = None
        self.request_sent_at = 0.0
        self.planner: RTCPlanner | None = None
        self._old_sigterm: Any = None

    @property
    def scheduler(self) -> Any:
        return self.planner.scheduler if self.planner is not None else None

    # ------------------------------------------------------------------ hooks
    def _start_inference_early(self) -> None:
        pass

    def _start_inference(self, robot: Any) -> None:
        raise NotImplementedError

    def _begin_episode(self, episode: int) -> None:
        raise NotImplementedError

    def _poll_first(self, episode: int) -> bool:
        raise NotImplementedError

    def _exchange(self, tick: int, episode: int, now: float) -> None:
        raise NotImplementedError

    def _stop_inference(self) -> None:
        raise NotImplementedError

    def _send(self, request: Request) -> None:
        raise NotImplementedError

    def _can_send(self) -> bool:
        return True

    def _summary_fields(self) -> dict[str, Any]:
        return {}

    def _on_fault(self, fault: AlgorithmFault) -> bool:
        return False

    def _request_if_due(self, tick: int) -> None:
        """Send the planner's next request when one is due (first chunk, or ``t >= s_min``)."""
        if self.fault is None and self.planner.wants_inference() and self._can_send():
            self._send(self.planner.request(tick))
            self.request_sent_at = time.monotonic()

    # ------------------------------------------------------------------ faults
    def _fail(self, message: str, kind: FaultKind) -> AlgorithmFault:
        """Record the run's (first) fault; later ones are consequences and only logged."""
        fault = AlgorithmFault(message, kind, self.tick)
        if self.fault is None:
            self.fault = fault
            self.telemetry.event("fault", fault=fault.record())
        else:
            log.warning("%s: %s (after the fault that ends the run)", self.name, fault.line())
        return self.fault

    def _inference_fault(self, message: str, kind: FaultKind) -> None:
        """The inference side failed: the transport may restart it; else the run ends with this
        fault once the current chunk is used up (``_episode`` holds then)."""
        log.error("%s: %s; finishing the current chunk through the safety filter, then holding", self.name, message)
        self.telemetry.event("inference_fault", cause=message, fault_kind=str(kind), tick=self.tick,
                             remaining=self.scheduler.remaining if self.scheduler is not None else 0)
        fault = AlgorithmFault(message, kind, self.tick)
        if self._on_fault(fault):
            self.planner.inference_restarted()  # the next request continues what the robot executes
            return
        self._fail(message, kind)

    def _check_timeout(self, now: float) -> None:
        """``algorithm.inference_timeout_s`` bounds every inference, whatever the transport."""
        limit = getattr(self.algo, "inference_timeout_s", None)
        if self.fault is None and limit and self.planner.pending is not None and now - self.request_sent_at > limit:
            self._inference_fault(f"inference timeout: no chunk {now - self.request_sent_at:.2f} s after the request "
                                  f"(algorithm.inference_timeout_s={limit})", FaultKind.INFERENCE_TIMEOUT)

    # ------------------------------------------------------------------ top level
    def execute(self) -> dict[str, Any]:
        run = self.run
        telemetry = run.make_telemetry()
        self.telemetry = telemetry
        robot = run.make_robot()
        rt = RealtimeSession.enter_control(run, realtime=robot.realtime)  # conf/realtime (issue 15)
        summary: dict[str, Any] = {}
        step: ControlStep | None = None
        self._install_signals()
        try:
            self._start_inference_early()
            if not robot.realtime:
                log.warning("%s: robot is lockstep (realtime=false): delays are wall-clock, not ticks; "
                            "use algorithm=lockstep_eval to evaluate with simulated delays", self.name)
            robot.start()
            step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), telemetry,
                               run.make_recorder())
            step.start_recording(run.run_dir)
            self.step = step
            meta = run.policy_metadata
            self.planner = RTCPlanner(self.algo.rtc_config(), meta.chunk_size, meta.action_dim)
            self._start_inference(robot)
            rt.observe_children()
            results = run_episodes(step, run.episodes, run.seed, self._episode, lambda: self.fault is not None)
            summary = episode_summary(results)
        except (AlgorithmFault, RobotError) as exc:  # the robot or the inference failed: hold, report
            if isinstance(exc, AlgorithmFault):
                if self.fault is None:
                    self.fault = AlgorithmFault(exc.message, exc.kind, exc.tick if exc.tick is not None else self.tick)
                    telemetry.event("fault", fault=self.fault.record())
            else:  # e.g. a camera frame or a topic still missing at start
                self._fail(f"robot fault: {exc}", FaultKind.ROBOT)
            if step is not None:
                step.hold()
        except BaseException:
            if step is not None:
                step.hold()
            raise
        finally:
            self._stop_inference()
            self._restore_signals()
            robot.stop()
            summary.update(
                algorithm=self.name, guidance=str(self.algo.guidance), schedule=str(self.algo.schedule),
                execute_horizon=self.algo.execute_horizon, s_min=self.algo.trigger_ticks,
                rejected_chunks=self.rejected_chunks,
                stale_chunks=self.scheduler.stale_chunks if self.scheduler is not None else 0,
                discarded_results=self.discarded_results,
                fault=self.fault.record() if self.fault is not None else None, **self._summary_fields(),
            )
            if step is not None:
                summary["safety"] = vars(step.safety.counters)
                summary.update(step.stop_recording())
            summary["realtime"] = rt.close()
            summary = telemetry.close(**summary)
        if self.fault is not None:
            raise self.fault
        return summary

    def _install_signals(self) -> None:
        """SIGTERM -> KeyboardInterrupt while we run, unless the app already handles it (it does
        for ``python -m inference``), so the ``finally`` cleanup runs for any caller."""
        self._old_sigterm = None
        if threading.current_thread() is threading.main_thread():
            if signal.getsignal(signal.SIGTERM) in (signal.SIG_DFL, None):
                self._old_sigterm = signal.signal(signal.SIGTERM, _raise_interrupt)

    def _restore_signals(self) -> None:
        if self._old_sigterm is not None:
            signal.signal(signal.SIGTERM, self._old_sigterm)
            self._old_sigterm = None

    # ------------------------------------------------------------------ chunks
    def _merge(self, tick: int, episode: int, seq: int, robot_chunk: np.ndarray, model_chunk: np.ndarray,
               record: dict[str, Any]) -> int | None:
        """Hand the chunk computed for request ``seq`` to the planner and record the inference;
        returns ``d_actual``, or None when it was stale (discarded) or rejected (non-finite, wrong
        shape: never executed; the planner asks again)."""
        try:
            merge = self.planner.accept(seq, robot_chunk, model_chunk)
        except ChunkRejected as exc:
            self.rejected_chunks += 1
            self.rejected_in_a_row += 1
            log.warning("%s: rejected chunk: %s (not executed)", self.name, exc)
            self.telemetry.event("chunk_rejected", reason=str(exc), tick=tick)
            self.telemetry.inference({**record, "chunk_id": -1, "d_actual": None, "rejected": 1})
            limit = self.algo.max_rejected_chunks
            if self.rejected_in_a_row >= limit:
                self._inference_fault(f"{self.rejected_in_a_row} chunks in a row rejected (algorithm.max_rejected_chunks="
                                      f"{limit}); last: {exc}", FaultKind.CHUNKS_REJECTED)
            return None
        if merge is None:
            self.discarded_results += 1
            return None
        self.rejected_in_a_row = 0
        disc = None if np.isnan(merge.discontinuity) else merge.discontinuity
        # index d_actual of the new chunk runs at this tick, so its index 0 belongs to tick - d_actual
        self.step.new_chunk(episode, merge.chunk_id, tick - merge.d_actual, np.array(robot_chunk, copy=True))
        self.telemetry.inference({**record, "chunk_id": merge.chunk_id, "d_actual": merge.d_actual,
                                  "discontinuity": disc, "stale": int(merge.stale), "rejected": 0})
        return merge.d_actual

    def _record(self, req: Request, episode: int, tick: int, **fields: Any) -> dict[str, Any]:
        """The inference record shared by every transport (``fields``: timings)."""
        return dict(episode=episode, d_estimate=req.d, s=req.s, snapshot_tick=req.tick, merge_tick=tick,
                    guidance=req.guidance, **fields)

    # ------------------------------------------------------------------ one episode
    def _episode(self, episode: int, obs: Any) -> EpisodeResult:
        run, step, sched = self.run, self.step, self.scheduler
        result = EpisodeResult(episode)
        self.tick = None
        self.planner.begin_episode(episode, anchor=step.safety.last_command)
        self._begin_episode(episode)
        # first chunk: the robot holds still (no ticks yet) until it arrives
        self.first_chunk_deadline = time.monotonic() + self.algo.first_chunk_timeout_s
        while not self._poll_first(episode):
            self._check_timeout(time.monotonic())
            if self.fault is None and time.monotonic() > self.first_chunk_deadline:
                self._fail(f"no first chunk within {self.algo.first_chunk_timeout_s} s", FaultKind.NO_FIRST_CHUNK)
            if self.fault is not None:
                step.hold()
                return result
            time.sleep(0.001)

        clock = make_clock(1.0 / run.hz, step.robot.realtime)
        clock.start()
        tick = 0
        while tick < run.max_steps:
            scheduled, actual = clock.wait(tick)
            self.tick = tick
            if tick > 0:
                obs, read_ms = step.observe()
            else:
                read_ms = 0.0
            c0 = time.perf_counter()
            self._check_timeout(actual)
            self._exchange(tick, episode, actual)
            planned = sched.step()
            compute_ms = (time.perf_counter() - c0) * 1e3
            step.execute_tick(result, obs, planned, tick, scheduled, actual, read_ms, compute_ms)
            tick += 1
            if self.fault is not None and sched.remaining == 0:
                # the current chunk is used up: hold one more tick, then end the run
                step.hold()
                break
            if result.success and self.algo.stop_on_success:
                break
        result.ticks = tick
        self.telemetry.event("episode_end", episode=episode, ticks=tick, success=result.success,
                             underruns=sched.underruns)
        return result
