"""scripts/busy_load.py: the load processes run, and spin, for as long as the command does; they are
gone when it returns; the command's exit status is the script's. Conditions only, no timings."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from scripts import busy_load

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "busy_load.py"

# Run as the command under load: waits (generous deadline) until every loop has used CPU time,
# checks each is alive and is a busy_load loop, prints what it saw, exits 3.
PROBE = """
import json, os, sys, time
pids = [int(p) for p in os.environ[ENV_PIDS].split(",") if p]
def stat(pid):
    return open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
def cpu_ticks(pid):
    return int(stat(pid)[11]) + int(stat(pid)[12])  # utime + stime
deadline = time.monotonic() + 120
while not all(cpu_ticks(p) > 0 for p in pids) and time.monotonic() < deadline:
    time.sleep(0.05)
seen = {p: {"cmdline": open(f"/proc/{p}/cmdline").read().split(chr(0)), "cpu_ticks": cpu_ticks(p),
            "ppid": int(stat(p)[1])} for p in pids}
print(json.dumps(seen))
sys.exit(3)
""".replace("ENV_PIDS", repr(busy_load.ENV_PIDS))


def alive(pid: int) -> bool:
    """A live process (a zombie is not one; busy_load reaps its loops, so none should be left)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_loops_spin_while_the_command_runs_and_are_gone_after() -> None:
    out = subprocess.run(
        [sys.executable, str(SCRIPT), "--procs", "2", "--", sys.executable, "-c", PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 3, out.stderr  # the command's exit status, passed on
    seen = {int(pid): info for pid, info in json.loads(out.stdout.strip().splitlines()[-1]).items()}
    assert len(seen) == 2, seen
    script_pid = {info["ppid"] for info in seen.values()}
    assert len(script_pid) == 1  # both children of the busy_load process
    for pid, info in seen.items():
        assert busy_load.MARKER in info["cmdline"], info
        assert info["cpu_ticks"] > 0, info  # it spun while the command ran
        assert not alive(pid), f"busy loop {pid} outlived the command"
    assert "took" in out.stderr and "beside 2 busy-loop process(es); exit status 3" in out.stderr


def test_no_loops_and_a_command_killed_by_a_signal() -> None:
    out = subprocess.run(
        [
            sys.executable,
            str(SCRIPT),
            "--procs",
            "0",
            "--",
            sys.executable,
            "-c",
            "import os, signal; os.kill(os.getpid(), signal.SIGTERM)",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 128 + 15, out.stderr


def test_a_loop_whose_script_is_gone_stops_by_itself() -> None:
    """kill -9 of busy_load must not leave a spinning orphan: each loop watches its parent."""
    parent = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"])
    loop = subprocess.Popen([sys.executable, "-c", busy_load.LOOP, busy_load.MARKER, str(parent.pid)])
    try:
        # the loop's parent is this test, not `parent`: it ends as soon as it checks
        assert loop.wait(timeout=120) == 0
    finally:
        parent.kill()
        parent.wait()
        if loop.poll() is None:
            loop.kill()


@pytest.mark.parametrize("argv", [[], ["--"], ["--procs", "-1", "--", "true"]])
def test_bad_arguments_are_a_usage_error(argv) -> None:
    with pytest.raises(SystemExit) as exc:
        busy_load.main(argv)
    assert exc.value.code == 2


def test_exit_status_follows_the_shell_convention() -> None:
    assert busy_load.exit_status(0) == 0 and busy_load.exit_status(5) == 5
    assert busy_load.exit_status(-9) == 137 and busy_load.exit_status(-2) == 130
