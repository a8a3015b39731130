"""Sequential execution (the seed's debugging mode): the robot holds while the model thinks.

Per cycle: observe -> predict a chunk (blocking) -> execute its first ``execute_horizon`` actions
at the control rate on a drift-free clock -> repeat. The clock is re-anchored after each
inference, so period error measures the control loop, not the (deliberate) inference pause.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from services.clock import make_clock
from algorithms.common import (
    AlgorithmFault,
    ControlStep,
    EpisodeResult,
    chunk_discontinuity,
    episode_summary,
    policy_info,
)
from policies.runner import PolicyRunner
from services.errors import ConfigError
from robots.base import RobotError

log = logging.getLogger(__name__)


class SequentialAlgorithm:
    def __init__(self, run: Any, execute_horizon: int = 25, stop_on_success: bool = True) -> None:
        if execute_horizon < 1:
            raise ValueError("algorithm.execute_horizon must be >= 1")
        self.run_obj = run
        self.execute_horizon = execute_horizon
        self.stop_on_success = stop_on_success

    def execute(self) -> dict[str, Any]:
        run = self.run_obj
        telemetry = run.make_telemetry()
        robot = run.make_robot()
        results: list[EpisodeResult] = []
        summary: dict[str, Any] = {}
        step: ControlStep | None = None
        fault: AlgorithmFault | None = None
        try:
            try:
                runner = PolicyRunner.from_run(run)
            except ConfigError:
                raise
            except Exception as exc:
                raise AlgorithmFault(f"policy could not be built: {type(exc).__name__}: {exc}") from exc
            robot.start()
            step = ControlStep(robot, run.make_safety(robot.spec), run.make_history(), telemetry, run.make_recorder())
            step.start_recording(run.run_dir)
            for episode in range(run.episodes):
                results.append(self._episode(episode, step, runner, telemetry))
                log.info("episode %d: %d ticks, success=%s", episode, results[-1].ticks, results[-1].success)
        except AlgorithmFault as exc:
            fault = exc
            telemetry.event("fault", cause=str(fault))
        except RobotError as exc:
            fault = AlgorithmFault(f"robot fault: {exc}")
            telemetry.event("fault", cause=str(fault))
        finally:
            # stop() leaves the robot holding its last command, also on Ctrl-C and faults
            robot.stop()
            summary = episode_summary(results)
            if step is not None:
                summary["safety"] = vars(step.safety.counters)
                summary.update(step.stop_recording())
            if fault is not None:
                summary["fault"] = str(fault)
            summary = telemetry.close(algorithm="sequential", **summary)
        if fault is not None:
            raise fault
        return summary

    def _episode(self, episode, step: ControlStep, runner: PolicyRunner, telemetry) -> EpisodeResult:
        run = self.run_obj
        result = EpisodeResult(episode)
        obs = step.begin_episode(episode, seed=run.seed + episode)
        clock = make_clock(1.0 / run.hz, step.robot.realtime)
        tick, chunk_id = 0, 0
        while tick < run.max_steps:
            t_start = time.monotonic()
            try:
                chunk = runner.infer_history(step.history).robot
            except Exception as exc:  # the robot is not commanded meanwhile: it holds
                raise AlgorithmFault(f"inference failed: {type(exc).__name__}: {exc}") from exc
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
