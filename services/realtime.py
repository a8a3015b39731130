"""Real-time settings of a run (``conf/realtime/``): where each process runs and how it is scheduled.

What a user sets, and what happens:

* ``control_cpus`` / ``inference_cpus`` / ``device_cpus``: CPU affinity of the control thread, the
  inference process and every device process (cameras, sim physics). ``null`` = not pinned (a
  child of a pinned control process gets back the CPUs the run started with).
* ``device_nice``: nice value of the device processes (-20..19; default 0). Negative: a sensor that
  renders or decodes keeps up on a busy machine, at the expense of the inference process' share.
* ``control_priority``: SCHED_FIFO priority (1..99) of the control thread; 0 keeps SCHED_OTHER.
  Set with SCHED_RESET_ON_FORK, so no process or thread started from it inherits real-time
  priority (a spawned inference process computing at FIFO would starve the machine).
* ``mlockall``: lock the control process' pages in RAM (``MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT``:
  nothing it touched is paged out, nothing is pre-faulted).
* ``switch_interval_s``: ``sys.setswitchinterval`` of the control process, the longest another
  Python thread of the process holds the interpreter before the control thread gets it.
* ``gc_freeze``: collect once, then ``gc.freeze()`` what exists when the loop starts (start-up
  leaves ~200k objects; a full collection of them takes 50-200 ms and would run in the control
  thread at some tick); later collections scan only what the loop itself allocated.
* ``spin_s`` / ``fifo_spin_s``: how long ``DeadlineClock`` busy-waits before each deadline, under
  SCHED_OTHER (``time.sleep`` overshoots there) and under SCHED_FIFO (the sleep is exact but the
  CPU's wake-up latency is not: ``DEFAULT_FIFO_SPIN_S``, at most ``MAX_FIFO_SPIN_S``, so a real-time
  thread never spins long enough to starve anything).

Each setting is applied where the OS permits; a refusal (no CAP_SYS_NICE, RLIMIT_MEMLOCK, a CPU
that is not there) is a warning in the log and ``applied: false`` with the reason in the report,
never a failed run. ``RealtimeSession.report`` goes into ``summary.json`` under ``realtime``.
The loops call ``RealtimeSession.enter_control(run)`` once at start and ``close()`` at the end;
device and inference processes call ``apply_child`` first thing.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import gc
import json
import logging
import multiprocessing as mp
import os
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any, ClassVar

log = logging.getLogger(__name__)

MAX_FIFO_SPIN_S = 0.0005
# Woken at SCHED_FIFO the thread still pays the CPU's wake-up latency (a halted vCPU: 0.1-0.3 ms at p99 on
# the 2-core VM of benchmarks/results/realtime_steal.md); waking 0.3 ms early and spinning the rest took the
# default run's period error p99 from 0.17 to 0.02 ms at 50 Hz, for 0.6% (20 Hz) to 3% (100 Hz) of a core.
DEFAULT_FIFO_SPIN_S = 0.0003
DEFAULT_SPIN_S = 0.002
BASE_CPUS_ENV = "INFERENCE_RT_BASE_CPUS"  # the CPUs the run started with, for children of a pinned parent
_MCL_CURRENT, _MCL_FUTURE, _MCL_ONFAULT = 1, 2, 4
_PR_SET_TIMERSLACK = 29


@dataclass
class RealtimeConfig:
    """``conf/realtime/default.yaml``; ranges are checked at start (``preflight``)."""

    control_cpus: list[int] | None = None
    inference_cpus: list[int] | None = None
    device_cpus: list[int] | None = None
    device_nice: int = 0
    control_priority: int = 80
    mlockall: bool = True
    switch_interval_s: float | None = 0.0005
    gc_freeze: bool = True
    spin_s: float = DEFAULT_SPIN_S
    fifo_spin_s: float = DEFAULT_FIFO_SPIN_S

    def __post_init__(self) -> None:
        problems = config_problems(asdict(self))
        if problems:
            raise ValueError(f"realtime.{problems[0]}")

    @classmethod
    def preflight(cls, node: Mapping[str, Any], path: str) -> None:
        from services.errors import ConfigError

        problems = config_problems(node)
        if problems:
            raise ConfigError(f"{path}.{problems[0]}")

    @classmethod
    def from_node(cls, node: Any) -> RealtimeConfig:
        """From a config node (DictConfig, dict, or None: the defaults)."""
        if node is None:
            return cls()
        if isinstance(node, RealtimeConfig):
            return node
        items = dict(node.items()) if hasattr(node, "items") else dict(node)
        items.pop("_target_", None)
        items.pop("_partial_", None)
        for key in ("control_cpus", "inference_cpus", "device_cpus"):
            if items.get(key) is not None:
                items[key] = [int(c) for c in items[key]]
        return cls(**items)


def config_problems(node: Mapping[str, Any]) -> list[str]:
    """Range problems of a realtime node, each ``"<key>: <why>"``."""
    out = []
    for key in ("control_cpus", "inference_cpus", "device_cpus"):
        cpus = node.get(key)
        if cpus is not None and (len(cpus) == 0 or any(int(c) < 0 for c in cpus)):
            out.append(f"{key}: a non-empty list of CPU numbers >= 0, or null (got {list(cpus)})")
    nice = node.get("device_nice", 0)
    if not -20 <= int(nice) <= 19:
        out.append(f"device_nice: a nice value -20..19 (got {nice})")
    prio = node.get("control_priority", 0)
    if not 0 <= int(prio) <= 99:
        out.append(f"control_priority: 0 (SCHED_OTHER) or a SCHED_FIFO priority 1..99 (got {prio})")
    interval = node.get("switch_interval_s")
    if interval is not None and not 0 < float(interval) <= 0.1:
        out.append(f"switch_interval_s: in (0, 0.1] s or null (got {interval})")
    spin = node.get("spin_s", DEFAULT_SPIN_S)
    if not 0 <= float(spin) <= 0.01:
        out.append(f"spin_s: in [0, 0.01] s (got {spin})")
    fifo_spin = node.get("fifo_spin_s", 0.0)
    if not 0 <= float(fifo_spin) <= MAX_FIFO_SPIN_S:
        out.append(
            f"fifo_spin_s: in [0, {MAX_FIFO_SPIN_S}] s: a longer spin at real-time priority "
            f"can starve the machine (got {fifo_spin})"
        )
    return out


# ---------------------------------------------------------------------------------- primitives
def _libc() -> Any:
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def _result(requested: Any, applied: bool, **extra: Any) -> dict[str, Any]:
    return {"requested": requested, "applied": applied, **extra}


def set_affinity(cpus: list[int] | set[int] | None, what: str) -> dict[str, Any]:
    """Pin the calling thread (and what it starts later) to ``cpus``; falls back to not pinning."""
    if cpus is None:
        return _result(None, False, why="not requested", cpus=sorted(os.sched_getaffinity(0)))
    wanted = sorted({int(c) for c in cpus})
    try:
        os.sched_setaffinity(0, wanted)
    except (OSError, ValueError) as exc:
        have = sorted(os.sched_getaffinity(0))
        log.warning("realtime: %s affinity %s not applied (%s); running on CPUs %s", what, wanted, exc, have)
        return _result(wanted, False, why=str(exc), cpus=have)
    return _result(wanted, True, cpus=sorted(os.sched_getaffinity(0)))


def set_fifo(priority: int) -> dict[str, Any]:
    """SCHED_FIFO (reset on fork) for the calling thread; falls back to SCHED_OTHER."""
    if priority <= 0:
        return _result(0, False, why="not requested", policy=policy_name(os.sched_getscheduler(0)))
    try:
        os.sched_setscheduler(0, os.SCHED_FIFO | os.SCHED_RESET_ON_FORK, os.sched_param(int(priority)))
    except (OSError, AttributeError) as exc:
        log.warning(
            "realtime: SCHED_FIFO priority %d not permitted (%s); the control loop runs SCHED_OTHER "
            "and busy-waits the last %.1f ms before each deadline instead",
            priority,
            exc,
            DEFAULT_SPIN_S * 1e3,
        )
        return _result(int(priority), False, why=str(exc), policy=policy_name(os.sched_getscheduler(0)))
    return _result(int(priority), True, policy=policy_name(os.sched_getscheduler(0)))


def reset_scheduler() -> None:
    """Back to SCHED_OTHER, nice 0 (the calling thread)."""
    try:
        os.sched_setscheduler(0, os.SCHED_OTHER, os.sched_param(0))
    except OSError:
        log.debug("could not reset the scheduler", exc_info=True)


def policy_name(policy: int) -> str:
    policy &= ~getattr(os, "SCHED_RESET_ON_FORK", 0)
    names = {
        getattr(os, n): n
        for n in ("SCHED_OTHER", "SCHED_FIFO", "SCHED_RR", "SCHED_BATCH", "SCHED_IDLE")
        if hasattr(os, n)
    }
    return names.get(policy, str(policy))


def thread_is_realtime() -> bool:
    """True when the calling thread runs SCHED_FIFO or SCHED_RR."""
    try:
        policy = os.sched_getscheduler(0) & ~os.SCHED_RESET_ON_FORK
    except (OSError, AttributeError):
        return False
    return policy in (os.SCHED_FIFO, os.SCHED_RR)


def lock_memory() -> dict[str, Any]:
    libc = _libc()
    flags = _MCL_CURRENT | _MCL_FUTURE | _MCL_ONFAULT
    rc = libc.mlockall(flags)
    if rc != 0 and ctypes.get_errno() == errno.EINVAL:  # kernel without MCL_ONFAULT
        flags = _MCL_CURRENT | _MCL_FUTURE
        rc = libc.mlockall(flags)
    if rc != 0:
        why = os.strerror(ctypes.get_errno())
        log.warning("realtime: mlockall not permitted (%s); pages of the control process may be paged out", why)
        return _result(True, False, why=why)
    return _result(
        True,
        True,
        flags="MCL_CURRENT|MCL_FUTURE" + ("|MCL_ONFAULT" if flags & _MCL_ONFAULT else ""),
        vm_locked_kib=locked_kib(),
    )


def unlock_memory() -> None:
    _libc().munlockall()


def locked_kib() -> int | None:
    """``VmLck`` of this process (locked mappings; with MCL_ONFAULT not all of it is resident)."""
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmLck:"):
                return int(line.split()[1])
    except OSError:
        pass
    return None


def set_timer_slack(ns: int) -> bool:
    """The calling thread's timer slack (SCHED_OTHER sleeps overshoot by up to it; default 50 us)."""
    try:
        return _libc().prctl(_PR_SET_TIMERSLACK, ctypes.c_ulong(ns), 0, 0, 0) == 0
    except (OSError, AttributeError):
        return False


