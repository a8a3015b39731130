"""Real-time settings (conf/realtime, services/realtime.py): ranges checked at start, applied where
permitted and reported, a clear fallback where not, children never inherit real-time priority, and
the deadline clock is given ``fifo_spin_s`` (0.3 ms, bounded) at SCHED_FIFO and ``spin_s`` otherwise.
How much CPU a given spin costs is checked on a fake clock (test_deadline_clock_spin.py) and
measured for real in benchmarks/bench_realtime.py, never against this machine's wall clock here."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from inference.app import compose_run
from services.errors import ConfigError
from services.realtime import RealtimeConfig, RealtimeSession

ROOT = Path(__file__).resolve().parents[2]


def run_py(code: str, prefix: list[str] = ()) -> dict:
    """Run ``code`` in a fresh interpreter (settings never touch the test process); it prints JSON."""
    out = subprocess.run(
        [*prefix, sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return {"report": json.loads(out.stdout.strip().splitlines()[-1]), "stderr": out.stderr}


def fifo_permitted() -> bool:
    probe = subprocess.run(
        [sys.executable, "-c", "import os; os.sched_setscheduler(0, os.SCHED_FIFO, os.sched_param(1))"],
        capture_output=True,
    )
    return probe.returncode == 0


@pytest.mark.parametrize(
    "override, key",
    [
        ("realtime.control_priority=100", "realtime.control_priority"),
        ("realtime.control_priority=-1", "realtime.control_priority"),
        ("realtime.fifo_spin_s=0.002", "realtime.fifo_spin_s"),
        ("realtime.spin_s=0.5", "realtime.spin_s"),
        ("realtime.switch_interval_s=0", "realtime.switch_interval_s"),
        ("realtime.control_cpus=[-1]", "realtime.control_cpus"),
        ("realtime.control_cpus=[]", "realtime.control_cpus"),
        ("realtime.mlockall=maybe", "realtime.mlockall"),
        ("realtime.device_nice=-21", "realtime.device_nice"),
        ("+realtime.nice=3", "realtime.nice"),
    ],
)
def test_out_of_range_settings_fail_at_start_naming_the_key(override: str, key: str) -> None:
    with pytest.raises(ConfigError, match="^" + re.escape(key) + ": "):
        compose_run([override])


def test_defaults_compose_and_match_the_dataclass() -> None:
    run = compose_run([])
    node = run.cfg.realtime
    assert RealtimeConfig.from_node(node) == RealtimeConfig()  # the YAML states the class defaults


SESSION = """
import json, os, threading, time, multiprocessing as mp
from services.realtime import RealtimeSession, process_settings, policy_name
from services.clock import DeadlineClock

if __name__ == "__main__":
    s = RealtimeSession.enter_control({CFG})
    out = {"report": s.report}
    box = {}
    t = threading.Thread(target=lambda: box.update(policy=policy_name(os.sched_getscheduler(0))))
    t.start(); t.join()
    out["thread_policy"] = box["policy"]
    p = mp.get_context("spawn").Process(target=time.sleep, args=(1.0,)); p.start()
    out["plain_child"] = process_settings(p.pid); p.join()
    from robots import gl
    gl.select_backend()
    from robots.sim import SimRobot
    robot = SimRobot(cameras={}, realtime=True)
    robot.start(); robot.stop()  # its physics process is a device process: noted in the report
    clock = DeadlineClock(0.01)
    out["spin_s"] = clock.spin_s
    clock.start()
    for i in range(1, 6):
        scheduled, actual = clock.wait(i)
        assert actual >= scheduled, (i, scheduled, actual)
    out["closed"] = s.close()
    out["after"] = process_settings(0)
    print(json.dumps(out))
"""


def test_applied_as_permitted_reported_and_undone() -> None:
    if not fifo_permitted():
        pytest.skip("SCHED_FIFO not permitted here (the fallback test covers this)")
    cfg = {"control_priority": 10, "control_cpus": [0], "mlockall": True, "switch_interval_s": 0.001, "device_nice": -3}
    out = run_py(SESSION.replace("{CFG}", repr(cfg)))["report"]
    control = out["report"]["control"]
    assert control["sched"] == {"requested": 10, "applied": True, "policy": "SCHED_FIFO"}
    assert control["affinity"]["applied"] and control["affinity"]["cpus"] == [0]
    assert control["mlockall"]["applied"] and control["switch_interval_s"]["value"] == 0.001
    # nothing started from the control thread inherits real-time priority or its pinning
    assert out["thread_policy"] == "SCHED_OTHER"
    assert out["plain_child"]["policy"] == "SCHED_OTHER"  # (it keeps the pinning: nothing resets it)
    devices = out["report"]["children"]
    assert [d["name"] for d in devices] == ["sim-physics"]
    assert devices[0]["policy"] == "SCHED_OTHER" and devices[0]["cpus"] == sorted(os.sched_getaffinity(0))
    assert devices[0]["nice"] == -3
    # at SCHED_FIFO the clock sleeps to fifo_spin_s (0.3 ms) before the deadline: 3% of 10 ms ticks
    # (that share: test_deadline_clock_spin.py on a fake clock)
    assert out["spin_s"] == RealtimeConfig().fifo_spin_s == 0.0003 and control["clock_spin_s"] == 0.0003
    assert out["after"] == {
        "cpus": sorted(os.sched_getaffinity(0)),
        "policy": "SCHED_OTHER",
        "nice": os.getpriority(os.PRIO_PROCESS, 0),
    }


def test_sched_other_clock_spins_longer_than_the_fifo_clock() -> None:
    """The contrast the previous test relies on: the SCHED_OTHER clock busy-waits its (longer) spin_s
    (2 of every 10 ms ticks; the share itself: test_deadline_clock_spin.py)."""
    out = run_py(SESSION.replace("{CFG}", repr({"control_priority": 0, "mlockall": False})))["report"]
    assert out["report"]["control"]["sched"]["applied"] is False
    assert out["spin_s"] == RealtimeConfig().spin_s > RealtimeConfig().fifo_spin_s


@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs util-linux setpriv to drop capabilities")
def test_not_permitted_falls_back_and_says_so() -> None:
    cfg = {"control_priority": 50, "mlockall": True, "control_cpus": [4096], "device_nice": -5}
    out = run_py(SESSION.replace("{CFG}", repr(cfg)), prefix=["setpriv", "--inh-caps=-all", "--bounding-set=-all"])
    control = out["report"]["report"]["control"]
    assert control["sched"]["applied"] is False and control["sched"]["policy"] == "SCHED_OTHER"
    assert "not permitted" in control["sched"]["why"].lower()
    assert control["mlockall"]["applied"] is False and control["mlockall"]["why"]
    assert control["affinity"]["applied"] is False and control["affinity"]["cpus"] == sorted(os.sched_getaffinity(0))
    # the fallback clock busy-waits instead (SCHED_OTHER sleeps overshoot)
    assert control["clock_spin_s"] == RealtimeConfig().spin_s
    for word in (
        "SCHED_FIFO priority 50 not permitted",
        "mlockall not permitted",
        "affinity [4096] not applied",
        "nice -5 for sim-physics not permitted",
    ):
        assert word in out["stderr"]


def test_lockstep_robot_gets_no_real_time_settings() -> None:
    session = RealtimeSession.enter_control({"control_priority": 50}, realtime=False)
    try:
        assert session.report["control"]["applied"] is False
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        assert session.close() is session.report
    assert RealtimeSession.active is None
