"""The per-tick control step: read the robot, filter and send a command, record the tick.

The one control loop (``algorithms/loop.py``) calls this for every execution mode, so reading,
the NaN/inf check of observations, the safety filter, the send and the tick record exist once.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from robots.base import Observation, Robot, RobotError
from robots.history import ObservationHistory
from robots.safety import SafetyFilter
from services.errors import AlgorithmFault, FaultKind
from services.telemetry import Telemetry

log = logging.getLogger(__name__)


@dataclass
class EpisodeResult:
    """One episode as the loop ran it: outcome, and what the evaluator's metrics are computed from
    (the commands sent, the planned actions executed, the chunk-boundary discontinuities and jumps from plan)."""

    episode: int
    ticks: int = 0
    success: bool = False
    max_reward: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)
    sent: list[np.ndarray] = field(default_factory=list)
    planned: list[np.ndarray] = field(default_factory=list)
    discontinuities: list[float] = field(default_factory=list)
    # per chunk boundary, the swap's jump from the old chunk's plan for the same tick (Merge.plan_jump)
    plan_jumps: list[float] = field(default_factory=list)
    # per executed chunk, what its inference reported beside it (InferenceReply.fields: transport
    # timings, or a policy's last_info such as select's stale gate)
    inference_fields: list[dict[str, Any]] = field(default_factory=list)
    inferences: int = 0
    rejected: int = 0
    underruns: int = 0


class ControlStep:
    """Read -> (action chosen by the algorithm) -> safety -> send, with timing records."""

    def __init__(
        self,
        robot: Robot,
        safety: SafetyFilter,
        history: ObservationHistory,
        telemetry: Telemetry,
        recorder: Any = None,
    ) -> None:
        from services.record import NullRecorder

        self.robot = robot
        self.safety = safety
        self.history = history
        self.telemetry = telemetry
        self.recorder = recorder if recorder is not None else NullRecorder()
        self.action_dim = robot.spec.action_dim
        # a recorder's optional ``annotate(event, **fields)`` (record=lerobot): which chunk and guidance
        # produced each command, the action proposed before the safety filter, episode ends with success
        self._annotate = _optional_hook(self.recorder, "annotate")

    def start_recording(self, run_dir: Any) -> None:
        self.recorder.start(run_dir, self.robot.spec, tuple(self.robot.spec.camera_names))

    def stop_recording(self) -> dict[str, Any]:
        return self.recorder.close()

    def new_chunk(self, episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray, guidance: str = "") -> None:
        """Record a chunk (robot units) whose index 0 runs (or would have run) at ``start_tick``."""
        self.telemetry.chunk(episode, chunk_id, start_tick, chunk)
        self.recorder.chunk(chunk)
        if self._annotate is not None:
            self._annotate("chunk", chunk_id=chunk_id, guidance=str(guidance))

    def end_episode(self, episode: int, success: bool) -> None:
        """Tell the recorder the episode is over (its dataset splits episodes here)."""
        if self._annotate is not None:
            self._annotate("episode_end", episode=episode, success=bool(success))

    def begin_episode(self, episode: int, seed: int | None) -> Observation:
        """Home the robot, reset history and anchor the safety filter at the measured pose."""
        try:
            self.robot.home(seed=seed)
            obs = self.robot.read()
        except RobotError as exc:
            raise AlgorithmFault(f"robot fault at episode start: {exc}", FaultKind.ROBOT) from exc
        check_observation(obs)
        self.history.reset()
        self.history.push(obs)
        self.recorder.observation(obs)
        spec = self.robot.spec  # anchor at the command that holds the robot where it is
        anchor = obs.state[: self.action_dim] if getattr(spec, "command_in_state", True) else spec.home
        self.safety.reset(np.asarray(anchor, dtype=np.float64))
        self.telemetry.event("episode_start", episode=episode, seed=seed)
        return obs

    def observe(self, record: bool = True) -> tuple[Observation, float]:
        """Read the robot (checked finite) into the history; ``record`` False keeps it out of the
        recorder (the read that only scores an episode's last command: no tick acts on it)."""
        t0 = time.perf_counter()
        try:
            obs = self.robot.read()
        except RobotError as exc:  # stale state, silent topic, dead camera: the run cannot go on
            raise AlgorithmFault(f"robot fault: {exc}", FaultKind.ROBOT) from exc
        check_observation(obs)
        self.history.push(obs)
        read_ms = (time.perf_counter() - t0) * 1e3
        if record:
            self.recorder.observation(obs)
        return obs, read_ms

    def act(self, action: np.ndarray | None) -> tuple[np.ndarray, float, bool, bool]:
        """Send ``action`` through the safety filter (``None`` = hold).

        Returns (sent command, send_ms, held, rejected).
        """
        rejected_before = self.safety.counters.rejected_nonfinite
        command = self.safety.hold() if action is None else self.safety.apply(action)
        t0 = time.perf_counter()
        try:
            self.robot.send(command)
        except RobotError as exc:  # the robot refused (e.g. its state went stale since the read)
            raise AlgorithmFault(f"robot fault: {exc}", FaultKind.ROBOT) from exc
        send_ms = (time.perf_counter() - t0) * 1e3
        self.recorder.command(command)
        rejected = self.safety.counters.rejected_nonfinite > rejected_before
        return command, send_ms, action is None or rejected, rejected

    def hold(self) -> None:
        """Best effort: command the last safe pose again. Used on every fault/exit path, so it never
        raises; a robot that refuses (it may be what failed) is logged."""
        if self.safety.last_command is None:  # nothing was ever commanded: nothing to hold
            return
        try:
            self.act(None)
        except AlgorithmFault as exc:
            log.warning("could not send the hold command: %s", exc)
        except Exception:  # noqa: BLE001 - the exit path must go on
            log.exception("could not send the hold command")

    def execute_tick(
        self,
        result: EpisodeResult,
        obs: Observation,
        planned: Any,
        tick: int,
        scheduled: float,
        actual: float,
        read_ms: float,
        compute_ms: float,
    ) -> np.ndarray:
        """Send a scheduled action (``planned``: action/chunk_id/index/underrun, None action =
        hold) and record the tick; returns the command actually sent."""
        if self._annotate is not None:  # before the send: the recorder pairs it with the command
            self._annotate("planned", action=planned.action, chunk_id=planned.chunk_id, index=planned.index)
        command, send_ms, held, rejected = self.act(planned.action)
        self.telemetry.command(result.episode, tick, command, obs.state)
        result.sent.append(command)
        if planned.action is not None:
            result.planned.append(planned.action)
        self.telemetry.tick(
            {
                "episode": result.episode,
                "tick": tick,
                "t_sched": scheduled,
                "t_actual": actual,
                "period_error_ms": (actual - scheduled) * 1e3,
                "read_ms": read_ms,
                "compute_ms": compute_ms,
                "send_ms": send_ms,
                "chunk_id": planned.chunk_id,
                "chunk_index": planned.index,
                "underrun": int(planned.underrun),
                "held": int(held),
                "rejected": int(rejected),
            }
        )
        return command

    @staticmethod
    def score(result: EpisodeResult, obs: Observation) -> None:
        """Fold an observation's task outcome (``reward``, ``success``) into the episode's."""
        result.max_reward = max(result.max_reward, float(obs.info.get("reward", 0.0)))
        result.success = result.success or bool(obs.info.get("success", False))


def _optional_hook(recorder: Any, name: str) -> Any:
    """``recorder.<name>``, looked up through wrappers that keep the wrapped one as ``.recorder`` (the viewer's)."""
    while recorder is not None:
        hook = getattr(recorder, name, None)
        if hook is not None:
            return hook
        recorder = getattr(recorder, "recorder", None)
    return None


def check_observation(obs: Observation) -> None:
    """The robot boundary's promise for every robot: no NaN/inf state or float frame goes into the
    history (so none can reach a policy, a chunk or a command)."""
    state = np.asarray(obs.state)
    if not np.all(np.isfinite(state)):
        bad = np.flatnonzero(~np.isfinite(state)).tolist()
        raise AlgorithmFault(f"non-finite observation: state entries {bad[:8]} are NaN/inf", FaultKind.OBSERVATION)
    for name, frame in (obs.images or {}).items():
        image = np.asarray(getattr(frame, "image", frame))
        if image.dtype.kind == "f" and not np.all(np.isfinite(image)):
            raise AlgorithmFault(f"non-finite observation: camera {name} frame holds NaN/inf", FaultKind.OBSERVATION)


def episode_summary(results: list[EpisodeResult]) -> dict[str, Any]:
    n = len(results)
    return {
        "episodes": n,
        "successes": int(sum(r.success for r in results)),
        "success_rate": float(sum(r.success for r in results) / n) if n else 0.0,
        "episode_ticks": [r.ticks for r in results],
    }
