"""RTC at run time: the control loop (this process) + the inference process (spawned).

The control loop runs in the process that called ``RTCAlgorithm.run()`` (the app's main process),
which builds and owns the robot, creates and unlinks the shared memory, and never waits on
inference: per tick it reads the robot, merges a new chunk if one was published, publishes the
observation and the chunk index, takes ``chunk[t]`` (or holds on underrun), filters it and sends it.

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
from typing import Any

from algorithms.common import AlgorithmFault
from algorithms.rtc.control import RTCControlLoop, check_rtc_knobs
from algorithms.rtc.layout import RF, C, H, Layout, R, SharedState, build_specs
from algorithms.rtc.shm import SharedArrays, ShmRegistry, unique_block_name
from algorithms.rtc.worker import WorkerConfig, inference_main

log = logging.getLogger(__name__)


class RTCAlgorithm:
    """Real-time chunking (DESIGN.md section 4). Every knob is a constructor argument.

    ``execute_horizon`` (ticks): the target number of actions executed from each chunk; the
    trigger is ``t >= s_min`` with ``s_min = execute_horizon`` unless given. ``delay_window`` (b)
    and ``initial_delay_ticks`` configure ``d = max(last b delays)``; the first
    ``warmup_inferences_excluded`` delays are not recorded. ``guidance``/``schedule``/
    ``max_guidance_weight`` are handed to ``policy.guided_inference``. ``inference_threads``
    caps torch's CPU threads in the inference process (null = torch's default), so a CPU policy
    leaves a core to the control loop.
    """

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
        stall_timeout_s: float = 5.0,
        restart_on_failure: bool = False,
        max_restarts: int = 3,
        startup_timeout_s: float = 120.0,
        first_chunk_timeout_s: float = 30.0,
        stop_timeout_s: float = 1.0,
        poll_interval_s: float = 0.001,
        inference_threads: int | None = None,
        stop_on_success: bool = True,
    ) -> None:
        self.s_min = check_rtc_knobs(run, execute_horizon, s_min, guidance, schedule, delay_window,
                                     initial_delay_ticks, warmup_inferences_excluded)
        if stall_timeout_s <= 0 or poll_interval_s <= 0:
            raise ValueError("algorithm.stall_timeout_s and poll_interval_s must be > 0")
        self.run_obj = run
        self.execute_horizon = int(execute_horizon)
        self.guidance = guidance
        self.schedule = schedule
        self.stall_timeout_s = float(stall_timeout_s)
        self.restart_on_failure = bool(restart_on_failure)
        self.max_restarts = int(max_restarts)
        self.startup_timeout_s = float(startup_timeout_s)
        self.first_chunk_timeout_s = float(first_chunk_timeout_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.stop_on_success = bool(stop_on_success)
        self.worker_cfg = WorkerConfig(
            s_min=self.s_min, delay_window=int(delay_window), initial_delay_ticks=int(initial_delay_ticks),
            warmup_inferences_excluded=int(warmup_inferences_excluded), guidance=guidance,
            schedule=schedule, max_guidance_weight=float(max_guidance_weight),
            poll_interval_s=float(poll_interval_s),
            inference_threads=None if inference_threads is None else int(inference_threads),
            log_level=logging.getLogger().getEffectiveLevel(),
        )

    def run(self) -> dict[str, Any]:
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
        self.restarts = 0
        self.episode_no = 0
        self.ack = 0  # last result seq consumed (published to the inference process with the chunk)
        self.chunk_d_actual = -1  # d_actual of the merge that made the current chunk

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
        self.chunk_d_actual = -1
        self._publish(tick=0, tick_time=time.monotonic(), chunk=True)

    def _poll_first(self, episode: int) -> bool:
        if self._take_result(0, episode):
            self._publish(tick=0, tick_time=time.monotonic(), chunk=True)
            return True
        if int(self.shared.ctrl_i64[C.RESULT_ACK]) != self.ack:  # rejected/discarded: say so
            self._publish(tick=0, tick_time=time.monotonic())
        cause = self._check_worker(time.monotonic())
        if cause is not None:
            self.step.hold()
            self._on_fault(cause)
            if self.fault is None:  # restarted: the new process gets its start-up time too
                self.first_chunk_deadline = (time.monotonic() + self.algo.first_chunk_timeout_s
                                             + self.algo.startup_timeout_s)
        return False

    def _exchange(self, tick: int, episode: int, now: float) -> None:
        cause = self._check_worker(now) if self.fault is None and self.proc is not None else None
        if cause is not None:
            self._on_fault(cause)
        merged = self._take_result(tick, episode)
        if self.fault is None:
            self._publish(tick, now, chunk=merged)

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
        shared.set_counters({C.RESULT_ACK: self.ack})
        self.worker_fault = None
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
                continue
            if isinstance(item, logging.LogRecord):
                logging.getLogger(item.name).handle(item)

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.algo.startup_timeout_s
        while self.shared.hb_i64[H.READY] != 1:
            if not self.proc.is_alive():
                time.sleep(0.1)  # let the traceback reach the log
                self.fault = f"inference process failed at start: {self._death_cause()}"
                raise AlgorithmFault(self.fault)
            if time.monotonic() > deadline:
                self.fault = f"inference process not ready after {self.algo.startup_timeout_s} s"
                raise AlgorithmFault(self.fault)
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

    def _check_worker(self, now: float) -> str | None:
        """Cause of a dead or stalled inference process, or None while it is healthy."""
        if self.proc is None:
            return "inference process not running"
        if not self.proc.is_alive():
            return self._death_cause()
        if self.shared.hb_i64[H.READY] != 1:
            if now - self.worker_started > self.algo.startup_timeout_s:
                return f"inference process not ready after {self.algo.startup_timeout_s} s"
            return None
        beat = float(self.shared.hb_f64[H.BEAT])
        if now - beat > self.algo.stall_timeout_s:
            return f"inference process stalled: no heartbeat for {now - beat:.2f} s (stall_timeout_s={self.algo.stall_timeout_s})"
        return None

    def _on_fault(self, cause: str) -> None:
        self._report_fault(cause)
        if self.algo.restart_on_failure and self.restarts < self.algo.max_restarts:
            self._stop_worker(graceful=False)
            self.restarts += 1
            self._start_worker()
            return
        self.fault = cause
        self._stop_worker(graceful=False)

    # ------------------------------------------------------------------ the shared-memory exchange
    def _publish(self, tick: int, tick_time: float, chunk: bool = False) -> None:
        snap = self.step.history.snapshot()
        last = self.step.history.last
        sched = self.scheduler
        self.shared.publish_observation(
            snap.state, snap.images, last.info if last is not None else {},
            {C.EPISODE: self.episode_no, C.TICK: tick, C.CHUNK_ID: sched.chunk_id, C.T: sched.t,
             C.OBS_VALID: 1, C.RESULT_ACK: self.ack, C.CHUNK_D_ACTUAL: self.chunk_d_actual},
            obs_time=snap.timestamp, tick_time=tick_time,
            chunk=(sched.chunk_model, sched.chunk_robot) if chunk else None,
        )

    def _take_result(self, tick: int, episode: int) -> bool:
        """Merge a published result if there is one; True if the current chunk changed.

        The acknowledgement and the new chunk reach the inference process together, in the same
        seqlocked ``_publish`` of this tick: it must never see "result consumed" next to the old
        chunk, or it would start a useless inference from the old chunk.
        """
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
        if meta[R.EPISODE] != self.episode_no or meta[R.BASE_CHUNK_ID] != self.scheduler.chunk_id:
            self.discarded_results += 1
            return False
        first = not self.scheduler.has_chunk
        record = dict(
            episode=episode, t_start=float(times[RF.T_START]), t_end=float(times[RF.T_END]),
            latency_ms=(float(times[RF.T_END]) - float(times[RF.T_START])) * 1e3,
            policy_ms=float(times[RF.POLICY_MS]), d_estimate=int(meta[R.D_ESTIMATE]),
            s=int(meta[R.S]), snapshot_tick=int(meta[R.SNAPSHOT_TICK]), merge_tick=tick,
            guidance=self.algo.guidance if meta[R.GUIDED] else "none",
        )
        d_actual = self._merge(tick, episode, robot, model, None if first else int(meta[R.S]), record)
        if d_actual is None:
            return False
        self.chunk_d_actual = d_actual if self.scheduler.merges else -1
        return True
