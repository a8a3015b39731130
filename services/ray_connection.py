"""The connection to a Ray cluster: address resolution, auth, bounded connect, placement checks.

Used by the application's ``launcher=ray`` (the whole run in an actor), by ``algorithm=rtc_split``
(only the policy in an actor) and by ``python -m inference.cluster`` (starting nodes), so it lives
below all of them. Every wait is bounded and every failure is a ``LaunchError`` naming the address.
"""

from __future__ import annotations

import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from services.errors import ConfigError

log = logging.getLogger(__name__)

AUTH_MODES = ("disabled", "token")


class ClusterError(RuntimeError):
    """A node could not be started or stopped; the message says which command and why."""


DEFAULT_TEMP_DIRS = tuple(dict.fromkeys([os.environ.get("RAY_TMPDIR", "/tmp/ray"), "/tmp/ray"]))


class LaunchError(ConfigError):
    """The run cannot be placed on the cluster (none reachable, no node with the resources).

    A ``ConfigError`` so ``python -m inference`` reports it in one line and exits 2.
    """


def address_problem(address: Any, named: tuple[str, ...] = ("auto",)) -> str | None:
    """Why ``address`` is not a cluster address (one of ``named``, or ``host:port``), or None."""
    text = str(address if address is not None else "")
    if text in named:
        return None
    host, _, port = text.rpartition(":")
    if not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        return f"{text!r}: expected host:port or {' | '.join(named)}"
    return None


def resolve_address(
    address: str, temp_dirs: tuple[str, ...] = DEFAULT_TEMP_DIRS, address_key: str = "launcher.address"
) -> str:
    """``auto`` -> ``RAY_ADDRESS`` or the address file a local head wrote; else ``address``.
    ``address_key``: the config key the address came from, named in the error."""
    if address != "auto":
        return address
    env = os.environ.get("RAY_ADDRESS")
    if env:
        return env
    for temp_dir in temp_dirs:
        found = read_address(temp_dir)
        if found:
            return found
    raise LaunchError(
        f"no Ray cluster reachable: {address_key}=auto found no RAY_ADDRESS and no "
        f"ray_current_cluster file in {', '.join(temp_dirs)}; start one with "
        f"`python -m inference.cluster role=head` or set {address_key}=<host>:<port>"
    )


def wait_for_port(address: str, timeout_s: float, address_key: str = "launcher.address") -> None:
    """Bounded wait until ``host:port`` accepts TCP connections; ``LaunchError`` names the address."""
    host, _, port = address.rpartition(":")
    if not host or not port.isdigit():
        raise LaunchError(f"{address_key}={address!r}: expected host:port or auto")
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while True:
        try:
            with socket.create_connection((host, int(port)), timeout=min(1.0, max(0.1, timeout_s))):
                return
        except OSError as exc:
            last = exc
        if time.monotonic() >= deadline:
            raise LaunchError(
                f"no Ray cluster reachable at {address} within {timeout_s:g} s ({last}); start the head "
                f"with `python -m inference.cluster role=head` (same auth_mode) or fix {address_key}"
            )
        time.sleep(0.2)


def connect(
    address: str,
    namespace: str,
    timeout_s: float,
    auth_mode: str | None,
    auth_token_path: str | None = None,
    log_to_driver: bool = True,
    runtime_env: Mapping[str, Any] | None = None,
    address_key: str = "launcher.address",
) -> str:
    """Connect this process to the cluster (bounded); returns the resolved address. ``address_key``:
    the config key the address came from (``fleet.address``, ``algorithm.address``), named in errors."""
    apply_auth_env(auth_mode, auth_token_path)
    import ray

    resolved = resolve_address(address, address_key=address_key)
    if ray.is_initialized():
        current = ray.get_runtime_context().gcs_address
        if _same_address(current, resolved):
            return resolved
        log.info("disconnecting from the Ray cluster at %s to connect to %s", current, resolved)
        ray.shutdown()
    t0 = time.monotonic()
    wait_for_port(resolved, timeout_s, address_key)
    error: list[BaseException] = []

    def _init() -> None:
        try:
            ray.init(
                address=resolved,
                namespace=namespace,
                log_to_driver=log_to_driver,
                runtime_env=dict(runtime_env) if runtime_env else None,
            )
        except BaseException as exc:  # noqa: BLE001 - reported below
            error.append(exc)

    thread = threading.Thread(target=_init, name="ray-init", daemon=True)
    thread.start()
    thread.join(max(1.0, timeout_s - (time.monotonic() - t0)))
    if thread.is_alive():  # the port answered (wait_for_port), so a cluster is there and refuses us
        token = f" with the token in {auth_token_path}" if auth_mode == "token" and auth_token_path else ""
        raise LaunchError(
            f"a Ray cluster listens at {resolved} but this driver could not join within {timeout_s:g} s. "
            f"Most likely its auth differs: this driver uses auth_mode={auth_mode}{token}; every node and "
            "driver of a cluster needs the same launcher.auth_mode/auth_token_path as "
            "`python -m inference.cluster` was given (Ray logs 'InvalidAuthToken' above when that is it). "
            "Else check that the Ray versions match"
        )
    if error:
        raise LaunchError(f"could not connect to the Ray cluster at {resolved}: {error[0]}") from error[0]
    return resolved


def _same_address(a: str, b: str) -> bool:
    """Same GCS address, treating 127.0.0.1/localhost and the routable IP Ray rewrites them to alike."""
    (ha, _, pa), (hb, _, pb) = a.rpartition(":"), b.rpartition(":")
    if pa != pb:
        return False
    if ha == hb:
        return True
    try:
        return socket.gethostbyname(ha) == socket.gethostbyname(hb) or {ha, hb} & {"127.0.0.1", "localhost"} != set()
    except OSError:
        return False


