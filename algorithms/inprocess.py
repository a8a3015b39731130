"""Transports that run the policy in the control process: blocking (``algorithm=sequential``) and
with a simulated delay (``algorithm=lockstep_eval``; with ``parallel_episodes`` > 1 each episode
worker's port to one batched call, ``BatchedDelayTransport``). Both build the policy with the one
``PolicyRunner`` and answer a request from the control side's observation history.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from algorithms.episode_batcher import EpisodeBatcher, Row
from algorithms.transport import InferenceReply, InferenceRequest, TransportBase, TransportSession
from policies.runner import ChunkResult, PolicyRunner
from services.errors import AlgorithmFault, ConfigError, FaultKind


def call_with_timeout(fn: Callable[[], Any], timeout_s: float, name: str = "inference") -> Any:
    """``fn()`` in a daemon thread, waited for at most ``timeout_s``: a hung call cannot block the
    loop (it is abandoned; the run ends as a fault and the process exits without joining it)."""
    box: dict[str, Any] = {}
    done = threading.Event()

    def target() -> None:
        try:
            box["value"] = fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
            box["error"] = exc
        finally:
            done.set()

    threading.Thread(target=target, name=name, daemon=True).start()
    if not done.wait(timeout_s):
        raise TimeoutError(f"no result within {timeout_s:g} s")
    if "error" in box:
        raise box["error"]
    return box["value"]


def policy_info(policy: Any) -> dict[str, Any]:
    """Extra per-inference facts a policy reports (remote policies: server time, round trip)."""
    info = getattr(policy, "last_info", None)
    return dict(info()) if callable(info) else {}


def build_runner(run: Any) -> PolicyRunner:
    """The policy, built here; a failure is a start-up fault (a config mistake stays one)."""
    try:
        return PolicyRunner.from_run(run)
    except ConfigError:
        raise
    except Exception as exc:
        raise AlgorithmFault(f"policy could not be built: {type(exc).__name__}: {exc}", FaultKind.STARTUP) from exc


class BlockingTransport(TransportBase):
    """The policy called in this process; ``submit`` returns with the answer, so the robot holds
    while the model thinks. The call is bounded by ``inference_timeout_s`` (a hung one is abandoned)."""

    name = "in-process"
    blocking = True

    def __init__(self) -> None:
        self.runner: PolicyRunner | None = None
        self.reply: InferenceReply | None = None
        self.timeout_s = 0.0

    def start(self, session: TransportSession) -> None:
        self.runner = build_runner(session.run)
        self.timeout_s = float(session.inference_timeout_s)

    def submit(self, request: InferenceRequest) -> None:
        t_start = time.monotonic()
        try:
            result = call_with_timeout(lambda: self.runner.infer_history(request.history, request.guide), self.timeout_s)
        except TimeoutError as exc:
            error = (f"inference timeout: {exc} (algorithm.inference_timeout_s={self.timeout_s:g})",
                     FaultKind.INFERENCE_TIMEOUT)
            self.reply = InferenceReply(request.seq, None, None, t_start, time.monotonic(), error=error)
            return
        except Exception as exc:  # noqa: BLE001 - the robot is not commanded meanwhile: it holds
            error = (f"inference failed: {type(exc).__name__}: {exc}", FaultKind.INFERENCE_ERROR)
            self.reply = InferenceReply(request.seq, None, None, t_start, time.monotonic(), error=error)
            return
        self.reply = InferenceReply(request.seq, result.model, result.robot, t_start, time.monotonic(),
                                    result.policy_ms, policy_info(self.runner.policy))

    def poll(self, tick: int) -> InferenceReply | None:
        reply, self.reply = self.reply, None
        return reply

    def stop(self) -> None:
        self.reply = None


@dataclass
class _Held:
    """A result held back until ``due_tick``, as if inference had taken that long."""

    due_tick: int
    seq: int
    result: ChunkResult
    t_start: float
    fields: dict[str, Any]  # what the policy reported with the chunk (policy_info)


class SimulatedDelayTransport(TransportBase):
    """The policy called in this process at once, its answer held back ``delay`` ticks (constant, or
    drawn per inference from ``[d - spread, d + spread]``), exactly as if inference had taken that
    long; with ``sync`` the robot is taken to pause that long instead (no ticks pass, the pause is
    counted in ``paused_ticks``) and the answer is there at once. An episode's first chunk is there
    at once (the robot waits for it, still). Each episode re-seeds a sampling policy's noise with the
    episode seed, so methods are compared on the same draws (common random numbers)."""

    name = "simulated-delay"
    simulated = True

    def __init__(self, period_s: float) -> None:
        self.period_s = float(period_s)
        self.runner: PolicyRunner | None = None
        self.delay_ticks = 0
        self.spread_ticks = 0
        self.sync = False
        self.rng = np.random.default_rng(0)
        self.held: _Held | None = None
        self.paused_ticks = 0
        self.tick = 0

    def start(self, session: TransportSession) -> None:
        self.runner = build_runner(session.run)

    def configure(self, delay_ticks: int, spread_ticks: int, sync: bool) -> None:
        """The (mean) delay of the cell about to run, its spread (0: constant), and sync execution."""
        self.delay_ticks, self.spread_ticks, self.sync = int(delay_ticks), int(spread_ticks), bool(sync)

    def begin_episode(self, episode: int, seed: int) -> None:
        self.held = None
        self.paused_ticks = 0
        self.rng = np.random.default_rng([seed, self.delay_ticks, 7])
        self._seed_noise(seed)

    def _seed_noise(self, seed: int) -> None:
        """The episode's policy noise starts from ``seed`` (common random numbers)."""
        self.runner.reset_noise(seed)

    def _draw_delay(self) -> int:
        if self.spread_ticks == 0:
            return self.delay_ticks
        lo, hi = max(0, self.delay_ticks - self.spread_ticks), self.delay_ticks + self.spread_ticks
        return int(self.rng.integers(lo, hi + 1))

    def ready(self) -> bool:
        return self.held is None

    def submit(self, request: InferenceRequest) -> None:
        result, fields = self._infer(request)
        latency = 0 if request.first else self._draw_delay()
        if self.sync:
            self.paused_ticks += latency
            latency = 0
        self.held = _Held(request.tick + latency, request.seq, result, request.tick * self.period_s, fields)

    def _infer(self, request: InferenceRequest) -> tuple[ChunkResult, dict[str, Any]]:
        """The chunk for ``request`` and what the policy reported with it, computed now."""
        return self.runner.infer_history(request.history, request.guide), policy_info(self.runner.policy)

    def poll(self, tick: int) -> InferenceReply | None:
        held = self.held
        if held is None or held.due_tick > tick:
            return None
        self.held = None
        return InferenceReply(held.seq, held.result.model, held.result.robot, held.t_start, tick * self.period_s,
                              held.result.policy_ms, held.fields)

    def stop(self) -> None:
        self.held = None


