"""The inference process of RTC: owns the policy, never touches the robot.

Started with ``spawn`` (CUDA-safe); it receives the picklable run object and the shared-memory layout
once, builds the policy *here* (``PolicyRunner.from_run``: build, freeze, warm up), then loops: wait
for the control side's next request (its ``RTCPlanner`` decided when, and cut the snapshot: the
observation and the ``Guide``: the previous chunk's rest in model space, the actions of it executed,
the delay estimate), run the policy on
exactly that, publish the chunk. A policy that raises is answered with the error instead of a chunk
(its traceback in the run's log) and the process waits for the next request, as the in-process, Ray
and fleet transports do; the control side decides what the fault means. It keeps no RTC state. Log records (tracebacks included) go to the
parent through a queue so they land in the run's log. SIGINT is ignored: the parent decides when to stop
(stop flag).

Watchdog side: a thread of its own writes the heartbeat every ``HEARTBEAT_PERIOD_S`` from the first
moment, whatever the policy call is doing (a long inference is not a dead process; the control side
bounds one inference with ``inference_timeout_s``), and ends the process within that period when the
parent is gone -- while the policy is still being built or warmed up too -- unlinking the run's shared
block first (the dead owner cannot).
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import signal
import threading
import time
import traceback
from dataclasses import dataclass
from typing import Any

from algorithms.rtc.layout import (
    HeartbeatState,
    HeartbeatTime,
    Layout,
    RequestSlot,
    SharedState,
    decode_request,
    encode_error_reply,
    encode_reply,
)
from policies.base import Guidance, policy_info
from policies.runner import Guide, PolicyRunner
from services import realtime
from services.errors import FaultKind
from services.logs import FILE_ONLY
from services.shm import SharedArrays

log = logging.getLogger(__name__)

HEARTBEAT_PERIOD_S = 0.05


@dataclass(frozen=True)
class WorkerConfig:
    """How the inference process runs (the RTC knobs stay on the control side, in the planner)."""

    poll_interval_s: float
    inference_threads: int | None = None
    log_level: int = logging.INFO


def _watchdog(shared: SharedState, parent_pid: int, stop: threading.Event) -> None:
    """Heartbeat + orphan check, independent of the policy call. An orphan unlinks the run's block
    before it exits: its owner (the control process) died without the chance to."""
    while not stop.is_set():
        shared.hb_f64[HeartbeatTime.BEAT] = time.monotonic()
        if os.getppid() != parent_pid:
            try:
                from _posixshmem import shm_unlink

                shm_unlink("/" + shared.layout.block)
            except OSError:
                pass
            os._exit(1)  # the control process is gone: nothing may keep computing for a robot
        stop.wait(HEARTBEAT_PERIOD_S)


def inference_main(run: Any, layout: Layout, cfg: WorkerConfig, log_queue: Any, parent_pid: int) -> None:
    """Process entry point (must stay importable at module level for ``spawn``)."""
    if os.getppid() != parent_pid:  # the parent died while this process was starting
        os._exit(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    root = logging.getLogger()
    root.handlers[:] = [logging.handlers.QueueHandler(log_queue)]
    root.setLevel(cfg.log_level)
    realtime.apply_child(realtime.ChildSettings.for_role(run.cfg.get("realtime"), "inference"), "rtc-inference")
    arrays = None
    stop = threading.Event()
    worker = None
    try:
        arrays = SharedArrays.attach(layout.block, list(layout.specs))
        shared = SharedState(arrays, layout)
        threading.Thread(target=_watchdog, args=(shared, parent_pid, stop), name="rtc-heartbeat", daemon=True).start()
        worker = _Worker(run, shared, cfg, parent_pid, log_queue)
        worker.loop()
    except BaseException as exc:  # noqa: BLE001 - everything must reach the parent's log
        # the run's log file keeps the traceback; the console gets the parent's one named fault line
        log.error("inference process failed: %s\n%s", exc, traceback.format_exc(), extra=FILE_ONLY)
        kind = FaultKind.INFERENCE_ERROR if worker is not None and worker.ready else FaultKind.STARTUP
        log_queue.put(("fault", f"{type(exc).__name__}: {exc}", str(kind)))
        raise SystemExit(1)
    finally:
        stop.set()
        if arrays is not None:
            arrays.close()  # never unlinks: not the owner


class _Worker:
    def __init__(self, run: Any, shared: SharedState, cfg: WorkerConfig, parent_pid: int, events: Any) -> None:
        self.run = run
        self.shared = shared
        self.cfg = cfg
        self.parent_pid = parent_pid
        self.events = events
        self._warned_vjp = False
        self.ready = False

    def alive(self) -> bool:
        return os.getppid() == self.parent_pid and self.shared.ctrl_i64[RequestSlot.STOP] == 0

    def loop(self) -> None:
        shared = self.shared
        shared.hb_i64[HeartbeatState.PID] = os.getpid()
        self.runner = PolicyRunner.from_run(self.run, self.cfg.inference_threads)
        # requests issued before this process was ready belong to a predecessor: the control side
        # sends a new one once it sees READY
        handled = int(shared.read_counters()[RequestSlot.SEQ])
        shared.hb_i64[HeartbeatState.READY] = 1
        self.ready = True
        log.info(
            "inference process %d ready (policy built and warmed up in %.2f s)", os.getpid(), self.runner.startup_s
        )
        while self.alive():
            if int(shared.read_counters()[RequestSlot.SEQ]) == handled:
                time.sleep(self.cfg.poll_interval_s)
                continue
            handled = self.infer_once()

    def infer_once(self) -> int:
        """Answer the newest request (its chunk, or the error the policy raised); returns its seq."""
        shared = self.shared
        t_start = time.monotonic()
        seq, obs, guide = decode_request(shared)
        if guide is not None:
            self._check_vjp(guide)
        try:
            result = self.runner.infer_observation(obs.state, obs.images, obs.info, guide)
        except Exception as exc:  # noqa: BLE001 - answered as this request's error, the process lives on
            log.error("inference for request %d failed: %s\n%s", seq, exc, traceback.format_exc(), extra=FILE_ONLY)
            encode_error_reply(shared, seq, f"{type(exc).__name__}: {exc}", t_start, time.monotonic())
            return seq
        encode_reply(
            shared,
            seq,
            result.model,
            result.robot,
            t_start,
            time.monotonic(),
            result.policy_ms,
            policy_info(self.runner.policy),
        )
        shared.hb_i64[HeartbeatState.INFERENCES] += 1
        log.debug(
            "inference for request %d: %s policy %.1f ms",
            seq,
            "plain" if guide is None else f"execute horizon {guide.execute_horizon} delay {guide.delay_ticks}",
            result.policy_ms,
        )
        return seq

    def _check_vjp(self, guide: Guide) -> None:
        meta = self.runner.metadata
        if guide.guidance == Guidance.VJP and meta is not None and not meta.supports_vjp and not self._warned_vjp:
            self._warned_vjp = True
            log.warning(
                "rtc: guidance=vjp but policy %s declares supports_vjp=False; its guided_inference "
                "decides what to do (use guidance=blend for non-differentiable samplers)",
                type(self.runner.policy).__name__,
            )
