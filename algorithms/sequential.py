"""Sequential execution (the seed's debugging mode): the robot holds while the model thinks.

Per cycle: observe -> predict a chunk (blocking) -> execute its first ``execute_horizon`` actions
at the control rate on a drift-free clock -> repeat. The clock is re-anchored after each
inference, so period error measures the control loop, not the (deliberate) inference pause.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable

import numpy as np

from services.clock import make_clock
from algorithms.common import (
    AlgorithmFault,
    FaultKind,
    ControlStep,
    EpisodeResult,
    chunk_discontinuity,
    episode_summary,
    policy_info,
)
from algorithms.rtc.chunk_logic import ChunkRejected, validate_chunk
from policies.runner import PolicyRunner
from services.knobs import PositiveFloat, PositiveInt
from services.errors import ConfigError
from robots.base import RobotError
from services.realtime import RealtimeSession

log = logging.getLogger(__name__)


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


class SequentialAlgorithm:
    """The seed's debugging mode. ``inference_timeout_s`` bounds one (blocking) inference;
    ``max_rejected_chunks`` unexecutable chunks in a row (NaN/inf, wrong shape, first action farther
    than ``max_chunk_jump`` from the last command) end the run; a rejected chunk is never executed:
    the robot holds and the policy is asked again."""

    def __init__(
        self,
        run: Any,
        execute_horizon: PositiveInt = 25,
        stop_on_success: bool = True,
        inference_timeout_s: PositiveFloat = 30.0,
        max_rejected_chunks: PositiveInt = 3,
        max_chunk_jump: PositiveFloat | None = 1.0,
    ) -> None:
        if execute_horizon < 1:
            raise ValueError("algorithm.execute_horizon must be >= 1")
        self.run_obj = run
        self.execute_horizon = execute_horizon
        self.stop_on_success = stop_on_success
        self.inference_timeout_s = float(inference_timeout_s)
        self.max_rejected_chunks = int(max_rejected_chunks)
        self.max_chunk_jump = None if max_chunk_jump is None else float(max_chunk_jump)
        self.tick: int | None = None

    def execute(self) -> dict[str, Any]:
        run = self.run_obj
        telemetry = run.make_telemetry()
        robot = run.make_robot()
        results: list[EpisodeResult] = []
        summary: dict[str, Any] = {}
        step: ControlStep | None = None
        fault: AlgorithmFault | None = None
        self.rejected_chunks = 0
        rt: RealtimeSession | None = None
        try:
            try:
                runner = PolicyRunner.from_run(run)
            except ConfigError:
                raise
            except Exception as exc:
                raise AlgorithmFault(f"policy could not be built: {type(exc).__name__}: {exc}", FaultKind.STARTUP) from exc
            rt = RealtimeSession.enter_control(run, realtime=robot.realtime)  # conf/realtime (issue 15)
            robot.start()
            step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), telemetry, run.make_recorder())
            step.start_recording(run.run_dir)
            for episode in range(run.episodes):
                results.append(self._episode(episode, step, runner, telemetry))
                log.info("episode %d: %d ticks, success=%s", episode, results[-1].ticks, results[-1].success)
        except AlgorithmFault as exc:
            fault = exc if exc.tick is not None else AlgorithmFault(exc.message, exc.kind, self.tick)
        except RobotError as exc:
            fault = AlgorithmFault(f"robot fault: {exc}", FaultKind.ROBOT, self.tick)
        finally:
            if fault is not None:
                telemetry.event("fault", fault=fault.record())
            # stop() leaves the robot holding its last command, also on Ctrl-C and faults
            robot.stop()
            summary = episode_summary(results)
            if step is not None:
                summary["safety"] = vars(step.safety.counters)
                summary.update(step.stop_recording())
            summary["rejected_chunks"] = self.rejected_chunks
            summary["fault"] = fault.record() if fault is not None else None
            summary["realtime"] = rt.close() if rt is not None else None
            summary = telemetry.close(algorithm="sequential", **summary)
        if fault is not None:
            raise fault
        return summary

    def _infer(self, runner: PolicyRunner, step: ControlStep) -> np.ndarray:
        """One blocking inference, bounded in time, checked before anything of it runs."""
        try:
            chunk = call_with_timeout(lambda: runner.infer_history(step.history).robot, self.inference_timeout_s)
        except TimeoutError as exc:
            raise AlgorithmFault(f"inference timeout: {exc} (algorithm.inference_timeout_s={self.inference_timeout_s:g})",
                                 FaultKind.INFERENCE_TIMEOUT, self.tick) from None
        except Exception as exc:  # the robot is not commanded meanwhile: it holds
            raise AlgorithmFault(f"inference failed: {type(exc).__name__}: {exc}", FaultKind.INFERENCE_ERROR,
                                 self.tick) from exc
        meta = self.run_obj.policy_metadata
        chunk = validate_chunk(chunk, meta.chunk_size, meta.action_dim)
        reference = step.safety.last_command
        if self.max_chunk_jump is not None and reference is not None:
            jump = float(np.max(np.abs(chunk[0].astype(np.float64) - reference)))
            if jump > self.max_chunk_jump:
                raise ChunkRejected(f"implausible chunk: its first action is {jump:.3g} from the last command "
                                    f"(algorithm.max_chunk_jump={self.max_chunk_jump:g})")
        return chunk

    def _episode(self, episode, step: ControlStep, runner: PolicyRunner, telemetry) -> EpisodeResult:
        run = self.run_obj
        result = EpisodeResult(episode)
        obs = step.begin_episode(episode, seed=run.seed + episode)
        clock = make_clock(1.0 / run.hz, step.robot.realtime)
        tick, chunk_id = 0, 0
        rejected_in_a_row = 0
        while tick < run.max_steps:
            self.tick = tick
            t_start = time.monotonic()
            try:
                chunk = self._infer(runner, step)
            except ChunkRejected as exc:  # never executed: hold, ask again
                self.rejected_chunks += 1
                rejected_in_a_row += 1
                log.warning("sequential: rejected chunk: %s (not executed)", exc)
                telemetry.event("chunk_rejected", reason=str(exc), tick=tick)
                step.hold()
                if rejected_in_a_row >= self.max_rejected_chunks:
                    raise AlgorithmFault(f"{rejected_in_a_row} chunks in a row rejected (algorithm.max_rejected_chunks="
                                         f"{self.max_rejected_chunks}); last: {exc}", FaultKind.CHUNKS_REJECTED, tick) from None
                continue
            rejected_in_a_row = 0
            t_end = time.monotonic()
            telemetry.inference({
                **policy_info(runner.policy),
                "episode": episode, "chunk_id": chunk_id, "t_start": t_start, "t_end": t_end,
                "latency_ms": (t_end - t_start) * 1e3, "d_estimate": 0, "d_actual": 0, "s": 0,
                "guidance": "none",
                "discontinuity": chunk_discontinuity(step.safety.last_command, chunk[0]),
            })
            step.new_chunk(episode, chunk_id, tick, chunk)
            clock.start()
            for index in range(min(self.execute_horizon, len(chunk))):
                if tick >= run.max_steps:
                    break
                scheduled, actual = clock.wait(index)
                command, send_ms, held, rejected = step.act(chunk[index])
                # read after the send: in lockstep the send advanced the sim; in real time this is
                # the freshest state for history, success and the next chunk
                obs, read_ms = step.observe()
                telemetry.command(episode, tick, command, obs.state)
                result.max_reward = max(result.max_reward, float(obs.info.get("reward", 0.0)))
                result.success = result.success or bool(obs.info.get("success", False))
                telemetry.tick({
                    "episode": episode, "tick": tick, "t_sched": scheduled, "t_actual": actual,
                    "period_error_ms": (actual - scheduled) * 1e3, "read_ms": read_ms,
                    "compute_ms": 0.0, "send_ms": send_ms, "chunk_id": chunk_id,
                    "chunk_index": index, "underrun": 0, "held": int(held), "rejected": int(rejected),
                })
                tick += 1
                if result.success and self.stop_on_success:
                    break
            chunk_id += 1
            if result.success and self.stop_on_success:
                break
        result.ticks = tick
        telemetry.event("episode_end", episode=episode, ticks=tick, success=result.success)
        return result
