"""A lockstep cell's episodes run side by side: P workers, each the one ``ControlLoop``.

``algorithm.parallel_episodes`` = P > 1: each worker thread owns a complete loop for one episode at
a time (its own robot from ``run.make_robot()``, safety filter, observation history, ``RTCPlanner``
and faults) and a ``BatchedDelayTransport`` port to one ``EpisodeBatcher``, so the P episodes'
requests are answered by one batched call. There is no second tick loop: every tick of every episode
is ``ControlLoop.episode``'s. Workers take the cell's episodes in index order from a shared counter;
the robots live for the whole run (built, started, stepped and stopped in their own thread), like
the one robot of P = 1.

What P = 1 does is kept, episode for episode: the rows are computed from the episodes sorted by
index; a fault that ends the cell (``fault_ends_cell``) cuts the cell after the first faulted episode
(later episodes already started are finished and dropped, no new one starts); an exception out of an
episode (a robot fault) ends the run with the first such episode's exception. Telemetry records from
several threads go through the telemetry ring's lock (each record carries its episode).
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass, field
from typing import Any

from algorithms.chunking.config import RTCConfig
from algorithms.chunking.planner import RTCPlanner
from algorithms.episode_batcher import BatcherAborted, EpisodeBatcher
from algorithms.inprocess import BatchedDelayTransport
from algorithms.loop import ControlLoop, LoopConfig
from algorithms.step import AlgorithmFault, ControlStep, EpisodeResult
from algorithms.transport import TransportSession
from policies.runner import PolicyRunner

log = logging.getLogger(__name__)


@dataclass
class EpisodeOutcome:
    """One episode as a worker ran it: its result, the ticks a sync method paused, the fault that
    ended it (the loop's ``fault``), or the exception it raised."""

    episode: int
    result: EpisodeResult | None = None
    paused_ticks: int = 0
    fault: AlgorithmFault | None = None
    error: BaseException | None = None


@dataclass
class CellJob:
    """A cell's episodes ``(index, seed)`` and how each runs, shared by the workers."""

    episodes: list[tuple[int, int]]
    rtc: RTCConfig
    delay_ticks: int
    spread_ticks: int
    sync: bool
    record_fields: dict[str, Any]
    stop_on_fault: bool
    lock: threading.Lock = field(default_factory=threading.Lock)
    next: int = 0
    stop: bool = False
    outcomes: list[EpisodeOutcome] = field(default_factory=list)
    running: int = 0
    done: threading.Event = field(default_factory=threading.Event)

    def take(self) -> tuple[int, int] | None:
        with self.lock:
            if self.stop or self.next >= len(self.episodes):
                return None
            self.next += 1
            return self.episodes[self.next - 1]

    def report(self, outcome: EpisodeOutcome) -> None:
        with self.lock:
            self.outcomes.append(outcome)
            if outcome.error is not None or (outcome.fault is not None and self.stop_on_fault):
                self.stop = True

    def worker_done(self) -> None:
        with self.lock:
            self.running -= 1
            if self.running == 0:
                self.done.set()


class _Worker:
    """One episode worker: a thread, its loop (built in the thread), its port and its inbox."""

    def __init__(self, pool: EpisodeWorkers, member: int) -> None:
        self.pool = pool
        self.member = member
        self.inbox: queue.Queue[CellJob | None] = queue.Queue()
        self.loop: ControlLoop | None = None
        self.port: BatchedDelayTransport | None = None
        self.setup_error: BaseException | None = None
        self.thread = threading.Thread(target=self._serve, name=f"lockstep-episode-{member}", daemon=True)

    def _serve(self) -> None:
        pool, robot = self.pool, None
        try:
            run = pool.run
            self.port = BatchedDelayTransport(1.0 / run.hz, pool.batcher, self.member)
            self.loop = ControlLoop(run, pool.rtc, pool.limits, self.port, name=pool.name)
            self.loop.telemetry = pool.telemetry
            robot = run.make_robot()
            robot.start()
            self.loop.step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), pool.telemetry)
            self.port.start(
                TransportSession(
                    run=run,
                    telemetry=pool.telemetry,
                    inference_timeout_s=pool.limits.inference_timeout_s,
                    robot=robot,
                    history=self.loop.step.history,
                )
            )
        except BaseException as exc:  # noqa: BLE001 - reported by the first cell
            self.setup_error = exc
        try:
            while (job := self.inbox.get()) is not None:
                try:
                    self._work(job)
                except BaseException as exc:  # noqa: BLE001 - outside an episode: ends the run, in the main thread
                    job.report(EpisodeOutcome(-1, error=exc))
                finally:
                    pool.batcher.leave(self.member)
                    job.worker_done()
        finally:
            if robot is not None:
                try:
                    robot.stop()
                except Exception:  # noqa: BLE001 - the exit path goes on
                    log.exception("episode worker %d: robot.stop failed", self.member)

    def _work(self, job: CellJob) -> None:
        if self.setup_error is not None:
            job.report(EpisodeOutcome(-1, error=self.setup_error))
            return
        loop, port, meta = self.loop, self.port, self.pool.run.policy_metadata
        port.configure(job.delay_ticks, job.spread_ticks, sync=job.sync)
        loop.sync = job.sync
        loop.record_fields = dict(job.record_fields)
        while (taken := job.take()) is not None:
            episode, seed = taken
            loop.planner = RTCPlanner(job.rtc, meta.chunk_size, meta.action_dim)
            try:
                result = loop.episode(episode, seed)
            except BaseException as exc:  # noqa: BLE001 - raised again by the main thread, in episode order
                loop.step.hold()
                loop.fault = None
                job.report(EpisodeOutcome(episode, error=exc))
                return
            fault, loop.fault = loop.fault, None
            job.report(EpisodeOutcome(episode, result, port.paused_ticks, fault))


