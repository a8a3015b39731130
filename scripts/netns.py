"""Run a command in a private network namespace whose only interface is loopback.

    python scripts/netns.py [--mode auto|off|require] [--watch] -- CMD [ARGS...]

Tests and benchmarks may only talk to loopback. Configuration alone does not guarantee it (Ray 2.60
advertises the machine's routable address even with ``--node-ip-address=127.0.0.1``; one DDS
profile without the loopback restriction undoes it), so the test command and the benchmarks that
start servers run inside a fresh network namespace with nothing but ``lo``: there, no non-loopback
address exists to listen on or to reach, and Ray reports "Local node IP: 127.0.0.1".

How the namespace is made, first that works: ``unshare(CLONE_NEWNET)`` (root, as in CI), else
``unshare(CLONE_NEWUSER | CLONE_NEWNET)`` with the caller's uid/gid mapped to themselves (an
unprivileged user where user namespaces are allowed; like ``unshare -rn``, but the command keeps
its own uid instead of appearing as root). Then ``lo`` is brought up, the host gets the name
``localhost`` in a UTS namespace where its own name resolves to a LAN address
(:func:`_hostname_to_loopback`), and CMD is executed. Where neither works, or with ``--mode off``
(``make test NETNS=off``), CMD runs on the host network; with ``--mode require`` (CI:
``.ci/run``) it does not run at all (exit 2). The first line printed says which, and CMD's
environment carries ``RT_NETNS=private|host`` and ``RT_NETNS_REASON`` so a test can check the claim.

Nothing in the namespace can reach the package registry: build every venv first (``make test-envs``).
The file system, /dev/shm, /tmp and the process tree are shared with the host.

``--watch`` keeps this process as CMD's parent and samples, once a second (``WATCH_PERIOD_S``),
every socket of the run: all sockets of the namespace, or on the host network those of processes
carrying this run's ``RT_NETNS_RUN`` marker in their environment. A socket connected to, or
listening on, an address reachable off loopback is printed and appended to the file named by
``RT_NETNS_WATCH`` (``tests/scripts/test_loopback_only.py`` reads it). In a private namespace, where none
can exist unless the namespace gained an interface, that makes the exit status non-zero even when
CMD succeeded; on the host network, where e.g. Ray listens on every interface, it is reported only,
so a run without a namespace is not failed for what it cannot prevent. A socket that lives less than a sample period may
go unseen; in the namespace it cannot leave loopback either.

Benchmarks call :func:`reexec_in_netns` first thing: started outside, they re-run themselves
through this script; started by it, they continue.
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import fcntl
import ipaddress
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

ENV_STATE = "RT_NETNS"  # "private" or "host", set for CMD
ENV_REASON = "RT_NETNS_REASON"  # how the namespace was made, or why there is none
ENV_RUN = "RT_NETNS_RUN"  # marks every process of one run (the environment is inherited)
ENV_WATCH = "RT_NETNS_WATCH"  # file the watcher appends violations to
ENV_MODE = "NETNS"  # auto (default) | off | require
MODES = ("auto", "off", "require")

CLONE_NEWNET = 0x40000000
CLONE_NEWUSER = 0x10000000
CLONE_NEWUTS = 0x04000000
SIOCGIFFLAGS, SIOCSIFFLAGS, IFF_UP = 0x8913, 0x8914, 0x1
WATCH_PERIOD_S = 1.0  # one sample costs ~7 ms here (/proc/net is slow to read; ~10+ ms on the host network)


class NetnsUnavailable(OSError):
    """No private network namespace can be made here; the message says why."""


# --------------------------------------------------------------------------- entering
def _unshare(flags: int) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def _map_ids_to_themselves(uid: int, gid: int) -> None:
    """Inside a new user namespace: map our own uid and gid (the only mapping an unprivileged
    process may write; ``setgroups`` must be denied before ``gid_map``)."""
    Path("/proc/self/setgroups").write_text("deny")
    Path("/proc/self/uid_map").write_text(f"{uid} {uid} 1")
    Path("/proc/self/gid_map").write_text(f"{gid} {gid} 1")


def _bring_up_loopback() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(s.fileno(), SIOCGIFFLAGS, req))[1]
        fcntl.ioctl(s.fileno(), SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))


def interfaces() -> list[str]:
    """Names of the network interfaces of this process's namespace."""
    return sorted(name for _, name in socket.if_nameindex())