def process_settings(pid: int) -> dict[str, Any]:
    """What another process actually runs with (observed, not what it was asked)."""
    try:
        return {
            "cpus": sorted(os.sched_getaffinity(pid)),
            "policy": policy_name(os.sched_getscheduler(pid)),
            "nice": os.getpriority(os.PRIO_PROCESS, pid),
        }
    except OSError as exc:
        return {"error": str(exc)}


# ---------------------------------------------------------------------------------- children
@dataclass(frozen=True)
class ChildSettings:
    """What a device or inference process applies to itself first thing (picklable)."""

    role: str
    cpus: tuple[int, ...] | None = None
    nice: int = 0

    @classmethod
    def for_role(cls, node: Any, role: str) -> ChildSettings:
        cfg = RealtimeConfig.from_node(node)
        cpus = {"inference": cfg.inference_cpus, "device": cfg.device_cpus}[role]
        return cls(role, None if cpus is None else tuple(cpus), cfg.device_nice if role == "device" else 0)


def device_settings() -> ChildSettings:
    """The device-process settings of the running session (none outside a session)."""
    session = RealtimeSession.active
    return ChildSettings.for_role(session.cfg if session is not None else None, "device")


def apply_child(settings: ChildSettings | None, name: str) -> dict[str, Any]:
    """Called by a device/inference process at start: its affinity (or the run's original CPUs when
    the control process pinned itself), SCHED_OTHER. Logged; returns what was applied."""
    if settings is None:
        return {}
    cpus: Any = settings.cpus
    if cpus is None and os.environ.get(BASE_CPUS_ENV):
        cpus = json.loads(os.environ[BASE_CPUS_ENV])
    result = set_affinity(cpus, f"{settings.role} process {name}") if cpus is not None else {}
    if settings.nice:
        try:
            os.setpriority(os.PRIO_PROCESS, 0, settings.nice)
        except OSError as exc:
            log.warning(
                "realtime: nice %d for %s not permitted (%s); it runs at nice %d",
                settings.nice,
                name,
                exc,
                os.getpriority(os.PRIO_PROCESS, 0),
            )
    applied = {"role": settings.role, "pid": os.getpid(), **process_settings(0)}
    # DEBUG: the parent says the same once it sees the child up (``note_child``, in the log and the report)
    log.debug(
        "realtime: %s process %s (pid %d) on CPUs %s, %s, nice %s",
        settings.role,
        name,
        os.getpid(),
        applied.get("cpus"),
        applied.get("policy"),
        applied.get("nice"),
    )
    return {**applied, "affinity": result} if result else applied


