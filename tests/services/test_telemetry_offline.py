"""``logger=wandb`` with no W&B variable set makes no network attempt at all.

wandb 0.31's first ``run.log`` builds an OpenTelemetry exporter from the *process-wide* settings,
which are online unless ``WANDB_MODE`` is in the environment: ``mode="offline"`` given to
``wandb.init`` alone still let an export thread resolve ``api.forge.coreweave.com`` (UDP 53).
The check is made on system calls (``strace -f``), so a DNS query to any resolver, a connect from
the Go ``wandb-core`` service or from any thread is seen, also inside the loopback-only namespace
of ``make test`` (a query to an unreachable resolver is still a ``connect``/``sendto`` call).
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
LOCKSTEP = ["robot.realtime=false", "algorithm=sequential", "policy=scripted", "report=false"]
_ADDR = re.compile(
    r"sa_family=(AF_INET6?),\s*sin6?_port=htons\((\d+)\),\s*(?:sin6_flowinfo=\S+,\s*)?"
    r"(?:inet_pton\(AF_INET6?,\s*\"([^\"]+)\"|sin_addr=inet_addr\(\"([^\"]+)\"\))"
)
NET_CALLS = "connect,sendto,sendmsg,sendmmsg"
# the real-time run must end with all its ticks on a busy 2-core machine too (this checks the records,
# not faults): slow inference and late frames are tolerated, as in benchmarks/bench_realtime.py
LOADED_MACHINE = [
    "algorithm.max_chunk_jump=null",
    "algorithm.inference_timeout_s=60",
    "cameras.max_frame_age_s=5",
    "robot.max_state_age_s=5",
]


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
    lines = "\n".join(
        [
            '12 connect(6, {sa_family=AF_INET, sin_port=htons(53), sin_addr=inet_addr("10.255.255.53")}, 16) = 0',
            '12 connect(7, {sa_family=AF_INET, sin_port=htons(8080), sin_addr=inet_addr("127.0.0.1")}, 16) = 0',
            "12 connect(8, {sa_family=AF_INET6, sin6_port=htons(443), sin6_flowinfo=htonl(0), "
            'inet_pton(AF_INET6, "2606:4700::1", &sin6_addr), sin6_scope_id=0}, 28) = -1 ENETUNREACH',
            '12 connect(9, {sa_family=AF_UNIX, sun_path="/var/run/nscd/socket"}, 110) = -1 ENOENT',
        ]
    )
    bad = network_attempts(lines)
    assert len(bad) == 2 and "10.255.255.53" in bad[0] and "2606:4700::1" in bad[1]


def _strace(log: Path) -> list[str]:
    return ["strace", "-f", "-qq", "--seccomp-bpf", "-e", f"trace={NET_CALLS}", "-e", "signal=none", "-o", str(log)]


def _without_wandb_vars() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}  # the user's default


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_lockstep_wandb_run_makes_no_network_attempt(tmp_path):
    log, run_dir = tmp_path / "strace.txt", tmp_path / "run"
    proc = subprocess.run(
        [
            *_strace(log),
            sys.executable,
            "-m",
            "inference",
            *LOCKSTEP,
            "logger=wandb",
            "record=mcap",
            "max_steps=40",
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=_without_wandb_vars(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert list((run_dir / "wandb_files").rglob("run-*.wandb")), "no offline W&B run was written"
    traced = log.read_text()
    assert "connect(" in traced, "strace saw no socket calls at all: the trace is not working"
    assert network_attempts(traced) == []


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("strace") is None, reason="needs strace (apt-get install strace)")
def test_default_app_with_wandb_and_mcap_is_offline_and_records_every_tick(tmp_path):
    """The default app with W&B and recording (sim, flow policy, RTC, in real time), no W&B variable set: no network
    attempt, and the bag and the W&B run hold one message per tick / per chunk."""
    from mcap.reader import make_reader

    from tests.wandb_records import history_and_summary

    log, run_dir = tmp_path / "strace.txt", tmp_path / "run"
    proc = subprocess.run(
        [
            *_strace(log),
            sys.executable,
            "-m",
            "inference",
            "logger=wandb",
            "record=mcap",
            "max_steps=120",
            "algorithm.stop_on_success=false",
            "report=false",
            *LOADED_MACHINE,
            f"hydra.run.dir={run_dir}",
        ],
        cwd=ROOT,
        env=_without_wandb_vars(),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    traced = log.read_text()
    assert "connect(" in traced, "strace saw no socket calls at all: the trace is not working"
    assert network_attempts(traced) == []

    summary = json.loads((run_dir / "summary.json").read_text())
    with (run_dir / "ticks.csv").open() as f:
        ticks = len(list(csv.DictReader(f)))
    with np.load(run_dir / "chunks.npz") as c:
        chunks = len(c["chunk_id"])
    assert ticks == summary["ticks"] == 120 * summary["episodes"]
    assert summary["telemetry_dropped"] == 0 and summary["recording_dropped"] == 0
    with next((run_dir / "recording").glob("*.mcap")).open("rb") as f:
        counts: dict[str, int] = {}
        for _schema, channel, _message in make_reader(f).iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    assert counts["/command/joint_states"] == ticks
    assert counts["/observation/joint_states"] == ticks  # the episode's first read serves tick 0
    for cam in ("head", "left", "right"):
        assert counts[f"/observation/{cam}/image/compressed"] == ticks
    assert counts["/policy/chunk"] == chunks == summary["inferences"] > 1
    assert summary["recorded"] == counts

    files = list((run_dir / "wandb_files").rglob("run-*.wandb"))
    assert len(files) == 1
    history, wb_summary, _config = history_and_summary(files[0])
    assert history["control/period_error_ms"] == ticks
    assert history["inference/latency_ms"] == summary["inferences"]
    assert json.loads(wb_summary["ticks"]) == ticks