class BatchedDelayTransport(SimulatedDelayTransport):
    """One episode worker's port to a shared ``EpisodeBatcher``: the simulated delay exactly as
    ``SimulatedDelayTransport`` holds it, but the chunk is computed in the batcher's next batched
    call (``submit`` waits for it, so a reply is due when a lone episode's would be) from the
    episode's own noise stream. ``member``: this worker's name in the rendezvous."""

    name = "simulated-delay-batched"

    def __init__(self, period_s: float, batcher: EpisodeBatcher, member: Any) -> None:
        super().__init__(period_s)
        self.batcher = batcher
        self.member = member
        self.episode = 0
        self.stream: Any = None

    def start(self, session: TransportSession) -> None:
        self.runner = self.batcher.runner

    def begin_episode(self, episode: int, seed: int) -> None:
        self.episode = int(episode)
        super().begin_episode(episode, seed)

    def _seed_noise(self, seed: int) -> None:
        self.stream = self.batcher.noise_stream(seed)

    def _infer(self, request: InferenceRequest) -> tuple[ChunkResult, dict[str, Any]]:
        snap = request.history.snapshot()
        info = request.history.last.info if request.history.last is not None else {}
        inp = self.runner.policy_input(snap.state, snap.images, info)
        return self.batcher.infer(self.member, Row(inp, request.guide, self.stream), key=self.episode)