def non_loopback_interfaces() -> list[str]:
    return [name for name in interfaces() if name != "lo"]


def enter_private_netns() -> str:
    """Move this (single-threaded) process into a new network namespace with only ``lo``, up.

    Returns how it was made; raises ``NetnsUnavailable`` naming each attempt's error."""
    uid, gid = os.getuid(), os.getgid()
    errors = []
    for label, flags in (
        ("unshare(CLONE_NEWNET)", CLONE_NEWNET),
        ("unshare(CLONE_NEWUSER|CLONE_NEWNET), uid/gid mapped to themselves", CLONE_NEWUSER | CLONE_NEWNET),
    ):
        try:
            _unshare(flags)
        except OSError as exc:
            errors.append(f"{label}: {exc.strerror}")
            continue
        if flags & CLONE_NEWUSER:
            _map_ids_to_themselves(uid, gid)
        _bring_up_loopback()
        extra = non_loopback_interfaces()
        if extra:  # cannot happen with a fresh namespace; never claim one that is not
            raise NetnsUnavailable(errno.EEXIST, f"new namespace has non-loopback interfaces {extra}")
        return f"{label} as uid {uid}" + _hostname_to_loopback()
    raise NetnsUnavailable(errno.EPERM, "; ".join(errors))


def _hostname_to_loopback() -> str:
    """Make this machine's name resolve to loopback inside the namespace.

    Ray 2.60 takes the address its host name resolves to when it cannot find a routable one (here:
    none exists), whatever ``--node-ip-address`` says; where the name maps to a LAN address in
    /etc/hosts, that address does not exist in the namespace and ``ray start`` hangs connecting to
    its own GCS. Then a UTS namespace of our own gets the host name ``localhost``. Returns what was
    done, for the status line (nothing where the name already resolves to loopback)."""
    name = socket.gethostname()
    try:
        if parse_ip(socket.gethostbyname(name)).is_loopback:
            return ""
        why = f"{name} resolves to {socket.gethostbyname(name)}"
    except OSError as exc:
        why = f"{name} does not resolve ({exc})"
    _unshare(CLONE_NEWUTS)
    socket.sethostname("localhost")
    return f"; host name localhost in a UTS namespace ({why})"


# --------------------------------------------------------------------------- sockets of the run
@dataclass(frozen=True)
class SocketUse:
    pid: int | None
    kind: str  # tcp / udp
    local: tuple[str, int]  # (ip, port)
    remote: tuple[str, int] | None  # None: not connected
    status: str

    def __str__(self) -> str:
        peer = f" -> {_address(self.remote)}" if self.remote else ""
        return f"{self.kind} {_address(self.local)}{peer} {self.status} (pid {self.pid or '?'})"


def _address(ip_port: tuple[str, int]) -> str:
    """``ip:port``, with an IPv6 address in brackets."""
    ip, port = ip_port
    return f"[{ip}]:{port}" if ":" in ip else f"{ip}:{port}"


