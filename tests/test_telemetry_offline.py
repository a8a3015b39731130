"""``logger=wandb`` with no W&B variable set makes no network attempt at all (issue 18).

wandb 0.31's first ``run.log`` builds an OpenTelemetry exporter from the *process-wide* settings,
which are online unless ``WANDB_MODE`` is in the environment: ``mode="offline"`` given to
``wandb.init`` alone still let an export thread resolve ``api.forge.coreweave.com`` (UDP 53).
The check is made on system calls (``strace -f``), so a DNS query to any resolver, a connect from
the Go ``wandb-core`` service or from any thread is seen, also inside the loopback-only namespace
of ``make test`` (a query to an unreachable resolver is still a ``connect``/``sendto`` call).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
LOCKSTEP = ["robot.realtime=false", "algorithm=sequential", "policy=scripted", "report=false"]
_ADDR = re.compile(r"sa_family=(AF_INET6?),\s*sin6?_port=htons\((\d+)\),\s*(?:sin6_flowinfo=\S+,\s*)?"
                   r"(?:inet_pton\(AF_INET6?,\s*\"([^\"]+)\"|sin_addr=inet_addr\(\"([^\"]+)\"\))")
NET_CALLS = "connect,sendto,sendmsg,sendmmsg"


def network_attempts(strace_log: str) -> list[str]:
    """The traced calls that address anything but loopback, and every DNS (port 53) call."""
    bad = []
    for line in strace_log.splitlines():
        for family, port, addr6, addr4 in _ADDR.findall(line):
            addr = addr6 or addr4
            loopback = addr.startswith("127.") or addr in ("::1", "::ffff:127.0.0.1")
            if port == "53" or not loopback:
                bad.append(line.strip())
    return bad


def test_parser_flags_dns_and_off_host_connects_only():
    lines = "\n".join([
        '12 connect(6, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
        '12 connect(7, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
        '12 connect(8, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), '
        'inet_pton(AF_INET6, "2606:4700::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH',
        '12 connect(9, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
    ])
    bad = network_attempts(lines)
    assert len(bad) == 2 and "10.255.255.53" in bad[0] and "2606:4700::1" in bad[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_wandb_default_offline_run_makes_no_network_attempt(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # the user's default
    log = tmp_path / "strace.txt"
    run_dir = tmp_path / "run"
    proc = subprocess.run(
        ["strace", "-f", "-qq", "-e", f"trace={NET_CALLS}", "-e", "signal=none", "-o", str(log),
         sys.executable, "-m", "inference", *LOCKSTEP, "logger=wandb", "record=mcap", "max_steps=40",
         f"hydra.run.dir={run_dir}"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run_dir / "wandb_files").rglob("run-*.wandb")), "no offline W&B run was written"
    traced = log.read_text()
    assert "connect(" in traced, "strace saw no socket calls at all: the trace is not working"
    assert network_attempts(traced) == []