class EpisodeWorkers:
    """``count`` episode workers around one runner (the evaluator's, built once); ``run_cell``
    runs a cell's episodes on them, ``close`` stops their robots."""

    def __init__(
        self, run: Any, runner: PolicyRunner, rtc: RTCConfig, limits: LoopConfig, telemetry: Any, count: int, name: str
    ) -> None:
        self.run, self.rtc, self.limits, self.telemetry, self.name = run, rtc, limits, telemetry, name
        self.batcher = EpisodeBatcher(runner)
        self.workers = [_Worker(self, member) for member in range(int(count))]
        for worker in self.workers:
            worker.thread.start()

    def run_cell(self, job: CellJob) -> list[EpisodeOutcome]:
        """Every episode of ``job`` the workers ran, in index order (see the module docstring for
        what a fault or an exception cuts)."""
        job.running = len(self.workers)
        for worker in self.workers:
            self.batcher.join(worker.member)
        for worker in self.workers:
            worker.inbox.put(job)
        try:
            while not job.done.wait(0.5):
                pass
        except BaseException:
            with job.lock:
                job.stop = True
            self.batcher.abort("the evaluation was interrupted")
            job.done.wait(30.0)
            raise
        return sorted(job.outcomes, key=lambda o: o.episode)

    def collect_counters(self, loop: ControlLoop) -> None:
        """Add the workers' run counters (rejected chunks, discarded results) to ``loop``'s."""
        for worker in self.workers:
            if worker.loop is not None:
                loop.rejected_chunks += worker.loop.rejected_chunks
                loop.discarded_results += worker.loop.discarded_results
                worker.loop.rejected_chunks = worker.loop.discarded_results = 0

    def close(self) -> None:
        """Stop the workers (each stops its robot in its own thread)."""
        for worker in self.workers:
            worker.inbox.put(None)
        for worker in self.workers:
            worker.thread.join(timeout=30.0)
            if worker.thread.is_alive():
                log.warning("episode worker %d did not stop within 30 s", worker.member)


def cut_outcomes(outcomes: list[EpisodeOutcome], fault_ends_cell: bool) -> list[EpisodeOutcome]:
    """The episodes that running them one at a time would have run: up to the first exception
    (raised here) or, with ``fault_ends_cell``, the first faulted episode (included)."""
    kept = []
    for outcome in outcomes:
        if outcome.error is not None:
            if isinstance(outcome.error, BatcherAborted):
                continue  # a consequence of the interrupt or failure being raised
            raise outcome.error
        kept.append(outcome)
        if outcome.fault is not None and fault_ends_cell:
            break
    return kept
