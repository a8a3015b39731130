"""The one control loop every execution mode runs.

``ControlLoop(run, rtc, limits, transport)`` owns the robot, the per-tick ``ControlStep`` (read ->
safety -> send), the ``RTCPlanner`` (trigger, snapshot, delay estimate, merge, plausibility) and the
telemetry. Per tick it reads the robot, merges the chunk the transport brought back, has the
transport carry the planner's next request, takes the planned action (or holds on underrun) and
sends it. The rules are written here once, for every mode:

* a chunk the planner rejects (NaN/inf, wrong shape, farther than ``max_chunk_jump`` from the last
  command) never runs; ``max_rejected_chunks`` of them in a row are a ``chunks_rejected`` fault;
* an inference longer than ``inference_timeout_s`` is an ``inference_timeout`` fault, an unhealthy
  transport (dead process, stalled heartbeat, lost actor) one of its kind;
* after a fault of the inference side itself (``RESTARTABLE_KINDS``: died, stalled, timed out,
  raised) the transport replaces that side, up to ``max_restarts`` times per run (``RestartConfig``,
  the same knob and count for every real-time mode); else, and after any other inference fault, the
  robot finishes the current chunk through the safety filter (sync execution: at once), holds, and
  the run ends with the fault (recorded in events.jsonl and summary.json; ``execute`` raises it, the
  app exits 3);
* a robot fault holds at once.

Modes differ only in the transport (``algorithms/transport.py``) and in ``sync``: sync execution
(``algorithm=sequential``, the lockstep ``sync`` method) runs each new chunk from index 0 after the
robot held while the model thought, and holds after ``execute_horizon`` actions until a chunk it can
execute arrives (a rejected one never runs, nor does the old chunk's rest); asynchronous execution (RTC) continues the current chunk while
the next one is computed. The tick clock is the robot's (a drift-free deadline clock, or a virtual
one for a lockstep robot that advances one period per send).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.chunking.chunk_logic import ChunkRejected, Step
from algorithms.chunking.config import RTCConfig
from algorithms.chunking.planner import Request, RTCPlanner
from algorithms.settings import check_ranges
from algorithms.step import AlgorithmFault, ControlStep, EpisodeResult, FaultKind, episode_summary
from algorithms.transport import InferenceReply, InferenceRequest, Transport, TransportSession
from robots.base import RobotError
from services.clock import make_clock
from services.errors import RESTARTABLE_KINDS
from services.knobs import NonNegativeInt, PositiveFloat
from services.logs import SHOW
from services.realtime import RealtimeSession

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LoopConfig:
    """What bounds the loop, whatever the transport. ``first_chunk_timeout_s``: the robot holds this
    long at most for an episode's first chunk. ``inference_timeout_s``: one inference longer than this
    is a fault. ``stop_on_success``: end an episode when the task reports success."""

    first_chunk_timeout_s: PositiveFloat = 30.0
    inference_timeout_s: PositiveFloat = 10.0
    stop_on_success: bool = True

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass(kw_only=True)
class RestartConfig:
    """How a real-time run (``algorithm=rtc``, ``rtc_split``, ``rtc_fleet``) treats a failed inference
    side. ``max_restarts``: how many times per run a fault of the inference side itself
    (``RESTARTABLE_KINDS``: ``inference_died``, ``inference_stalled``, ``inference_timeout``,
    ``inference_error``) is answered by replacing that side (a new process, a new actor, the next
    request to the service) instead of ending the run; 0 ends the run at the first one. A bad chunk,
    observation or robot is never restarted. The first chunk of the replaced side is guided to
    continue from what the robot executes."""

    max_restarts: NonNegativeInt = 0

    def __post_init__(self) -> None:
        check_ranges(self)


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


class ControlLoop:
    """One run's control side. ``name`` is the algorithm's name in telemetry and summary.json;
    ``restarts``: how often the inference side may be replaced after it failed (None: never, the
    modes whose policy runs in this process)."""

    def __init__(
        self,
        run: Any,
        rtc: RTCConfig,
        limits: LoopConfig,
        transport: Transport,
        *,
        name: str,
        sync: bool = False,
        restarts: RestartConfig | None = None,
    ) -> None:
        self.run = run
        self.rtc = rtc
        self.limits = limits
        self.transport = transport
        self.name = name
        self.sync = sync
        self.max_restarts = restarts.max_restarts if restarts is not None else 0
        self.restarts = 0  # inference sides replaced so far in this run
        self.fault: AlgorithmFault | None = None
        self.rejected_chunks = 0
        self.rejected_in_a_row = 0
        self.discarded_results = 0
        self.tick: int | None = None
        self.request_sent_at = 0.0
        self.planner: RTCPlanner | None = None
        self.step: ControlStep | None = None
        self.telemetry: Any = None
        self.record_fields: dict[str, Any] = {}  # extra columns for every inference record
        self._old_sigterm: Any = None

    # ------------------------------------------------------------------ the run
    def execute(
        self,
        episodes: Callable[[ControlLoop], dict[str, Any]] | None = None,
        summary_fields: Callable[[], dict[str, Any]] | None = None,
        record: bool = True,
    ) -> dict[str, Any]:
        """Run the episodes and return (and write) the summary.

        ``episodes(loop) -> summary body``: what to run once everything is up (default: the run's
        episodes, ``run_episodes``); the lockstep evaluator runs its method x delay cells here.
        ``summary_fields()``: the algorithm's own keys of summary.json. ``record``: False leaves the
        run's recorder out (an evaluation records no dataset)."""
        run = self.run
        telemetry = run.make_telemetry()
        self.telemetry = telemetry
        robot = run.make_robot()
        rt = RealtimeSession.enter_control(run, realtime=robot.realtime)
        session = TransportSession(run=run, telemetry=telemetry, inference_timeout_s=self.limits.inference_timeout_s)
        summary: dict[str, Any] = {}
        step: ControlStep | None = None
        self._install_signals()
        try:
            self.transport.start_early(session)
            if robot.realtime and self.transport.simulated:
                raise ValueError(f"{self.name} simulates delays and needs a lockstep robot (robot.realtime=false)")
            if not robot.realtime and not self.transport.simulated and not self.sync:
                log.warning(
                    "%s: robot is lockstep (realtime=false): delays are wall-clock, not ticks; "
                    "use algorithm=lockstep_eval to evaluate with simulated delays",
                    self.name,
                )
            robot.start()
            step = ControlStep(
                robot,
                run.make_safety(robot.spec),
                run.make_history(),
                telemetry,
                run.make_recorder() if record else None,
            )
            step.start_recording(run.run_dir)
            self.step = step
            meta = run.policy_metadata
            self.planner = RTCPlanner(self.rtc, meta.chunk_size, meta.action_dim)
            session.robot, session.history = robot, step.history
            self.transport.start(session)
            rt.observe_children()
            summary = (episodes or ControlLoop.run_episodes)(self)
        except (AlgorithmFault, RobotError) as exc:  # the robot or the inference failed: hold, report
            if isinstance(exc, AlgorithmFault):
                self._fail(exc.message, exc.kind, exc.tick)
            else:  # e.g. a camera frame or a topic still missing at start
                self._fail(f"robot fault: {exc}", FaultKind.ROBOT)
            if step is not None:
                step.hold()
        except BaseException:
            if step is not None:
                step.hold()
            raise
        finally:
            self.transport.stop()
            self._restore_signals()
            robot.stop()
            rtc = self.rtc
            summary.update(
                algorithm=self.name,
                guidance=str(rtc.guidance),
                schedule=str(rtc.schedule),
                execute_horizon=rtc.execute_horizon,
                **(summary_fields() if summary_fields else {}),
                rejected_chunks=self.rejected_chunks,
                stale_chunks=self.planner.scheduler.stale_chunks if self.planner is not None else 0,
                discarded_results=self.discarded_results,
                restarts=self.restarts,
                fault=self.fault.record() if self.fault is not None else None,
                **self.transport.summary(),
            )
            if step is not None:
                summary["safety"] = vars(step.safety.counters)
                summary.update(step.stop_recording())
            summary["realtime"] = rt.close()
            summary = telemetry.close(**summary)
        if self.fault is not None:
            raise self.fault
        return summary

    def run_episodes(self) -> dict[str, Any]:
        """The run's episodes (episode e seeded ``seed + e``), stopping after a fault."""
        results: list[EpisodeResult] = []
        for episode in range(self.run.episodes):
            results.append(self.episode(episode, self.run.seed + episode))
            log.info("episode %d: %d ticks, success=%s", episode, results[-1].ticks, results[-1].success, extra=SHOW)
            if self.fault is not None:
                break
        return episode_summary(results)

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

    # ------------------------------------------------------------------ faults
    def _fail(self, message: str, kind: FaultKind, tick: int | None = None) -> AlgorithmFault:
        """Record the run's (first) fault; later ones are consequences and only logged."""
        fault = AlgorithmFault(message, kind, self.tick if tick is None else tick)
        if self.fault is None:
            self.fault = fault
            self.telemetry.event("fault", fault=fault.record())
        else:
            log.warning("%s: %s (after the fault that ends the run)", self.name, fault.line())
        return self.fault

    def _inference_fault(self, message: str, kind: FaultKind) -> bool:
        """An inference failed: a fault of the inference side itself is answered by replacing that
        side while ``max_restarts`` allows and the transport can (True); else the run ends with this
        fault once the current chunk is used up (``episode`` holds then)."""
        sched = self.planner.scheduler
        self.telemetry.event(
            "inference_fault", cause=message, fault_kind=str(kind), tick=self.tick, remaining=sched.remaining
        )
        if kind in RESTARTABLE_KINDS and self.restarts < self.max_restarts and self.transport.restart():
            self.restarts += 1
            log.warning(
                "%s: %s; inference side replaced (restart %d of algorithm.max_restarts=%d)",
                self.name,
                message,
                self.restarts,
                self.max_restarts,
            )
            self.planner.inference_restarted()  # the next request continues what the robot executes
            return True
        log.error("%s: %s; finishing the current chunk through the safety filter, then holding", self.name, message)
        self.planner.cancel()
        self._fail(message, kind)
        return False

    def _check_timeout(self, now: float) -> None:
        """``inference_timeout_s`` bounds every inference (a blocking transport bounds its own call)."""
        limit = self.limits.inference_timeout_s
        bounded_elsewhere = self.transport.blocking or self.transport.simulated
        if (
            self.fault is None
            and not bounded_elsewhere
            and self.planner.pending is not None
            and now - self.request_sent_at > limit
        ):
            self._inference_fault(
                f"inference timeout: no chunk {now - self.request_sent_at:.2f} s after the request "
                f"(algorithm.inference_timeout_s={limit})",
                FaultKind.INFERENCE_TIMEOUT,
            )

    def _check_health(self, now: float) -> bool:
        """An unhealthy transport is an inference fault; True when it was restarted."""
        if self.fault is None:
            cause = self.transport.health(now)
            if cause is not None:
                return self._inference_fault(cause.message, cause.kind)
        return False

    # ------------------------------------------------------------------ requests and chunks
    def _request_if_due(self, tick: int, result: EpisodeResult) -> None:
        """Hand the planner's next request to the transport when one is due (no chunk yet, or
        ``execute_horizon`` actions of the current chunk executed) and the transport can take it."""
        planner = self.planner
        if self.fault is not None or not planner.wants_inference() or not self.transport.ready():
            return
        cut = planner.plain_request(tick) if self.sync and planner.scheduler.has_chunk else planner.request(tick)
        self.request_sent_at = time.monotonic()
        result.inferences += 1
        self.transport.submit(
            InferenceRequest(cut.seq, cut.episode, cut.tick, cut.guide, self.step.history, first=cut.first)
        )

    def _exchange(self, tick: int, result: EpisodeResult) -> bool:
        """Merge what arrived, send the next request when due, and merge again (a transport may
        answer at once); True if the current chunk changed."""
        changed = self._take_reply(tick, result)
        self._request_if_due(tick, result)
        return self._take_reply(tick, result) or changed

    def _take_reply(self, tick: int, result: EpisodeResult) -> bool:
        if self.fault is not None:
            return False
        reply = self.transport.poll(tick)
        if reply is None:
            return False
        req = self.planner.pending
        if req is None or req.seq != reply.seq:  # answers a request of an earlier episode or process
            self.discarded_results += 1
            return False
        if reply.error is not None:
            self._inference_fault(*reply.error)
            return False
        return self._merge(tick, result, req, reply)

    def _merge(self, tick: int, result: EpisodeResult, req: Request, reply: InferenceReply) -> bool:
        """Hand the chunk to the planner and record the inference; False when it was rejected
        (never executed; the planner asks again) or stale."""
        record = {
            "episode": result.episode,
            "d_estimate": req.d,
            "s": req.s,
            "snapshot_tick": req.tick,
            "merge_tick": tick,
            "guidance": req.guidance,
            "t_start": reply.t_start,
            "t_end": reply.t_end,
            "latency_ms": reply.latency_ms,
            "policy_ms": reply.policy_ms,
            **self.record_fields,
            **reply.fields,
        }
        try:
            merge = self.planner.accept(req.seq, reply.robot, reply.model)
        except ChunkRejected as exc:
            self.rejected_chunks += 1
            self.rejected_in_a_row += 1
            result.rejected += 1
            log.warning("%s: rejected chunk: %s (not executed)", self.name, exc)
            self.telemetry.event("chunk_rejected", reason=str(exc), tick=tick)
            self.telemetry.inference({**record, "chunk_id": -1, "d_actual": None, "rejected": 1})
            limit = self.rtc.max_rejected_chunks
            if self.rejected_in_a_row >= limit:
                self._inference_fault(
                    f"{self.rejected_in_a_row} chunks in a row rejected (algorithm.max_rejected_chunks="
                    f"{limit}); last: {exc}",
                    FaultKind.CHUNKS_REJECTED,
                )
            return False
        if merge is None:
            self.discarded_results += 1
            return False
        self.rejected_in_a_row = 0
        disc = None if np.isnan(merge.discontinuity) else merge.discontinuity
        plan_jump = None if np.isnan(merge.plan_jump) else merge.plan_jump
        if not req.first:
            result.discontinuities.append(merge.discontinuity)
            result.plan_jumps.append(merge.plan_jump)
        if reply.fields:
            result.inference_fields.append(dict(reply.fields))
        # index d_actual of the new chunk runs at this tick, so its index 0 belongs to tick - d_actual
        self.step.new_chunk(
            result.episode,
            merge.chunk_id,
            tick - merge.d_actual,
            np.array(self.planner.scheduler.chunk_robot, copy=True),
            guidance=req.guidance,
        )
        self.telemetry.inference(
            {
                **record,
                "chunk_id": merge.chunk_id,
                "d_actual": merge.d_actual,
                "discontinuity": disc,
                "plan_jump": plan_jump,
                "stale": int(merge.stale),
                "rejected": 0,
            }
        )
        return True

    # ------------------------------------------------------------------ one episode
    def episode(self, episode: int, seed: int) -> EpisodeResult:
        """Home the robot and run one episode: wait (robot still) for the first chunk, then tick."""
        step, planner, transport = self.step, self.planner, self.transport
        obs = step.begin_episode(episode, seed=seed)
        result = EpisodeResult(episode)
        self.tick = None
        self.rejected_in_a_row = 0
        planner.begin_episode(episode, anchor=step.safety.last_command)
        transport.begin_episode(episode, seed)
        if not self._first_chunk(result):
            step.hold()
            return result
        clock = make_clock(1.0 / self.run.hz, step.robot.realtime)
        clock.start()
        tick = 0
        while tick < self.run.max_steps:
            scheduled, actual = clock.wait(tick)
            self.tick = tick
            read_ms = 0.0
            if tick > 0:  # tick 0 acts on the observation the first chunk was computed from
                obs, read_ms = step.observe()
            step.score(result, obs)
            if result.success and self.limits.stop_on_success:
                break
            c0 = time.perf_counter()
            self._check_timeout(time.monotonic())
            self._check_health(time.monotonic())
            requested = result.inferences
            self._exchange(tick, result)
            if transport.blocking and result.inferences > requested:
                # the robot held while the model thought: this tick (the new chunk's first action)
                # is due now, the next one period from now
                anchor = clock.now()
                clock.start(anchor - tick * clock.period_s)
                scheduled = actual = anchor
            if self.sync and self.fault is not None:
                # sync: the robot held while the model failed; there is no chunk to finish: end here
                step.hold()
                break
            if self.sync and planner.wants_inference():
                # sync: the chunk's execute horizon is used up and no new chunk came (rejected): hold
                planned = Step(None, planner.scheduler.chunk_id, planner.scheduler.t, False)
            else:
                planned = planner.step()
            compute_ms = (time.perf_counter() - c0) * 1e3
            step.execute_tick(result, obs, planned, tick, scheduled, actual, read_ms, compute_ms)
            tick += 1
            if self.fault is not None and (self.sync or planner.remaining == 0):
                # the current chunk is used up (sync: the robot holds between chunks): hold, end the run
                step.hold()
                break
        else:  # the episode ran out of ticks: its outcome is the state after the last command
            # sync execution reads after every send, the last one included (its recordings hold the
            # start observation + one per tick); asynchronous execution reads before each tick's action
            # (one per tick): this read only scores the last command there
            obs, _ = step.observe(record=self.sync)
            step.score(result, obs)
        result.ticks = tick
        result.underruns = planner.scheduler.underruns
        step.end_episode(episode, result.success)
        self.telemetry.event(
            "episode_end", episode=episode, ticks=tick, success=result.success, underruns=result.underruns
        )
        return result

    def _first_chunk(self, result: EpisodeResult) -> bool:
        """Ask for the episode's first chunk and wait for it with the robot still (no ticks);
        False after a fault (no chunk, a timeout, a dead inference side, rejected chunks)."""
        deadline = time.monotonic() + self.limits.first_chunk_timeout_s
        while True:
            if self._exchange(0, result):
                return True
            now = time.monotonic()
            self._check_timeout(now)
            if self._check_health(now):  # restarted: a fresh inference side gets its start-up time
                self.step.hold()
                deadline = now + self.limits.first_chunk_timeout_s + self.transport.startup_timeout_s
            if self.fault is None and now > deadline:
                self._fail(f"no first chunk within {self.limits.first_chunk_timeout_s} s", FaultKind.NO_FIRST_CHUNK)
            if self.fault is not None:
                return False
            time.sleep(0.001)
