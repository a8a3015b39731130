"""The shared-memory transport of ``algorithm=rtc``: a spawned inference process answers requests.

The control loop (``algorithms/loop.py``) runs in the process that called ``RTCAlgorithm.execute()``
(the app's main process), which owns the robot and creates and unlinks the shared memory; it never
waits on inference. Per request this transport publishes the observation history and the guide into
the block (``layout.encode_request``); the inference process (``worker.py``) publishes the chunk back
(``layout.encode_reply``), which ``poll`` reads without blocking.

Health: the inference process' heartbeat and liveness are checked every tick. When it dies or stalls
past ``stall_timeout_s`` the loop finishes the current chunk and holds -- or, while the loop's
``max_restarts`` allows, this transport starts a new inference process and the run carries on. A
policy that raises does not end the process: the error comes back as the reply to its request.
Every exit: the inference process is stopped (flag, then terminate, then kill; well inside 2 s) and
the shared block is unlinked. ``policy.python`` (a path, optional) runs the inference process under
that interpreter (a side environment with the policy's own dependencies); it imports only numpy,
torch, omegaconf and this repository's modules.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from algorithms.rtc.layout import (
    HeartbeatState,
    HeartbeatTime,
    Layout,
    ReplySlot,
    RequestSlot,
    SharedState,
    build_specs,
    decode_reply,
    encode_request,
)
from algorithms.rtc.worker import WorkerConfig, inference_main
from algorithms.settings import check_ranges
from algorithms.transport import InferenceReply, InferenceRequest, TransportBase, TransportFault, TransportSession
from services.devproc import exit_cause
from services.errors import AlgorithmFault, FaultKind
from services.knobs import PositiveFloat, PositiveInt
from services.shm import SharedArrays, ShmRegistry, unique_block_name

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class InferenceProcessConfig:
    """How the inference process is run and watched. ``stall_timeout_s``: no heartbeat this long =
    the process is frozen (its heartbeat thread beats whatever the policy does).
    ``startup_timeout_s``: policy build + warm-up (a restarted process gets it too; how often one is
    restarted is the loop's ``RestartConfig``). ``stop_timeout_s``: graceful stop before SIGTERM /
    SIGKILL. ``poll_interval_s``: the process' poll for the next request. ``inference_threads`` caps
    torch's CPU threads in the inference process (null = torch's default), so a CPU policy leaves a
    core to the control loop."""

    stall_timeout_s: PositiveFloat = 5.0
    startup_timeout_s: PositiveFloat = 120.0
    stop_timeout_s: PositiveFloat = 1.0
    poll_interval_s: PositiveFloat = 0.001
    inference_threads: PositiveInt | None = None

    def __post_init__(self) -> None:
        check_ranges(self)

    def worker_config(self) -> WorkerConfig:
        return WorkerConfig(
            poll_interval_s=float(self.poll_interval_s),
            inference_threads=None if self.inference_threads is None else int(self.inference_threads),
            log_level=logging.getLogger().getEffectiveLevel(),
        )


def start_process(proc: Any, python: str | None) -> None:
    """``proc.start()`` (a ``spawn`` process); ``python`` (a path, or None for this interpreter) runs
    it. ``multiprocessing``'s executable is process-wide, so it is set around this one start only
    (cameras, physics and sinks started later keep this interpreter)."""
    if not python:
        proc.start()
        return
    from multiprocessing import spawn

    previous = spawn.get_executable()
    previous_preparation = spawn.get_preparation_data
    previous_pythonpath = os.environ.get("PYTHONPATH")

    def preparation_data(name: str) -> dict[str, Any]:
        # spawn replaces the child's sys.path with ours: this interpreter's site-packages (compiled
        # for another Python) would shadow the other interpreter's own. The child keeps its own
        # path and finds this repository through PYTHONPATH instead.
        data = previous_preparation(name)
        data.pop("sys_path", None)
        return data

    repo = str(Path(__file__).resolve().parents[2])
    os.environ["PYTHONPATH"] = os.pathsep.join([repo] + ([previous_pythonpath] if previous_pythonpath else []))
    spawn.set_executable(os.path.expanduser(str(python)))
    spawn.get_preparation_data = preparation_data
    try:
        proc.start()
    finally:
        spawn.set_executable(previous)
        spawn.get_preparation_data = previous_preparation
        if previous_pythonpath is None:
            os.environ.pop("PYTHONPATH", None)
        else:
            os.environ["PYTHONPATH"] = previous_pythonpath


class SharedMemoryTransport(TransportBase):
    """A spawned inference process over one shared-memory block per run."""

    name = "shared-memory"

    def __init__(self, settings: InferenceProcessConfig) -> None:
        self.settings = settings
        self.startup_timeout_s = settings.startup_timeout_s
        self.ctx: Any = None
        self.python: str | None = None
        self.proc: Any = None
        self.log_queue: Any = None
        self.log_thread: threading.Thread | None = None
        self.arrays: SharedArrays | None = None
        self.shared: SharedState | None = None
        self.layout: Layout | None = None
        self.worker_fault: str | None = None
        self.worker_fault_kind = FaultKind.INFERENCE_ERROR
        self.worker_started = 0.0
        self.restarts = 0
        self.episode_no = 0
        self.ack = 0  # last result seq consumed
        self.session: TransportSession | None = None

    # ------------------------------------------------------------------ protocol
    def start(self, session: TransportSession) -> None:
        # shared memory is laid out from a first observation, and the policy is built and warmed
        # up, before the first episode homes the robot: the episode's clock starts with the model ready
        self.session = session
        self.ctx = mp.get_context("spawn")
        self.python = session.run.cfg.policy.get("python")
        self._create_shared(session.run, session.robot.read())
        self._start_worker()
        self._wait_ready()

    def begin_episode(self, episode: int, seed: int) -> None:
        self.episode_no += 1

    def ready(self) -> bool:
        return self.proc is not None and self.shared.hb_i64[HeartbeatState.READY] == 1

    def submit(self, request: InferenceRequest) -> None:
        encode_request(self.shared, request, self.episode_no, time.monotonic())

    def poll(self, tick: int) -> InferenceReply | None:
        shared = self.shared
        if self.proc is None or int(shared.res_i64[ReplySlot.SEQ]) == self.ack:
            return None
        try:
            self.ack, reply = decode_reply(shared)
        except TimeoutError:
            return None
        return reply

    def health(self, now: float) -> TransportFault | None:
        """Why the inference process is dead or stalled, or None while it is healthy. The heartbeat
        comes from a thread of its own in that process, so a long inference is not a stall
        (``inference_timeout_s`` bounds that); a frozen or dead process is."""
        if self.proc is None:
            return TransportFault("inference process not running", FaultKind.INFERENCE_DIED)
        if not self.proc.is_alive():
            if self.worker_fault is None:
                time.sleep(0.05)  # its last words (the exception) may still be in the log queue
            kind = self.worker_fault_kind if self.worker_fault else FaultKind.INFERENCE_DIED
            if self.shared.hb_i64[HeartbeatState.READY] != 1 and kind is FaultKind.INFERENCE_ERROR:
                kind = FaultKind.STARTUP
            return TransportFault(self._death_cause(), kind)
        if self.shared.hb_i64[HeartbeatState.READY] != 1:
            if now - self.worker_started > self.settings.startup_timeout_s:
                return TransportFault(
                    f"inference process not ready after {self.settings.startup_timeout_s} s", FaultKind.STARTUP
                )
            return None
        beat = float(self.shared.hb_f64[HeartbeatTime.BEAT])
        if now - beat > self.settings.stall_timeout_s:
            return TransportFault(
                f"inference process stalled: no heartbeat for {now - beat:.2f} s "
                f"(stall_timeout_s={self.settings.stall_timeout_s})",
                FaultKind.INFERENCE_STALLED,
            )
        return None

    def restart(self) -> bool:
        """A new inference process on the same block (the loop decided that one is due)."""
        self._stop_worker(graceful=False)  # never block the control loop on a stalled process
        self.restarts += 1
        self._start_worker()
        return True

    def stop(self) -> None:
        self._stop_worker()
        self._close_log_queue()
        self._release_shared()

    # ------------------------------------------------------------------ shared memory + worker
    def _create_shared(self, run: Any, first_obs: Any) -> None:
        meta = run.policy_metadata
        history = run.make_history()
        history.push(first_obs)
        snap = history.snapshot()
        specs, info_keys, info_scalar = build_specs(
            snap.state.shape, snap.images, first_obs.info, meta.chunk_size, meta.action_dim
        )
        name = unique_block_name("run")
        self.layout = Layout(
            name, tuple(specs), meta.chunk_size, meta.action_dim, tuple(snap.images), info_keys, info_scalar
        )
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
        shared.hb_i64[HeartbeatState.READY] = 0
        shared.hb_f64[HeartbeatTime.BEAT] = time.monotonic()
        shared.ctrl_i64[RequestSlot.STOP] = 0
        self.ack = int(shared.res_i64[ReplySlot.SEQ])
        self.worker_fault = None
        self.worker_fault_kind = FaultKind.INFERENCE_ERROR
        if self.log_queue is None:
            self.log_queue = self.ctx.Queue()
            self.log_thread = threading.Thread(target=self._drain_logs, name="rtc-inference-log", daemon=True)
            self.log_thread.start()
        self.proc = self.ctx.Process(
            target=inference_main,
            name="rtc-inference",
            args=(self.session.run, self.layout, self.settings.worker_config(), self.log_queue, os.getpid()),
            daemon=True,
        )
        start_process(self.proc, self.python)
        self.worker_started = time.monotonic()
        self.session.telemetry.event("inference_process_start", pid=self.proc.pid, restarts=self.restarts)
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
        deadline = time.monotonic() + self.settings.startup_timeout_s
        while self.shared.hb_i64[HeartbeatState.READY] != 1:
            if not self.proc.is_alive():
                time.sleep(0.1)  # let the traceback reach the log
                raise AlgorithmFault(f"inference process failed at start: {self._death_cause()}", FaultKind.STARTUP)
            if time.monotonic() > deadline:
                raise AlgorithmFault(
                    f"inference process not ready after {self.settings.startup_timeout_s} s", FaultKind.STARTUP
                )
            time.sleep(0.01)

    def _death_cause(self) -> str:
        cause = "inference process " + ("not started" if self.proc is None else exit_cause(self.proc.exitcode))
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
                self.shared.ctrl_i64[RequestSlot.STOP] = 1
            proc.join(self.settings.stop_timeout_s * 0.6)
            if proc.is_alive():
                proc.terminate()
                proc.join(self.settings.stop_timeout_s * 0.3)
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
