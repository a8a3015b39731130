"""Transports that run the policy in the control process: blocking (``algorithm=sequential``) and
with a simulated delay (``algorithm=lockstep_eval``; with ``parallel_episodes`` > 1 each episode
worker's port to one batched call, ``BatchedDelayTransport``). Both build the policy with the one
``PolicyRunner`` and answer a request from the control side's observation history.

Faults as in every mode: a policy that raises is a reply with an ``inference_error``, a call that runs
past ``inference_timeout_s`` is abandoned and answered with an ``inference_timeout`` (the loop ends the
run with either, the robot holding). Only the batched port waits for its batch unbounded: the batch
runs under the rendezvous' lock, which an abandoned call would keep.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.episode_batcher import BatcherAborted, EpisodeBatcher, Row
from algorithms.transport import InferenceReply, InferenceRequest, TransportBase, TransportSession
from policies.base import policy_info
from policies.runner import ChunkResult, PolicyRunner
from services.errors import AlgorithmFault, ConfigError, FaultKind


class InferenceTimedOut(TimeoutError):
    """A policy call ran past its bound and was abandoned (not a timeout the policy itself raised)."""


class BoundedCall:
    """Runs each call in a daemon thread, waited for at most ``timeout_s``: a hung policy cannot
    block the loop (the call is abandoned; the run ends with the fault and the process exits without
    joining it). While an abandoned call still runs, the next one is refused with
    ``InferenceTimedOut`` rather than running the policy from two threads at once."""

    def __init__(self, timeout_s: float, name: str = "inference") -> None:
        self.timeout_s = float(timeout_s)
        self.name = name
        self.abandoned: threading.Thread | None = None

    def __call__(self, fn: Callable[[], Any]) -> Any:
        if self.abandoned is not None and self.abandoned.is_alive():
            raise InferenceTimedOut("the policy has not returned from an earlier call that ran past the limit")
        box: dict[str, Any] = {}
        done = threading.Event()

        def target() -> None:
            try:
                box["value"] = fn()
            except BaseException as exc:  # noqa: BLE001 - re-raised in the caller
                box["error"] = exc
            finally:
                done.set()

        thread = threading.Thread(target=target, name=self.name, daemon=True)
        thread.start()
        if not done.wait(self.timeout_s):
            self.abandoned = thread
            raise InferenceTimedOut(f"no result within {self.timeout_s:g} s")
        if "error" in box:
            raise box["error"]
        return box["value"]


def failure(exc: Exception, timeout_s: float) -> tuple[str, FaultKind]:
    """The reply error for an inference that raised ``exc``: a bound it ran past, or the policy's error."""
    if isinstance(exc, InferenceTimedOut):
        return f"inference timeout: {exc} (algorithm.inference_timeout_s={timeout_s:g})", FaultKind.INFERENCE_TIMEOUT
    return f"inference failed: {type(exc).__name__}: {exc}", FaultKind.INFERENCE_ERROR


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
        self.call = BoundedCall(0.0)

    def start(self, session: TransportSession) -> None:
        self.runner = build_runner(session.run)
        self.call = BoundedCall(session.inference_timeout_s)

    def submit(self, request: InferenceRequest) -> None:
        t_start = time.monotonic()
        try:
            result = self.call(lambda: self.runner.infer_history(request.history, request.guide))
        except Exception as exc:  # noqa: BLE001 - the robot is not commanded meanwhile: it holds
            self.reply = InferenceReply(
                request.seq, None, None, t_start, time.monotonic(), error=failure(exc, self.call.timeout_s)
            )
            return
        self.reply = InferenceReply(
            request.seq,
            result.model,
            result.robot,
            t_start,
            time.monotonic(),
            result.policy_ms,
            policy_info(self.runner.policy),
        )

    def poll(self, tick: int) -> InferenceReply | None:
        reply, self.reply = self.reply, None
        return reply

    def stop(self) -> None:
        self.reply = None


@dataclass
class _Held:
    """A result held back until ``due_tick``, as if inference had taken that long; ``error`` set:
    the inference failed (no chunk), answered at once."""

    due_tick: int
    seq: int
    result: ChunkResult | None
    t_start: float
    fields: dict[str, Any]  # what the policy reported with the chunk (policy_info)
    error: tuple[str, FaultKind] | None = None


class SimulatedDelayTransport(TransportBase):
    """The policy called in this process at once, its answer held back ``delay`` ticks (constant, or
    drawn per inference from ``[d - spread, d + spread]``), exactly as if inference had taken that
    long; with ``sync`` the robot is taken to pause that long instead (no ticks pass, the pause is
    counted in ``paused_ticks``) and the answer is there at once. An episode's first chunk is there
    at once (the robot waits for it, still). Each episode re-seeds a sampling policy's noise with the
    episode seed, so methods are compared on the same draws (common random numbers). The policy
    call itself takes wall time, bounded by ``inference_timeout_s``; a failed call is answered at once."""

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
        self.call = BoundedCall(0.0)

    def start(self, session: TransportSession) -> None:
        self.runner = build_runner(session.run)
        self.call = BoundedCall(session.inference_timeout_s)

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
        t_start = request.tick * self.period_s
        try:
            result, fields = self._infer(request)
        except BatcherAborted:  # the cell was abandoned: not this policy's failure
            raise
        except Exception as exc:  # noqa: BLE001 - answered as the request's error; the robot holds
            self.held = _Held(request.tick, request.seq, None, t_start, {}, failure(exc, self.call.timeout_s))
            return
        latency = 0 if request.first else self._draw_delay()
        if self.sync:
            self.paused_ticks += latency
            latency = 0
        self.held = _Held(request.tick + latency, request.seq, result, t_start, fields)

    def _infer(self, request: InferenceRequest) -> tuple[ChunkResult, dict[str, Any]]:
        """The chunk for ``request`` and what the policy reported with it, computed now (bounded)."""
        return self.call(
            lambda: (self.runner.infer_history(request.history, request.guide), policy_info(self.runner.policy))
        )

    def poll(self, tick: int) -> InferenceReply | None:
        held = self.held
        if held is None or held.due_tick > tick:
            return None
        self.held = None
        if held.error is not None:
            return InferenceReply(held.seq, None, None, held.t_start, tick * self.period_s, error=held.error)
        return InferenceReply(
            held.seq,
            held.result.model,
            held.result.robot,
            held.t_start,
            tick * self.period_s,
            held.result.policy_ms,
            held.fields,
        )

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
        """The row's answer from the batch; waited for unbounded (the batch runs under the
        rendezvous' lock, which an abandoned call would keep from the other episodes)."""
        snap = request.history.snapshot()
        info = request.history.last.info if request.history.last is not None else {}
        inp = self.runner.policy_input(snap.state, snap.images, info)
        return self.batcher.infer(self.member, Row(inp, request.guide, self.stream), key=self.episode)
