"""What a simulated robot's device process and its control side share, whatever it simulates.

The sim (MuJoCo physics) and the gym (a Gymnasium env) robots each run their world in a device
process that talks to the control process through one shared block like hardware: a seqlocked
``state.*`` the process writes once per period, a seqlocked ``cmd.action`` the control side writes,
and ``ctl.*`` (home requests, stop flag, pid/ready, a failure message, the clock stats). Only the
``state.*`` layout differs between them, so the rest lives here once:

* ``Ctl`` (the ``ctl.i64`` indices and the ``ctl.f64`` stats) and ``DeviceBlock`` (typed access to
  the command, the control words and the failure message);
* the device side's clock (``run_clock``): one step per wall-clock period on absolute deadlines,
  home requests answered while waiting, re-anchoring when far behind;
* the control side's lifecycle (``wait_ready``, ``request_home``, ``read_state``, ``process_fault``,
  ``stop_process``), every message naming the device by the label the robot passes (``"sim physics"``:
  "sim physics process failed at start: ...", ``"gym env"``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from robots.base import RobotError
from services.devproc import DeviceProcess, sleep_until
from services.shm import ArraySpec, SeqLock, SharedArrays, read_text, write_text

log = logging.getLogger(__name__)


class Ctl:
    """``ctl.i64`` indices (``ctl.f64``: the device clock stats, ``STATS`` order)."""

    HOME_REQ, HOME_ACK, HOME_SEED, HOME_HAS_SEED, STOP, PID, READY, FAILED, N = range(9)
    STATS = ("ticks", "late_ticks", "max_lag_s", "resyncs")


def control_specs(action_dim: int) -> list[ArraySpec]:
    """The block's command and control arrays (the ``state.*`` ones are the device's own)."""
    return [
        ArraySpec("cmd.lock", (1,), "int64"),
        ArraySpec("cmd.action", (action_dim,), "float64"),
        ArraySpec("ctl.i64", (Ctl.N,), "int64"),
        ArraySpec("ctl.f64", (len(Ctl.STATS),), "float64"),
        ArraySpec("ctl.message", (512,), "uint8"),
    ]


class DeviceBlock:
    """Typed access to the parts of a device block every device has (either side); subclasses add
    their ``state.*`` (written behind ``state_lock``)."""

    def __init__(self, arrays: SharedArrays) -> None:
        self.arrays = arrays
        self.state_lock = SeqLock(arrays["state.lock"])
        self.cmd_lock = SeqLock(arrays["cmd.lock"])
        self.ctl = arrays["ctl.i64"]
        self.stats = arrays["ctl.f64"]
        self.message = arrays["ctl.message"]

    def write_command(self, command: np.ndarray) -> None:
        self.cmd_lock.write_begin()
        self.arrays["cmd.action"][:] = command
        self.cmd_lock.write_end()

    def read_command(self) -> np.ndarray:
        return self.cmd_lock.read(lambda: self.arrays["cmd.action"].copy())

    def failure(self) -> str:
        return read_text(self.message) if self.ctl[Ctl.FAILED] else ""

    def record_failure(self, exc: BaseException) -> None:
        """Device side: leave why it fails for the control side to name."""
        write_text(self.message, f"{type(exc).__name__}: {exc}")
        self.ctl[Ctl.FAILED] = 1

    def request_stop(self) -> None:
        self.ctl[Ctl.STOP] = 1

    def state_seq(self) -> int:
        """The ``seq`` of the newest state written (the subclass knows where it lies)."""
        raise NotImplementedError

    def read_state(self) -> Any:
        """A consistent copy of the newest state (``TimeoutError`` when stuck mid-write)."""
        raise NotImplementedError

    def stats_dict(self) -> dict[str, float]:
        return {k: (float(v) if k == "max_lag_s" else int(v)) for k, v in zip(Ctl.STATS, self.stats)}


def run_clock(
    shared: DeviceBlock,
    period: float,
    max_lag_s: float,
    parent_alive: Callable[[], bool],
    step: Callable[[float], None],
    home: Callable[[int | None], None],
    label: str,
    restart_clock_on_home: bool = False,
) -> None:
    """Device side: ``step(deadline)`` once per ``period`` on absolute deadlines until asked to stop
    or the parent is gone; ``home(seed)`` answers each home request while waiting. Far behind the wall
    clock (CPU starved) it restarts the clock rather than burst-stepping, because a burst of steps
    would move the world faster than the control side can follow. ``restart_clock_on_home``: the
    next step is one period after the reset, however long the reset took (a step stamped with a
    deadline from before it would read as stale)."""
    ctl, stats = shared.ctl, shared.stats
    stop = lambda: bool(ctl[Ctl.STOP]) or not parent_alive()  # noqa: E731
    t0 = time.monotonic()
    k = 0
    while True:
        k += 1
        deadline = t0 + k * period
        while True:  # sleep to the deadline in short steps, answering home requests meanwhile
            if ctl[Ctl.HOME_REQ] != ctl[Ctl.HOME_ACK]:
                req = int(ctl[Ctl.HOME_REQ])
                home(int(ctl[Ctl.HOME_SEED]) if ctl[Ctl.HOME_HAS_SEED] else None)
                ctl[Ctl.HOME_ACK] = req
                if restart_clock_on_home:
                    t0 = time.monotonic() - (k - 1) * period
                    deadline = t0 + k * period
            if not sleep_until(min(deadline, time.monotonic() + 0.005), stop, step_s=0.005):
                return
            if time.monotonic() >= deadline:
                break
        step(deadline)
        lag = time.monotonic() - deadline
        stats[0] += 1
        stats[2] = max(stats[2], lag)
        if lag > period:
            stats[1] += 1
        if lag > max_lag_s:
            log.warning("%s %.3f s behind the wall clock; re-anchoring", label, lag)
            t0 = time.monotonic() - k * period
            stats[3] += 1


def wait_ready(
    proc: DeviceProcess, shared: DeviceBlock, timeout_s: float, label: str, stop: Callable[[], None]
) -> None:
    """Control side: return once the started process says READY; else ``stop()`` it and raise a
    ``RobotError`` naming the cause (its failure message, how it died, or the timeout)."""
    deadline = time.monotonic() + timeout_s
    while not shared.ctl[Ctl.READY]:
        if not proc.alive() or time.monotonic() > deadline:
            cause = shared.failure() or (proc.death_cause() if not proc.alive() else f"not ready within {timeout_s} s")
            stop()
            raise RobotError(f"{label} process failed at start: {cause}")
        time.sleep(0.005)
    proc.ready()


def request_home(
    proc: DeviceProcess, shared: DeviceBlock, seed: int | None, timeout_s: float, label: str, verb: str
) -> None:
    """Control side: ask the running process for a new episode (``seed``) and return once it has
    answered; a ``RobotError`` when it fails or dies meanwhile, or after ``timeout_s``
    ("<label> process did not <verb> within ...")."""
    shared.ctl[Ctl.HOME_HAS_SEED] = int(seed is not None)
    shared.ctl[Ctl.HOME_SEED] = 0 if seed is None else int(seed)
    request = int(shared.ctl[Ctl.HOME_REQ]) + 1
    shared.ctl[Ctl.HOME_REQ] = request
    deadline = time.monotonic() + timeout_s
    while int(shared.ctl[Ctl.HOME_ACK]) != request:
        fault = process_fault(proc, shared, label)
        if fault is not None:
            raise RobotError(fault)
        if time.monotonic() > deadline:
            raise RobotError(f"{label} process did not {verb} within {timeout_s} s")
        time.sleep(0.001)


def read_state(proc: DeviceProcess, shared: DeviceBlock, last_seq: int, label: str) -> Any:
    """Control side: the newest state. When nothing new came since ``last_seq`` (the seq of the last
    state read), first make sure the process still serves: a ``RobotError`` naming why not, rather
    than a state that only goes stale later."""
    if shared.state_seq() == last_seq:
        fault = process_fault(proc, shared, label)
        if fault is not None:
            raise RobotError(fault)
    try:
        return shared.read_state()
    except TimeoutError:
        raise RobotError(process_fault(proc, shared, label) or f"{label} state stuck mid-write") from None


def process_fault(proc: DeviceProcess, shared: DeviceBlock, label: str) -> str | None:
    """Why the running process cannot serve (it failed, or it died), or None."""
    failure = shared.failure()
    if failure:
        return f"{label} process failed: {failure}"
    if not proc.alive():
        return f"{label} process (pid {proc.pid}) died: {proc.death_cause()}"
    return None


def stop_process(proc: DeviceProcess, shared: DeviceBlock | None, deadline: float | None = None) -> dict[str, float]:
    """Control side: ask the process to stop through its block (when there is one), end it, and
    return its clock stats (none without a block)."""
    proc.stop(request_stop=None if shared is None else shared.request_stop, deadline=deadline)
    return {} if shared is None else shared.stats_dict()
