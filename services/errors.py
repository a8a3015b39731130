"""Errors shared across layers, so that no lower layer needs to import the application for them."""

from __future__ import annotations

from enum import StrEnum
from typing import Any


class ConfigError(ValueError):
    """The composed config cannot run; the message names the offending key (``<key>: <why>``).

    Raised before anything starts (validation, start-time checks of files and promises); the app prints
    it as one line ``config error: <message>`` and exits 2.
    """


class FaultKind(StrEnum):
    """What ended a run early (docs/faults.md); every one exits 3 with the robot holding."""

    ROBOT = "robot"  # the robot or a camera failed: stale/silent topic, refused command, dead device
    OBSERVATION = "observation"  # an observation with NaN/inf reached the robot boundary
    STARTUP = "startup"  # the policy could not be built / inference never became ready / no server /
    # a helper process (telemetry writer, recorder, viewer) failed at start
    INFERENCE_DIED = "inference_died"  # the inference process or actor exited
    INFERENCE_STALLED = "inference_stalled"  # its heartbeat stopped (process frozen)
    INFERENCE_TIMEOUT = "inference_timeout"  # one inference took longer than algorithm.inference_timeout_s
    INFERENCE_ERROR = "inference_error"  # the policy raised (traceback in the run log)
    CHUNKS_REJECTED = "chunks_rejected"  # algorithm.max_rejected_chunks chunks in a row were not executable
    NO_FIRST_CHUNK = "no_first_chunk"  # an episode's first chunk did not come within first_chunk_timeout_s


# The faults of the inference side itself (its process, actor or replica died, froze, ran past the
# inference timeout, or its policy raised): what ``algorithm.max_restarts`` lets a run ride through by
# replacing that side. The others are never restarted: a bad chunk or observation is the policy's or
# the robot's, and a fresh inference side would not change it.
RESTARTABLE_KINDS = frozenset(
    {FaultKind.INFERENCE_DIED, FaultKind.INFERENCE_STALLED, FaultKind.INFERENCE_TIMEOUT, FaultKind.INFERENCE_ERROR}
)


class AlgorithmFault(RuntimeError):
    """The run cannot go on safely. Raised after the robot was left holding its last safe command;
    the app prints one line and exits 3. ``kind`` says what failed, ``tick`` when (control tick of
    the episode, None before the first tick)."""

    def __init__(
        self, message: str, kind: FaultKind | str = FaultKind.INFERENCE_ERROR, tick: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = str(message)
        self.kind = FaultKind(kind)
        self.tick = None if tick is None else int(tick)

    def record(self) -> dict[str, Any]:
        """``{kind, message, tick}``: what summary.json and events.jsonl hold."""
        return {"kind": str(self.kind), "message": self.message, "tick": self.tick}

    def line(self) -> str:
        where = f" at tick {self.tick}" if self.tick is not None else ""
        return f"run FAILED ({self.kind}{where}): {self.message}"