def parse_ip(addr: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address:
    """An address as psutil reports it (IPv4-mapped IPv6 counts as the IPv4 address)."""
    ip = ipaddress.ip_address(addr.split("%")[0])
    return ip.ipv4_mapped if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped else ip


def off_loopback(use: SocketUse, wildcard_reachable: bool) -> str | None:
    """Why ``use`` reaches beyond loopback, or None. A wildcard bind (0.0.0.0 / ::) is off loopback
    only where the namespace has another interface than ``lo`` (``wildcard_reachable``)."""
    if use.remote and not parse_ip(use.remote[0]).is_loopback:
        return "connects to a non-loopback address"
    local = parse_ip(use.local[0])
    if local.is_unspecified:
        return "listens on every interface" if wildcard_reachable and not use.remote else None
    if not local.is_loopback:
        return "bound to a non-loopback address"
    return None


def run_pids(run_id: str) -> set[int]:
    """Processes whose environment carries ``RT_NETNS_RUN=run_id`` (readable ones)."""
    import psutil

    marker = f"{ENV_RUN}={run_id}".encode()
    pids = set()
    for pid in psutil.pids():
        try:
            if marker in Path(f"/proc/{pid}/environ").read_bytes().split(b"\0"):
                pids.add(pid)
        except OSError:
            continue
    return pids


TCP_STATES = {
    "01": "ESTABLISHED",
    "02": "SYN_SENT",
    "03": "SYN_RECV",
    "04": "FIN_WAIT1",
    "05": "FIN_WAIT2",
    "06": "TIME_WAIT",
    "07": "CLOSE",
    "08": "CLOSE_WAIT",
    "09": "LAST_ACK",
    "0A": "LISTEN",
    "0B": "CLOSING",
}


def _proc_net_address(field: str) -> tuple[str, int]:
    """``0100007F:1F90`` (IPv4) or 32 hex digits + port (IPv6), each 32-bit word in host byte order."""
    hexip, hexport = field.split(":")
    raw = b"".join(struct.pack("=I", int(hexip[i : i + 8], 16)) for i in range(0, len(hexip), 8))
    return socket.inet_ntop(socket.AF_INET if len(raw) == 4 else socket.AF_INET6, raw), int(hexport, 16)


def namespace_socket_uses() -> list[SocketUse]:
    """Every inet socket of this network namespace, from ``/proc/net`` (no owner: a fraction of a
    millisecond, where attributing owners means reading every process's file descriptors)."""
    out = []
    for kind, name in (("tcp", "tcp"), ("tcp", "tcp6"), ("udp", "udp"), ("udp", "udp6")):
        try:
            lines = Path(f"/proc/net/{name}").read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            local, remote = _proc_net_address(fields[1]), _proc_net_address(fields[2])
            connected = remote[1] != 0 or not parse_ip(remote[0]).is_unspecified
            status = TCP_STATES.get(fields[3], fields[3]) if kind == "tcp" else "NONE"
            out.append(SocketUse(None, kind, local, remote if connected else None, status))
    return out


def socket_uses(pids: set[int] | None = None) -> list[SocketUse]:
    """Inet sockets of the processes ``pids`` (psutil), or with None every one of this namespace."""
    if pids is None:
        return namespace_socket_uses()
    import psutil

    out = []
    for c in psutil.net_connections(kind="inet"):
        if c.pid not in pids or not c.laddr:
            continue
        kind = "tcp" if c.type == socket.SOCK_STREAM else "udp"
        out.append(
            SocketUse(
                c.pid, kind, (c.laddr.ip, c.laddr.port), (c.raddr.ip, c.raddr.port) if c.raddr else None, c.status
            )
        )
    return out


def violations(pids: set[int] | None) -> list[str]:
    """Sockets that reach beyond loopback, as lines: of the processes ``pids``, or with ``None`` every
    socket of this namespace (in a private one, every socket there belongs to the run)."""
    reachable = bool(non_loopback_interfaces())
    lines = []
    for use in socket_uses(pids):
        why = off_loopback(use, reachable)
        if why:
            lines.append(f"{why}: {use}")
    return lines


def watch(proc: subprocess.Popen, run_id: str | None, log: Path, period_s: float) -> int:
    """Sample the run's sockets until ``proc`` exits (``run_id`` None: every socket of this private
    namespace; else those of the processes carrying the marker); returns the number of distinct
    violations."""
    seen: set[str] = set()
    while True:
        done = proc.poll() is not None
        try:
            found = violations(None if run_id is None else run_pids(run_id))
        except Exception as exc:  # noqa: BLE001 - a failed sample is reported, never silently skipped
            found = [f"socket sample failed: {type(exc).__name__}: {exc}"]
        new = [line for line in found if line not in seen]
        if new:
            seen.update(new)
            with log.open("a") as f:
                f.writelines(line + "\n" for line in new)
            for line in new:
                print(f"netns watch: {line}", file=sys.stderr, flush=True)
        if done:
            return len(seen)
        time.sleep(period_s)


# --------------------------------------------------------------------------- command line
def status_line(state: str, reason: str, what: str) -> str:
    if state == "private":
        return f"netns: {what} runs in a private network namespace, loopback only ({reason})"
    return f"netns: {what} runs on the host network, NOT in a private namespace ({reason})"


def prepare(mode: str) -> tuple[str, str]:
    """Enter a namespace unless ``mode`` is off or it is impossible; returns (state, reason)."""
    if os.environ.get(ENV_STATE) == "private" and not non_loopback_interfaces():
        return "private", os.environ.get(ENV_REASON, "inherited")
    if mode == "off":
        return "host", f"{ENV_MODE}=off was asked"
    try:
        return "private", enter_private_netns()
    except OSError as exc:
        return "host", f"no namespace can be made here: {exc.strerror or exc}"


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument(
        "--mode",
        default=os.environ.get(ENV_MODE) or "auto",
        help="auto: a private namespace where possible, else the host network; off: the host network; "
        f"require: a private namespace or nothing (default: ${ENV_MODE} or auto)",
    )
    ap.add_argument(
        "--watch",
        action="store_true",
        help="sample the run's sockets while CMD runs; one off loopback fails the run in a namespace "
        "and is listed on the host network",
    )
    ap.add_argument("--what", default=None, help="what to name in the first line (default: the command)")
    ap.add_argument("cmd", nargs=argparse.REMAINDER)
    args = ap.parse_args(argv)
    cmd = args.cmd[1:] if args.cmd[:1] == ["--"] else args.cmd
    if not cmd:
        ap.error("no command given (python scripts/netns.py -- CMD ...)")
    if args.mode not in MODES:
        ap.error(f"{ENV_MODE}={args.mode!r}; expected one of {', '.join(MODES)}")
    state, reason = prepare(args.mode)
    print(status_line(state, reason, args.what or Path(cmd[0]).name), flush=True)
    if state != "private" and args.mode == "require":
        print(f"netns: {ENV_MODE}=require: not running it", flush=True)
        return 2
    run_id = os.environ.get(ENV_RUN) or uuid.uuid4().hex
    env = {**os.environ, ENV_STATE: state, ENV_REASON: reason, ENV_RUN: run_id}
    if not args.watch:
        os.execvpe(cmd[0], cmd, env)
    fd, log_path = tempfile.mkstemp(prefix="netns-watch-", suffix=".log")
    os.close(fd)
    env[ENV_WATCH] = log_path
    proc = subprocess.Popen(cmd, env=env)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the terminal's Ctrl-C reaches CMD itself
    signal.signal(signal.SIGTERM, lambda signum, _: proc.send_signal(signum))
    count = watch(proc, None if state == "private" else run_id, Path(log_path), WATCH_PERIOD_S)
    code = proc.wait()
    code = 128 - code if code < 0 else code
    if count:
        print(f"netns: {count} socket(s) of this run reached beyond loopback (listed in {log_path})", flush=True)
        if state == "private":
            return code or 1
        print("netns: on the host network that is reported, not failed", flush=True)
        return code
    os.unlink(log_path)
    return code


def network_of_this_run() -> str:
    """Where this process runs, for a benchmark's results file."""
    if os.environ.get(ENV_STATE) == "private":
        return "a private network namespace (loopback only)"
    return f"the host network ({os.environ.get(ENV_REASON) or 'not started through scripts/netns.py'})"


def reexec_in_netns(what: str | None = None) -> None:
    """Called first thing by a benchmark: if this process was not started by this script, run the
    same command line again through it (exec, so this process is replaced); else return."""
    if os.environ.get(ENV_STATE):
        return
    argv = [sys.executable, *sys.orig_argv[1:]]
    here = str(Path(__file__).resolve())
    os.execv(sys.executable, [sys.executable, here, "--what", what or Path(sys.argv[0]).name, "--", *argv])


if __name__ == "__main__":
    sys.exit(main())
