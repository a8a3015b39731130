"""A device in its own process: spawn, watch, stop; the child side's start-up and parent watch.

Cameras and the sim physics run as spawned children of the control process so that none of their
Python threads competes with the control thread for the interpreter. They exchange data only
through shared memory the parent created (``services.shm``), so the parent alone unlinks it: a
child killed with -9 leaves nothing behind, and a parent killed with -9 makes its children exit
(they watch ``getppid``) and the shared ``resource_tracker`` unlink the blocks.
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Callable
from typing import Any

from services import realtime
from services.logs import LogSetup

log = logging.getLogger(__name__)


def exit_cause(code: int | None) -> str:
    """How a child ended, from ``multiprocessing``'s ``exitcode`` or ``subprocess``'s ``returncode``
    (both negative for a signal): ``exited with code N`` / ``killed by signal N (SIGKILL)`` /
    ``still running`` (None). Every child of the engine is reported in these words."""
    if code is None:
        return "still running"
    if code < 0:
        try:
            sig = signal.Signals(-code).name
        except ValueError:
            sig = "?"
        return f"killed by signal {-code} ({sig})"
    return f"exited with code {code}"


def _child_entry(
    target: Callable[..., None],
    args: tuple,
    name: str,
    parent_pid: int,
    settings: realtime.ChildSettings | None,
    log_setup: LogSetup,
) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C reaches the whole group: the parent decides
    # stderr as quiet as the app's console, the rest appended to the run's log file
    log_setup.apply(f"%(asctime)s [{name}] %(levelname)s %(name)s: %(message)s")
    realtime.apply_child(settings, name)
    target(*args, parent_alive=lambda: os.getppid() == parent_pid)


class DeviceProcess:
    """Parent-side handle of one spawned device process (``target(*args, parent_alive=...)``)."""

    def __init__(self, name: str, target: Callable[..., None], args: tuple) -> None:
        self.name = name
        self.target = target
        self.args = args
        self.proc: Any = None

    def start(self) -> None:
        ctx = mp.get_context("spawn")
        self.proc = ctx.Process(
            target=_child_entry,
            name=self.name,
            daemon=True,
            args=(self.target, self.args, self.name, os.getpid(), realtime.device_settings(), LogSetup.current()),
        )
        self.proc.start()

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def ready(self) -> None:
        """The owner saw the child up (its settings applied): record them in the run's report."""
        realtime.note_child(self.name, self.pid)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.is_alive()

    def death_cause(self) -> str:
        """``exited with code N`` / ``killed by signal N (SIGKILL)`` / ``not started``."""
        if self.proc is None:
            return "not started"
        return exit_cause(self.proc.exitcode)

    def stop(
        self, request_stop: Callable[[], None] | None = None, grace_s: float = 0.4, deadline: float | None = None
    ) -> None:
        """Ask it to stop (``request_stop`` sets its shared stop flag) and give it until ``deadline``
        (monotonic s; default ``grace_s`` from now), then SIGTERM, then SIGKILL. It owns no shared
        memory, so a child cut short leaves nothing behind."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if request_stop is not None and proc.is_alive():
            request_stop()
        proc.join(max(0.0, (time.monotonic() + grace_s if deadline is None else deadline) - time.monotonic()))
        if proc.is_alive():
            proc.terminate()
            proc.join(0.3)
        if proc.is_alive():
            proc.kill()
            proc.join(1.0)


def sleep_until(deadline: float, stop: Callable[[], bool], step_s: float = 0.05) -> bool:
    """Sleep to ``deadline`` (monotonic s) in steps of at most ``step_s``; False when ``stop()``."""
    while True:
        if stop():
            return False
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return True
        time.sleep(min(remaining, step_s))
