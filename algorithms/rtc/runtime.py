"""RTC at run time: the control loop (this process) + the inference process (spawned).

The control loop runs in the process that called ``RTCAlgorithm.run()`` (the app's main process),
which builds and owns the robot, creates and unlinks the shared memory, and never waits on
inference: per tick it reads the robot, merges a new chunk if one was published, and, when its
``RTCPlanner`` starts an inference, publishes the request (that tick's observation, ``prev``, ``s``,
``d``); then it takes ``chunk[t]`` (or holds on underrun), filters it and sends it.

Faults: the inference process' heartbeat and liveness are checked every tick. When it dies or
stalls past ``stall_timeout_s`` the loop keeps executing what is left of the current chunk
(through the safety filter), then holds the last safe command and raises ``AlgorithmFault`` with
the cause -- or, with ``restart_on_failure``, starts a new inference process and carries on.
Ctrl-C / SIGTERM: the robot is sent its hold command, the inference process is stopped (flag,
then terminate, then kill; well inside 2 s) and the shared block is unlinked.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from typing import Any

from algorithms.common import AlgorithmFault, FaultKind
from algorithms.rtc.config import RTCConfig
from algorithms.rtc.control import RTCControlLoop
from algorithms.rtc.layout import GUIDANCE_CODES, RF, SCHEDULE_CODES, C, H, Layout, R, SharedState, build_specs
from algorithms.rtc.planner import Request
from algorithms.rtc.shm import SharedArrays, ShmRegistry, unique_block_name
from algorithms.rtc.worker import WorkerConfig, inference_main
from services.knobs import NonNegativeInt, PositiveFloat, PositiveInt

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class RTCAlgorithm(RTCConfig):
    """Real-time chunking (DESIGN.md section 4): the RTC knobs (``RTCConfig``) plus how the
    inference process is run and watched.

    ``stall_timeout_s``: no heartbeat this long = the process is frozen (its heartbeat thread beats
    whatever the policy does). ``inference_timeout_s``: one inference longer than this is a fault.
    ``restart_on_failure``/``max_restarts``:
    start a new inference process instead of ending the run. ``inference_threads`` caps torch's CPU
    threads in the inference process (null = torch's default), so a CPU policy leaves a core to the
    control loop.
    """

    run: Any
    stall_timeout_s: PositiveFloat = 5.0
    inference_timeout_s: PositiveFloat = 10.0
    restart_on_failure: bool = False
    max_restarts: NonNegativeInt = 3
    startup_timeout_s: PositiveFloat = 120.0
    first_chunk_timeout_s: PositiveFloat = 30.0
    stop_timeout_s: PositiveFloat = 1.0
    poll_interval_s: PositiveFloat = 0.001
    inference_threads: PositiveInt | None = None
    stop_on_success: bool = True

    def __post_init__(self) -> None:
        super().__post_init__()
        self.check_chunk_size(self.run.policy_metadata.chunk_size)
        if self.stall_timeout_s <= 0 or self.poll_interval_s <= 0:
            raise ValueError("algorithm.stall_timeout_s and poll_interval_s must be > 0")
        self.worker_cfg = WorkerConfig(
            poll_interval_s=float(self.poll_interval_s),
            inference_threads=None if self.inference_threads is None else int(self.inference_threads),
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def execute(self) -> dict[str, Any]:
        return _Runtime(self).execute()


class _Runtime(RTCControlLoop):
    """One run's control side over shared memory (kept out of the picklable algorithm object)."""

    name = "rtc"

    def __init__(self, algo: RTCAlgorithm) -> None:
        super().__init__(algo)
        self.ctx = mp.get_context("spawn")
        self.proc: Any = None
        self.log_queue: Any = None
        self.log_thread: threading.Thread | None = None
        self.arrays: SharedArrays | None = None
        self.shared: SharedState | None = None
        self.layout: Layout | None = None
        self.worker_fault: str | None = None
        self.worker_fault_kind = FaultKind.INFERENCE_ERROR
        self.restarts = 0
        self.episode_no = 0
        self.ack = 0  # last result seq consumed

    # ------------------------------------------------------------------ control-loop hooks
    def _start_inference(self, robot: Any) -> None:
        # shared memory is laid out from a first observation, and the policy is built and warmed
        # up, before the first episode homes the robot: the episode's clock starts with the model ready
        self._create_shared(self.run.policy_metadata, robot.read())
        self._start_worker()
        self._wait_ready()

    def _stop_inference(self) -> None:
        self._stop_worker()
        self._close_log_queue()
        self._release_shared()

    def _summary_fields(self) -> dict[str, Any]:
        return {"restarts": self.restarts}

    def _begin_episode(self, episode: int) -> None:
        self.episode_no += 1
        self._request_if_due(0)

    def _can_send(self) -> bool:
        return self.proc is not None and self.shared.hb_i64[H.READY] == 1

    def _poll_first(self, episode: int) -> bool:
        if self._take_result(0, episode):
            return True
        self._request_if_due(0)  # after a rejected first chunk, or once a restarted process is ready
        cause = self._check_worker(time.monotonic())
        if cause is not None:
            self.step.hold()
            self._inference_fault(*cause)
            if self.fault is None:  # restarted: the new process gets its start-up time too
                self.first_chunk_deadline = (time.monotonic() + self.algo.first_chunk_timeout_s
                                             + self.algo.startup_timeout_s)
        return False

    def _exchange(self, tick: int, episode: int, now: float) -> None:
        cause = self._check_worker(now) if self.fault is None and self.proc is not None else None
        if cause is not None:
            self._inference_fault(*cause)
        self._take_result(tick, episode)
        self._request_if_due(tick)

    # ------------------------------------------------------------------ shared memory + worker
    def _create_shared(self, meta: Any, first_obs: Any) -> None:
        history = self.run.make_history()
        history.push(first_obs)
        snap = history.snapshot()
        info = first_obs.info
        specs, info_keys, info_scalar = build_specs(
            snap.state.shape, snap.images, info, meta.chunk_size, meta.action_dim
        )
        name = unique_block_name("run")
        self.layout = Layout(name, tuple(specs), meta.chunk_size, meta.action_dim,
                             tuple(snap.images), info_keys, info_scalar)
        self.arrays = SharedArrays.create(specs, name=name)
        ShmRegistry.add(self.arrays)
        self.shared = SharedState(self.arrays, self.layout)
        log.info("rtc: shared block %s, %.1f kB", name, self.arrays.shm.size / 1024)

    def _release_shared(self) -> None:
        if self.arrays is not None:
            self.shared = None
            ShmRegistry.release(self.arrays)
            self.arrays = None

    def _start_worker(self) -> None:
        shared = self.shared
        assert shared is not None and self.layout is not None
        if shared.res_lock.counter[0] % 2:  # a killed writer left it mid-write
            shared.res_lock.counter[0] += 1
        shared.hb_i64[H.READY] = 0
        shared.hb_f64[H.BEAT] = time.monotonic()
        shared.ctrl_i64[C.STOP] = 0
        self.ack = int(shared.res_i64[R.SEQ])
        self.worker_fault = None
        self.worker_fault_kind = FaultKind.INFERENCE_ERROR
        if self.log_queue is None:
            self.log_queue = self.ctx.Queue()
            self.log_thread = threading.Thread(target=self._drain_logs, name="rtc-inference-log", daemon=True)
            self.log_thread.start()
        self.proc = self.ctx.Process(
            target=inference_main, name="rtc-inference",
            args=(self.run, self.layout, self.algo.worker_cfg, self.log_queue, os.getpid()),
            daemon=True,
        )
        self.proc.start()
        self.worker_started = time.monotonic()
        self.telemetry.event("inference_process_start", pid=self.proc.pid, restarts=self.restarts)
        log.info("rtc: inference process %d started", self.proc.pid)

    def _drain_logs(self) -> None:
        while True:
            try:
                item = self.log_queue.get()
            except (EOFError, OSError):
                return
            if item is None:
                return
            if isinstance(item, tuple) and item and item[0] == "fault":
                self.worker_fault = item[1]
                self.worker_fault_kind = FaultKind(item[2]) if len(item) > 2 else FaultKind.INFERENCE_ERROR
                continue
            if isinstance(item, logging.LogRecord):
                logging.getLogger(item.name).handle(item)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.algo.startup_timeout_s
        while self.shared.hb_i64[H.READY] != 1:
            if not self.proc.is_alive():
                time.sleep(0.1)  # let the traceback reach the log
                raise self._fail(f"inference process failed at start: {self._death_cause()}", FaultKind.STARTUP)
            if time.monotonic() > deadline:
                raise self._fail(f"inference process not ready after {self.algo.startup_timeout_s} s", FaultKind.STARTUP)
            time.sleep(0.01)

    def _death_cause(self) -> str:
        code = self.proc.exitcode if self.proc is not None else None
        cause = f"inference process exited with code {code}"
        if code is not None and code < 0:
            cause = f"inference process killed by signal {-code}"
        if self.worker_fault:
            cause += f" ({self.worker_fault})"
        return cause

    def _stop_worker(self, graceful: bool = True) -> None:
        """Stop the inference process: stop flag (graceful), then SIGTERM, then SIGKILL.

        ``graceful=False`` (fault path) kills at once so the control loop never blocks on a
        stalled process.
        """
        proc = self.proc
        if proc is None:
            return
        if graceful:
            if self.shared is not None:
                self.shared.ctrl_i64[C.STOP] = 1
            proc.join(self.algo.stop_timeout_s * 0.6)
            if proc.is_alive():
                proc.terminate()
                proc.join(self.algo.stop_timeout_s * 0.3)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)
        self.proc = None

    def _close_log_queue(self) -> None:
        if self.log_queue is None:
            return
        try:
            self.log_queue.put(None)
            if self.log_thread is not None:
                self.log_thread.join(0.5)
        except (OSError, ValueError):
            pass
        self.log_queue.close()
        self.log_queue.cancel_join_thread()
        self.log_queue = None
        self.log_thread = None

    def _check_worker(self, now: float) -> tuple[str, FaultKind] | None:
        """Cause and kind of a dead or stalled inference process, or None while it is healthy. The
        heartbeat comes from a thread of its own in that process, so a long inference is not a stall
        (``inference_timeout_s`` bounds that); a frozen or dead process is."""
        if self.proc is None:
            return "inference process not running", FaultKind.INFERENCE_DIED
        if not self.proc.is_alive():
            if self.worker_fault is None:
                time.sleep(0.05)  # its last words (the exception) may still be in the log queue
            kind = self.worker_fault_kind if self.worker_fault else FaultKind.INFERENCE_DIED
            if self.shared.hb_i64[H.READY] != 1 and kind is FaultKind.INFERENCE_ERROR:
                kind = FaultKind.STARTUP
            return self._death_cause(), kind
        if self.shared.hb_i64[H.READY] != 1:
            if now - self.worker_started > self.algo.startup_timeout_s:
                return f"inference process not ready after {self.algo.startup_timeout_s} s", FaultKind.STARTUP
            return None
        beat = float(self.shared.hb_f64[H.BEAT])
        if now - beat > self.algo.stall_timeout_s:
            return (f"inference process stalled: no heartbeat for {now - beat:.2f} s "
                    f"(stall_timeout_s={self.algo.stall_timeout_s})", FaultKind.INFERENCE_STALLED)
        return None

    def _on_fault(self, fault: AlgorithmFault) -> bool:
        self._stop_worker(graceful=False)
        if self.algo.restart_on_failure and self.restarts < self.algo.max_restarts:
            self.restarts += 1
            self._start_worker()
            return True
        return False

    # ------------------------------------------------------------------ the shared-memory exchange
    def _send(self, req: Request) -> None:
        history = self.step.history
        snap = history.snapshot(images=False)  # the frames go straight from their rings into the block
        last = history.last
        guide = req.guide
        counters = {C.EPISODE: self.episode_no, C.TICK: req.tick, C.REQ_SEQ: req.seq,
                    C.REQ_S: guide.executed_ticks if guide is not None else req.s, C.REQ_D: req.d, C.REQ_GUIDED: int(guide is not None)}
        if guide is not None:
            counters[C.REQ_GUIDANCE] = GUIDANCE_CODES.index(guide.guidance)
            counters[C.REQ_SCHEDULE] = SCHEDULE_CODES.index(guide.schedule)
        self.shared.publish_request(
            snap.state, history.copy_images_into, last.info if last is not None else {}, counters,
            obs_time=snap.timestamp, tick_time=time.monotonic(),
            prev=guide.prev_model if guide is not None else None,
            max_guidance_weight=guide.max_guidance_weight if guide is not None else 0.0,
        )

    def _take_result(self, tick: int, episode: int) -> bool:
        """Merge a published result if there is one; True if the current chunk changed."""
        shared = self.shared
        if self.fault is not None or self.proc is None:
            return False
        if int(shared.res_i64[R.SEQ]) == self.ack:
            return False
        try:
            model, robot, meta, times = shared.read_result()
        except TimeoutError:
            return False
        self.ack = int(meta[R.SEQ])
        seq, req = int(meta[R.REQ_SEQ]), self.planner.pending
        if req is None or req.seq != seq:  # answers a request of an earlier episode or process
            self.discarded_results += 1
            return False
        record = self._record(
            req, episode, tick, t_start=float(times[RF.T_START]), t_end=float(times[RF.T_END]),
            latency_ms=(float(times[RF.T_END]) - float(times[RF.T_START])) * 1e3,
            policy_ms=float(times[RF.POLICY_MS]),
        )
        return self._merge(tick, episode, seq, robot, model, record) is not None
