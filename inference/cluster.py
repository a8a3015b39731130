"""Ray cluster set-up as configuration: ``python -m inference.cluster role=head|worker|stop|status``.

One command per role instead of a start script that switches on the hostname: what differs between the robot PC (head)
and the GPU box (worker, advertising ``{"inference_pc": 1}``) is one override, ``role=``, and every
flag lives in ``conf/cluster/default.yaml``. Each node is started with ``ray start`` in a session of
its own, and its process-group id is recorded under ``<temp_dir>/inference_nodes/``, so
``role=stop`` stops exactly the nodes this config started (by id) -- never every Ray process of
the machine as ``ray stop`` does, which would also take down an unrelated cluster.

All Ray commands of one cluster must agree on ``RAY_AUTH_MODE`` (Ray 2.60 turns token auth on by
default for local clusters); :func:`auth_env` is the one place that decides it, for the CLI, the
tests and the driver (``launcher=ray`` calls :func:`apply_auth_env` with the same values).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from services.ray_connection import AUTH_MODES, ClusterError, address_file, apply_auth_env, auth_env, read_address  # noqa: F401 - auth and address files are the connection's

log = logging.getLogger(__name__)

ROLES = ("head", "worker", "stop", "status")
NODES_SUBDIR = "inference_nodes"


@dataclass(frozen=True)
class NodeInfo:
    role: str
    pgid: int  # process group of every daemon this ``ray start`` left behind
    address: str  # GCS address of the cluster (host:port)
    temp_dir: str


# --------------------------------------------------------------------------- commands
def ray_executable() -> str:
    """The ``ray`` CLI of this interpreter's environment (the venv's, not whatever is on PATH)."""
    candidate = Path(sys.executable).with_name("ray")
    if candidate.exists():
        return str(candidate)
    found = shutil.which("ray")
    if not found:
        raise ClusterError("the `ray` command is not installed in this environment (pip install 'ray[default]')")
    return found


def start_command(
    role: str,
    *,
    head_address: str = "127.0.0.1",
    port: int = 6379,
    node_ip_address: str | None = None,
    temp_dir: str = "/tmp/ray",
    object_store_memory_bytes: int | None = None,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    resources: Mapping[str, float] | None = None,
    include_dashboard: bool = False,
    dashboard_port: int | None = None,
    ray_client_server_port: int | None = None,
    include_log_monitor: bool | None = None,
    extra_args: Sequence[str] = (),
) -> list[str]:
    """The ``ray start`` argv for one node."""
    if role not in ("head", "worker"):
        raise ClusterError(f"role={role!r} does not start a node; expected head or worker")
    cmd = [ray_executable(), "start", f"--temp-dir={temp_dir}", "--disable-usage-stats"]
    if role == "head":
        cmd += ["--head", f"--port={int(port)}", f"--include-dashboard={str(bool(include_dashboard)).lower()}"]
        if dashboard_port is not None:
            cmd.append(f"--dashboard-port={int(dashboard_port)}")
        if ray_client_server_port is not None:
            cmd.append(f"--ray-client-server-port={int(ray_client_server_port)}")
    else:
        address = head_address if ":" in head_address else f"{head_address}:{int(port)}"
        cmd.append(f"--address={address}")
    if node_ip_address:
        cmd.append(f"--node-ip-address={node_ip_address}")
    if object_store_memory_bytes is not None:
        cmd.append(f"--object-store-memory={int(object_store_memory_bytes)}")
    if num_cpus is not None:
        cmd.append(f"--num-cpus={int(num_cpus)}")
    if num_gpus is not None:
        cmd.append(f"--num-gpus={int(num_gpus)}")
    if resources:
        cmd.append(f"--resources={json.dumps({str(k): float(v) for k, v in resources.items()})}")
    if include_log_monitor is not None:
        cmd.append(f"--include-log-monitor={str(bool(include_log_monitor)).lower()}")
    cmd += [str(a) for a in extra_args]
    return cmd


def start_node(
    role: str,
    *,
    auth_mode: str | None = "disabled",
    auth_token_path: str | None = None,
    start_timeout_s: float = 60.0,
    **flags: Any,
) -> NodeInfo:
    """Start one node with ``ray start`` and record its process group for :func:`stop_nodes`.

    Raises ``ClusterError`` with Ray's own output when the command fails or exceeds
    ``start_timeout_s`` (the partly started node is stopped first).
    """
    temp_dir = str(flags.get("temp_dir", "/tmp/ray"))
    Path(temp_dir).mkdir(parents=True, exist_ok=True)
    cmd = start_command(role, **flags)
    env = {**os.environ, **auth_env(auth_mode, auth_token_path)}
    log.info("starting Ray %s: %s", role, " ".join(cmd))
    proc = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
    )
    _record(temp_dir, role, proc.pid)  # before waiting: a timed-out start is still stoppable
    try:
        out, _ = proc.communicate(timeout=start_timeout_s)
    except subprocess.TimeoutExpired:
        _kill_groups([proc.pid], grace_s=2.0)
        _forget(temp_dir, proc.pid)
        raise ClusterError(f"`{' '.join(cmd)}` did not finish within {start_timeout_s:.0f} s") from None
    if proc.returncode != 0:
        _kill_groups([proc.pid], grace_s=2.0)
        _forget(temp_dir, proc.pid)
        tail = "\n".join(out.strip().splitlines()[-15:])
        raise ClusterError(f"`ray start` ({role}) failed with exit code {proc.returncode}:\n{tail}")
    if role == "head":
        address = read_address(temp_dir)
        if address is None:
            raise ClusterError(f"head started but wrote no address to {address_file(temp_dir)}")
    else:
        head = str(flags.get("head_address", "127.0.0.1"))
        address = head if ":" in head else f"{head}:{int(flags.get('port', 6379))}"
    log.info("Ray %s running (process group %d), cluster address %s", role, proc.pid, address)
    return NodeInfo(role, proc.pid, address, temp_dir)


# --------------------------------------------------------------------------- stop
def _nodes_dir(temp_dir: str | Path) -> Path:
    return Path(temp_dir) / NODES_SUBDIR


def _record(temp_dir: str, role: str, pgid: int) -> None:
    d = _nodes_dir(temp_dir)
    d.mkdir(parents=True, exist_ok=True)
    (d / f"{role}-{pgid}.json").write_text(json.dumps({"role": role, "pgid": pgid, "time": time.time()}))


def _forget(temp_dir: str, pgid: int) -> None:
    for path in _nodes_dir(temp_dir).glob(f"*-{pgid}.json"):
        path.unlink(missing_ok=True)


def recorded_groups(temp_dir: str | Path) -> list[int]:
    out = []
    for path in sorted(_nodes_dir(temp_dir).glob("*.json")):
        try:
            out.append(int(json.loads(path.read_text())["pgid"]))
        except (OSError, ValueError, KeyError):
            continue
    return out


def _group_members(pgids: Sequence[int]) -> list[Any]:
    """Every live process in those groups, plus their descendants (Ray workers set their own
    process group but are children of the raylet)."""
    import psutil

    wanted = set(pgids)
    members: dict[int, Any] = {}
    for proc in psutil.process_iter():
        try:
            if os.getpgid(proc.pid) in wanted:
                members[proc.pid] = proc
        except (ProcessLookupError, psutil.Error, OSError):
            continue
    for proc in list(members.values()):
        try:
            for child in proc.children(recursive=True):
                members.setdefault(child.pid, child)
        except psutil.Error:
            continue
    members.pop(os.getpid(), None)
    return list(members.values())


def _kill_groups(pgids: Sequence[int], grace_s: float) -> int:
    import psutil

    procs = _group_members(pgids)
    for proc in procs:
        try:
            proc.send_signal(signal.SIGTERM)
        except psutil.Error:
            pass
    _, alive = psutil.wait_procs(procs, timeout=grace_s)
    for proc in alive:
        try:
            proc.kill()
        except psutil.Error:
            pass
    psutil.wait_procs(alive, timeout=2.0)
    return len(procs)


def stop_nodes(temp_dir: str | Path, grace_s: float = 5.0) -> int:
    """Stop the nodes started by :func:`start_node` with this ``temp_dir``; returns the number of
    processes signalled (SIGTERM, then SIGKILL after ``grace_s``)."""
    pgids = recorded_groups(temp_dir)
    count = _kill_groups(pgids, grace_s) if pgids else 0
    for pgid in pgids:
        _forget(str(temp_dir), pgid)
    address_file(temp_dir).unlink(missing_ok=True)
    log.info("stopped %d Ray processes of %d node(s) under %s", count, len(pgids), temp_dir)
    return count


def running_groups(temp_dir: str | Path) -> list[int]:
    return [g for g in recorded_groups(temp_dir) if _group_members([g])]


# --------------------------------------------------------------------------- CLI
def _flags(cfg: Any, role: str) -> dict[str, Any]:
    resources = dict(cfg.resources.get(role) or {}) if cfg.get("resources") else {}
    return dict(
        head_address=str(cfg.head_address),
        port=int(cfg.port),
        node_ip_address=cfg.get("node_ip_address"),
        temp_dir=str(cfg.temp_dir),
        object_store_memory_bytes=cfg.get("object_store_memory_bytes"),
        num_cpus=cfg.get("num_cpus"),
        num_gpus=cfg.get("num_gpus"),
        resources=resources,
        include_dashboard=bool(cfg.get("include_dashboard", False)),
        dashboard_port=cfg.get("dashboard_port"),
        ray_client_server_port=cfg.get("ray_client_server_port"),
        include_log_monitor=cfg.get("include_log_monitor"),
        extra_args=list(cfg.get("extra_args") or []),
    )


def run_role(cfg: Any) -> int:
    """Execute ``cfg.role``; returns a process exit code (prints one result line)."""
    role = str(cfg.role)
    if role not in ROLES:
        print(f"cluster error: role={role!r}; expected one of {ROLES}", file=sys.stderr)
        return 2
    temp_dir = str(cfg.temp_dir)
    if role == "stop":
        n = stop_nodes(temp_dir, grace_s=float(cfg.get("stop_grace_s", 5.0)))
        print(f"stopped {n} Ray processes started with temp_dir={temp_dir}")
        return 0
    if role == "status":
        groups = running_groups(temp_dir)
        print(f"{len(groups)} node(s) running under {temp_dir}; address {read_address(temp_dir) or 'unknown'}")
        return 0 if groups else 1
    try:
        node = start_node(
            role,
            auth_mode=cfg.get("auth_mode"),
            auth_token_path=cfg.get("auth_token_path"),
            start_timeout_s=float(cfg.get("start_timeout_s", 60.0)),
            **_flags(cfg, role),
        )
    except ClusterError as exc:
        print(f"cluster error: {exc}", file=sys.stderr)
        return 1
    print(
        f"Ray {role} started: address {node.address}, auth_mode={cfg.get('auth_mode')}; "
        f"drivers use launcher=ray launcher.address={node.address}"
    )
    return 0


def main() -> None:
    import hydra

    @hydra.main(version_base="1.3", config_path="../conf/cluster", config_name="default")
    def _main(cfg: Any) -> None:
        code = run_role(cfg)
        if code:
            sys.exit(code)

    _main()


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    main()