def describe_nodes(nodes: list[Mapping[str, Any]]) -> str:
    """One line per alive node: address, id prefix and its resources (custom ones first)."""
    lines = []
    for node in nodes:
        if not node.get("Alive", False):
            continue
        res = {k: v for k, v in node.get("Resources", {}).items() if not k.startswith("node:")}
        shown = ", ".join(
            f"{k}={v:g}"
            for k, v in sorted(
                res.items(), key=lambda kv: (kv[0] in ("CPU", "GPU", "memory", "object_store_memory"), kv[0])
            )
            if k not in ("memory", "object_store_memory")
        )
        lines.append(
            f"  {node.get('NodeManagerAddress', '?')} (node {str(node.get('NodeID', '?'))[:8]}): {shown or 'nothing'}"
        )
    return "\n".join(lines) or "  (no alive nodes)"


def nodes_offering(nodes: list[Mapping[str, Any]], demand: Mapping[str, float]) -> list[Mapping[str, Any]]:
    """Alive nodes whose *total* resources cover ``demand``."""
    out = []
    for node in nodes:
        res = node.get("Resources", {})
        if node.get("Alive", False) and all(res.get(k, 0.0) >= v for k, v in demand.items() if v > 0):
            out.append(node)
    return out


def check_resources(demand: Mapping[str, float], address: str) -> None:
    """``LaunchError`` naming what is missing and what every node offers, at once (no waiting)."""
    import ray

    nodes = ray.nodes()
    if not nodes_offering(nodes, demand):
        wanted = ", ".join(f"{k}={v:g}" for k, v in demand.items() if v > 0)
        custom = [k for k in demand if k not in ("CPU", "GPU")]
        hint = (
            (
                f"Start the inference node with resources {{{', '.join(repr(k) + ': 1' for k in custom)}}} "
                "(`python -m inference.cluster role=worker`)."
            )
            if custom
            else ""
        )
        raise LaunchError(
            f"no node of the Ray cluster at {address} offers {wanted}; the nodes are:\n"
            f"{describe_nodes(nodes)}\n{hint}".rstrip()
        )


# --------------------------------------------------------------------------- the actor
# --------------------------------------------------------------------------- auth
def auth_env(auth_mode: str | None, auth_token_path: str | None = None) -> dict[str, str]:
    """The environment variables every Ray process of a cluster must share."""
    env: dict[str, str] = {}
    if auth_mode is None:
        return env
    if auth_mode not in AUTH_MODES:
        raise ClusterError(f"auth_mode={auth_mode!r}; expected one of {AUTH_MODES}")
    env["RAY_AUTH_MODE"] = auth_mode
    if auth_mode == "token" and auth_token_path:
        env["RAY_AUTH_TOKEN_PATH"] = str(Path(auth_token_path).expanduser())
    return env


def apply_auth_env(auth_mode: str | None, auth_token_path: str | None = None) -> None:
    """Set the auth variables in this process (before ``ray.init``); refreshes Ray's cached config
    when ``ray`` was already imported with another mode."""
    env = auth_env(auth_mode, auth_token_path)
    changed = any(os.environ.get(k) != v for k, v in env.items())
    os.environ.update(env)
    if changed and "ray" in sys.modules:
        try:
            from ray._raylet import AuthenticationTokenLoader, Config

            Config.initialize("")
            AuthenticationTokenLoader.instance().reset_cache()
        except Exception:  # pragma: no cover - private API; the env var alone works for new processes
            log.debug("could not refresh Ray's auth config", exc_info=True)


def address_file(temp_dir: str | Path) -> Path:
    """Where Ray writes the GCS address of the cluster whose head uses ``temp_dir``."""
    return Path(temp_dir) / "ray_current_cluster"


def read_address(temp_dir: str | Path) -> str | None:
    path = address_file(temp_dir)
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return text or None


@dataclass
class RayTarget:
    """Where a Ray actor of ours goes: the cluster (address, namespace, auth) and what the actor
    asks of its node. Shared by ``launcher=ray`` (the whole run) and ``algorithm=rtc_split`` (the
    policy only), whose configs carry these keys flat."""

    address: str = "auto"
    namespace: str = "inference"
    auth_mode: str | None = "disabled"
    auth_token_path: str | None = None
    resources: dict[str, float] = field(default_factory=lambda: {"inference_pc": 1.0})
    num_cpus: float = 1.0
    num_gpus: float = 0.0
    connect_timeout_s: float = 15.0

    def __post_init__(self) -> None:
        self.resources = dict(self.resources if self.resources is not None else {"inference_pc": 1.0})
        self.num_cpus, self.num_gpus = float(self.num_cpus), float(self.num_gpus)
        self.connect_timeout_s = float(self.connect_timeout_s)

    @property
    def demand(self) -> dict[str, float]:
        """The actor's resource request, CPUs and GPUs included (for the placement check)."""
        out = dict(self.resources)
        if self.num_cpus > 0:
            out["CPU"] = self.num_cpus
        if self.num_gpus > 0:
            out["GPU"] = self.num_gpus
        return out

    def actor_options(self) -> dict[str, Any]:
        return {"resources": self.resources or None, "num_cpus": self.num_cpus, "num_gpus": self.num_gpus}

    def connect(self, log_to_driver: bool = True, runtime_env: Mapping[str, Any] | None = None) -> str:
        return connect(
            self.address,
            self.namespace,
            self.connect_timeout_s,
            self.auth_mode,
            self.auth_token_path,
            log_to_driver,
            runtime_env,
        )
