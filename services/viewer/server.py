"""Rerun's web viewer, served from the installed wheel: ``rerun --serve-web`` in a process of its own.

That one process is both the gRPC proxy the sink logs to and the HTTP server of the web viewer
(the wasm app shipped in the ``rerun-sdk`` wheel); both listen on ``bind`` only: 127.0.0.1 unless
told otherwise (``rerun.serve_web_viewer`` of the Python SDK has no bind address and listens on
every interface, so it is not used). It buffers up to ``memory_limit`` of the stream for browsers
that connect late and drops the oldest data beyond that; a browser that reads slowly is the
server's business, never the run's. Rerun's usage analytics are turned off for the processes
started here (a config of their own in a private directory).
"""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import os
import re
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from urllib.parse import quote

from services.devproc import exit_cause

log = logging.getLogger(__name__)

LOOPBACK = ("127.0.0.1", "localhost", "::1")
ANY = ("0.0.0.0", "::", "")


# ``rerun --server-memory-limit``: a byte size with one of these units, or a share of RAM in percent
MEMORY_UNITS = ("B", "kB", "KiB", "MB", "MiB", "GB", "GiB", "TB", "TiB")
_MEMORY_LIMIT = re.compile(r"^(?:0|\d+(?:\.\d+)?\s?(?:" + "|".join(MEMORY_UNITS) + r")|(?P<pct>\d+(?:\.\d+)?)%)$")


def bind_problem(bind: str) -> str | None:
    """Why ``rerun --serve-web --bind <bind>`` would exit at start, or None: it takes an IP address
    only (not a host name), one this machine has (a socket binds it)."""
    try:
        address = ipaddress.ip_address(str(bind))
    except ValueError:
        return f"{bind!r} is not an IP address (rerun binds an address, e.g. 127.0.0.1 or 0.0.0.0; not a host name)"
    family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
    try:
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.bind((str(address), 0))
    except OSError as exc:
        return f"{bind} cannot be bound on this machine ({exc.strerror or exc})"
    return None


def memory_limit_problem(limit: str) -> str | None:
    """Why rerun would refuse ``--server-memory-limit <limit>``, or None."""
    found = _MEMORY_LIMIT.match(str(limit))
    if found is None:
        return (
            f"{limit!r} is not a size: a number with one of {', '.join(MEMORY_UNITS)} (e.g. 1GiB, 500MB), "
            "or a share of RAM such as 25%"
        )
    if found.group("pct") is not None and float(found.group("pct")) > 100:
        return f"{limit!r}: a share of RAM is at most 100%"
    return None


def rerun_binary() -> str:
    """The ``rerun`` executable of the installed ``rerun-sdk`` wheel."""
    import importlib.util

    spec = importlib.util.find_spec("rerun_cli")
    if spec is not None and spec.origin:
        path = Path(spec.origin).parent / "rerun"
        if path.is_file():
            return str(path)
    found = shutil.which("rerun")
    if found is None:
        raise FileNotFoundError("the rerun executable (pip install rerun-sdk) was not found")
    return found


def analytics_off_env(base: dict[str, str] | None = None) -> tuple[dict[str, str], str]:
    """An environment whose Rerun config (``$XDG_CONFIG_HOME/rerun/analytics.json``) says analytics
    off, in a fresh directory (returned, for removal); the user's own config is left alone."""
    home = tempfile.mkdtemp(prefix="rerun-cfg-")
    config = Path(home) / "config" / "rerun"
    config.mkdir(parents=True)
    data = Path(home) / "data"
    (config / "analytics.json").write_text(
        json.dumps(
            {
                "analytics_enabled": False,
                "analytics_id": "0" * 32,
                "metadata": {},
                "config_file_path": str(config / "analytics.json"),
                "data_dir_path": str(data / "rerun" / "analytics"),
            }
        )
    )
    env = dict(os.environ if base is None else base)
    env.update(XDG_CONFIG_HOME=str(Path(home) / "config"), XDG_DATA_HOME=str(data))
    return env, home


def free_port(bind: str, wanted: int) -> int:
    """``wanted`` if it can be bound on ``bind``, else (or for 0) one the OS picks."""
    family = socket.AF_INET6 if ":" in bind else socket.AF_INET
    for port in (wanted, 0) if wanted else (0,):
        with socket.socket(family, socket.SOCK_STREAM) as s:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                s.bind((bind, port))
            except OSError as exc:
                if exc.errno != errno.EADDRINUSE:
                    raise
                log.warning("viewer: port %d on %s is taken; using a free one", wanted, bind)
                continue
            return int(s.getsockname()[1])
    raise OSError(f"no free port on {bind}")


def public_host(bind: str) -> str:
    """The host name a browser uses for a server bound to ``bind``."""
    if bind in ANY:
        return socket.getfqdn()
    return "127.0.0.1" if bind == "localhost" else bind


class WebViewerServer:
    """``rerun --serve-web --bind <bind>``: the gRPC proxy (``grpc_url``) and the web viewer (``url``)."""

    def __init__(
        self,
        bind: str = "127.0.0.1",
        web_port: int = 9090,
        grpc_port: int = 9876,
        memory_limit: str = "1GiB",
        log_path: Path | None = None,
        start_timeout_s: float = 30.0,
    ) -> None:
        self.bind = bind
        self.web_port = free_port(bind, web_port)
        self.grpc_port = free_port(bind, grpc_port)
        host = public_host(bind)
        self.grpc_url = f"rerun+http://{host}:{self.grpc_port}/proxy"  # for browsers
        local = "127.0.0.1" if bind in ANY else host
        self.local_grpc_url = f"rerun+http://{local}:{self.grpc_port}/proxy"  # for the logging sink
        self.url = f"http://{host}:{self.web_port}/?url={quote(self.grpc_url, safe='')}"
        cmd = [
            rerun_binary(),
            "--serve-web",
            "--bind",
            bind,
            "--port",
            str(self.grpc_port),
            "--web-viewer-port",
            str(self.web_port),
            "--server-memory-limit",
            memory_limit,
        ]
        if bind not in LOOPBACK:  # the page's origin, so the browser may call the gRPC server
            cmd += ["--cors-allow-origin", f"http://{host}:{self.web_port}"]
        env, self._config_home = analytics_off_env()
        out = open(log_path, "ab") if log_path is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(cmd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if out is not subprocess.DEVNULL:
                out.close()
        self._wait_listening(start_timeout_s)

    def _wait_listening(self, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        connect_to = "127.0.0.1" if self.bind in ANY else self.bind
        pending = {self.grpc_port, self.web_port}
        while pending:
            if self.proc.poll() is not None:
                raise RuntimeError(f"rerun web viewer server failed at start: {exit_cause(self.proc.returncode)}")
            for port in list(pending):
                try:
                    socket.create_connection((connect_to, port), timeout=0.5).close()
                    pending.discard(port)
                except OSError:
                    pass
            if pending and time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"rerun web viewer server not listening on {sorted(pending)} within {timeout_s} s")
            if pending:
                time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self._config_home, ignore_errors=True)
