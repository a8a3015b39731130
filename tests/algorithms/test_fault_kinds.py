"""Every fault kind, injected through a real app run: ``python -m inference`` with the real-time sim
robot and the spawned inference process, the fault caused where hardware or a model would cause it.

Each run must end with exit 3, one ``run FAILED (<kind> ...)`` line, the fault in summary.json and
events.jsonl, and the robot left holding its last safe command. ``INJECTIONS`` holds one injection
per ``FaultKind``; the test is parametrized over the enum, so a kind added without an injection here
fails its own case. Every run goes until its fault (no tick budget that a slow host could spend first).
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from services.errors import FaultKind
from tests.algorithms.test_faults import assert_fault, assert_robot_held, cli, one_failed_line
from tests.algorithms.test_rtc_runtime import UNTIL_FAULT, overrides

HANG_S = 600  # a policy call that never returns within any bound of these runs


@dataclass(frozen=True)
class Injection:
    """How a kind is caused (the run's extra overrides) and words of the message it must carry."""

    how: str
    overrides: tuple[str, ...]
    message: str


INJECTIONS: dict[FaultKind, Injection] = {
    FaultKind.ROBOT: Injection(
        "a camera delivers no frame at the 30th read, mid-run", ("+robot.fail_read_at=30",), "camera head: no frame"
    ),
    FaultKind.OBSERVATION: Injection(
        "the joint state holds a NaN from the 30th read on", ("+robot.nan_state_at=30",), "non-finite observation"
    ),
    FaultKind.STARTUP: Injection(
        "the policy cannot be built in the inference process",
        ("+policy.mode=raise_at_build",),
        "cannot load its weights",
    ),
    FaultKind.INFERENCE_DIED: Injection(
        "the inference process is SIGKILLed at its 3rd inference", ("+policy.mode=kill_process",), "killed by signal 9"
    ),
    FaultKind.INFERENCE_STALLED: Injection(
        "the inference process SIGSTOPs itself at its 3rd inference: everything in it freezes, its "
        "heartbeat thread too, while no inference bound is near",
        ("+policy.mode=stop_process", "algorithm.stall_timeout_s=2", f"algorithm.inference_timeout_s={HANG_S}"),
        "no heartbeat",
    ),
    FaultKind.INFERENCE_TIMEOUT: Injection(
        "the 3rd inference never returns (its process stays alive and beating)",
        ("+policy.mode=sleep", f"+policy.sleep_s={HANG_S}", "algorithm.inference_timeout_s=2"),
        "inference_timeout_s=2",
    ),
    FaultKind.INFERENCE_ERROR: Injection(
        "the policy raises from its 3rd inference on", ("+policy.mode=raise",), "FaultPolicy exploded on call 3"
    ),
    FaultKind.CHUNKS_REJECTED: Injection(
        "every chunk from the 3rd on holds a NaN", ("+policy.mode=nan_chunk",), "3 chunks in a row rejected"
    ),
    FaultKind.NO_FIRST_CHUNK: Injection(
        "the first inference never returns, inside every other bound",
        (
            "+policy.mode=sleep",
            "+policy.after_calls=0",
            f"+policy.sleep_s={HANG_S}",
            "algorithm.first_chunk_timeout_s=2",
            f"algorithm.inference_timeout_s={HANG_S}",
        ),
        "no first chunk within 2",
    ),
}


@pytest.mark.slow
@pytest.mark.timeout(300)
@pytest.mark.parametrize("kind", list(FaultKind), ids=str)
def test_every_fault_kind_ends_an_app_run_with_exit_3_and_the_robot_holding(tmp_path, kind):
    injection = INJECTIONS.get(kind)
    assert injection is not None, f"fault kind {kind!r} has no injection: add one to INJECTIONS"
    print(f"{kind}: {injection.how}")
    proc = cli(tmp_path, *overrides(tmp_path, UNTIL_FAULT, *injection.overrides), timeout=240)
    line = one_failed_line(proc)  # exit 3, one line, no traceback
    print(line)
    assert line.startswith(f"run FAILED ({kind}"), line
    fault = assert_fault(tmp_path, str(kind), injection.message)
    sent = assert_robot_held(tmp_path)
    if kind is FaultKind.STARTUP:
        assert len(sent) == 0 and fault["tick"] is None  # the robot was never commanded
    elif kind is FaultKind.NO_FIRST_CHUNK:
        assert len(sent) == 1 and fault["tick"] is None  # only the hold where the robot stood
    else:
        assert len(sent) > 10 and fault["tick"] is not None  # mid-run, then the hold