# ---------------------------------------------------------------------------------- control side
@dataclass
class RealtimeSession:
    """The control thread's settings for one run: applied by ``enter_control``, undone by
    ``close`` (tests and sweeps run loops in one long-lived process)."""

    cfg: RealtimeConfig
    report: dict[str, Any] = field(default_factory=dict)
    active: ClassVar[RealtimeSession | None] = None  # the session of this process

    @classmethod
    def enter_control(cls, run_or_node: Any = None, realtime: bool = True) -> RealtimeSession:
        """Apply the control-side settings of ``run.cfg.realtime`` (or a node) to the calling thread.

        ``realtime=False`` (a lockstep robot: the loop never sleeps) applies nothing: a loop that
        computes flat out must not run at real-time priority."""
        cfg_node = getattr(getattr(run_or_node, "cfg", None), "get", None)
        node = cfg_node("realtime") if cfg_node is not None else run_or_node
        session = cls(RealtimeConfig.from_node(node))
        session._thread = threading.get_ident()
        session._old_interval = sys.getswitchinterval()
        session._old_env = os.environ.get(BASE_CPUS_ENV)
        if realtime:
            session._apply()
        else:
            session.report = {"control": {"applied": False, "why": "lockstep robot (no wall clock)"}, "children": []}
            log.info("realtime: lockstep robot, no real-time settings applied")
        RealtimeSession.active = session
        return session

    def _apply(self) -> None:
        cfg = self.cfg
        self._base_cpus = sorted(os.sched_getaffinity(0))
        os.environ[BASE_CPUS_ENV] = json.dumps(self._base_cpus)
        control: dict[str, Any] = {"affinity": set_affinity(cfg.control_cpus, "control thread")}
        if cfg.switch_interval_s is not None:
            sys.setswitchinterval(cfg.switch_interval_s)
        control["switch_interval_s"] = _result(
            cfg.switch_interval_s, cfg.switch_interval_s is not None, value=sys.getswitchinterval()
        )
        control["mlockall"] = lock_memory() if cfg.mlockall else _result(False, False, why="not requested")
        control["timer_slack_ns"] = _result(1, set_timer_slack(1))
        control["gc_freeze"] = self._freeze() if cfg.gc_freeze else _result(False, False, why="not requested")
        control["sched"] = set_fifo(cfg.control_priority)
        control["clock_spin_s"] = self.spin_s()
        self.report = {"control": control, "children": []}
        log.info("realtime: control thread %s", _summary_line(control))

    def _freeze(self) -> dict[str, Any]:
        t0 = time.perf_counter()
        gc.collect()
        gc.freeze()
        self._frozen = True
        return _result(True, True, frozen_objects=gc.get_freeze_count(), collect_ms=(time.perf_counter() - t0) * 1e3)

    def spin_s(self) -> float:
        """The busy-wait before each deadline for a clock in the calling thread."""
        return self.cfg.fifo_spin_s if thread_is_realtime() else self.cfg.spin_s

    def observe_children(self) -> list[dict[str, Any]]:
        """Right before the first tick: record the settings every child process of this process runs
        with, and freeze what start-up allocated since ``enter_control`` (``gc_freeze``)."""
        if getattr(self, "_frozen", False):
            gc.freeze()
            self.report["control"]["gc_freeze"]["frozen_objects"] = gc.get_freeze_count()
        for p in mp.active_children():
            self.note_child(p.name, p.pid)
        return self.report["children"]

    def note_child(self, name: str, pid: int) -> None:
        children = self.report.setdefault("children", [])
        if any(c["pid"] == pid for c in children):
            return
        child = {"name": name, "pid": pid, **process_settings(pid)}
        children.append(child)
        log.info(
            "realtime: child %s (pid %s) on CPUs %s, %s, nice %s",
            name,
            pid,
            child.get("cpus"),
            child.get("policy"),
            child.get("nice"),
        )

    def close(self) -> dict[str, Any]:
        """Undo the control-thread settings (same thread as ``enter_control``); returns the report."""
        if RealtimeSession.active is self:
            RealtimeSession.active = None
        control = self.report.get("control", {})
        if threading.get_ident() == getattr(self, "_thread", None) and "sched" in control:
            reset_scheduler()
            if self.cfg.control_cpus is not None:
                try:
                    os.sched_setaffinity(0, self._base_cpus)
                except OSError:
                    pass
        sys.setswitchinterval(self._old_interval)
        if getattr(self, "_frozen", False):
            gc.unfreeze()
            self._frozen = False
        if control.get("mlockall", {}).get("applied"):
            unlock_memory()
        if self._old_env is None:
            os.environ.pop(BASE_CPUS_ENV, None)
        else:
            os.environ[BASE_CPUS_ENV] = self._old_env
        return self.report


def note_child(name: str, pid: int | None) -> None:
    """A device process is up (its own settings applied): record what it runs with, if a session runs."""
    session = RealtimeSession.active
    if session is not None and pid is not None:
        session.note_child(name, pid)


def current_spin_s() -> float:
    """Busy-wait for a new ``DeadlineClock``: the session's choice, else ``DEFAULT_SPIN_S`` (none at
    real-time priority outside a session)."""
    session = RealtimeSession.active
    if session is not None:
        return session.spin_s()
    return 0.0 if thread_is_realtime() else DEFAULT_SPIN_S


def _summary_line(control: Mapping[str, Any]) -> str:
    def one(key: str, value: Any) -> str:
        if not isinstance(value, Mapping):
            return f"{key}={value}"
        if value.get("applied"):
            shown = value.get("cpus") or value.get("policy") or value.get("value") or value.get("flags") or "on"
            return f"{key}={shown}"
        return f"{key}=off ({value.get('why', 'not requested')})"

    return ", ".join(one(k, v) for k, v in control.items())
