"""``launcher=ray``: run the whole run (robot I/O, control loop, policy) in a Ray actor placed on the
node that advertises ``inference_pc`` (a head on the robot PC, a GPU worker).

The driver (``python -m inference launcher=ray``) connects to an existing cluster, checks that
some node offers the requested resources, creates one actor per run, and calls ``run.execute()``
in it with a run dir *on the worker*. While the run goes on, the driver polls the actor for what
was appended to the files of that dir (ticks.csv, inferences.csv, events.jsonl, summary.json,
config_resolved.yaml, actor.log, anything else a sink writes) and appends it to the same files
under its own Hydra run dir; the actor's stdout/stderr (live status line, log records) are
streamed to the console by Ray. Ctrl-C / SIGTERM in the driver interrupts the run inside the actor
(the algorithm's own Ctrl-C path: robot held, files flushed, shared memory unlinked), copies the
last bytes, then kills the actor.

Every wait is bounded: no cluster (``connect_timeout_s``, the message names the address), no node
with the resources (immediate, the message lists each node and its resources), resources present
but busy (``placement_timeout_s``).

For *split* mode (control loop here, only inference on ``inference_pc``) use
``algorithm=rtc_split`` with the default ``launcher=local`` instead: see ``algorithms/rtc_split``.
"""

from __future__ import annotations

import copy
import ctypes
import logging
import os
import shutil
import socket
import tempfile
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from services import logs
from services.knobs import NonNegativeFloat, PositiveFloat
from services.ray_connection import (  # noqa: F401 - re-exported for the launcher's users
    DEFAULT_TEMP_DIRS,
    LaunchError,
    RayTarget,
    check_resources,
    connect,
    describe_nodes,
    nodes_offering,
    resolve_address,
)

log = logging.getLogger(__name__)

MAX_POLL_BYTES = 8 << 20  # per file per poll: bounds one message, the rest comes next poll


class RunActor:
    """Holds one run on the worker. ``execute`` runs in its own actor thread; ``read_new``/``stop``
    run concurrently (concurrency group ``io``)."""

    def __init__(self) -> None:
        self._thread_id: int | None = None
        self.run_dir: Path | None = None
        self._log_handler: logging.Handler | None = None

    def ready(self) -> dict[str, Any]:
        import ray

        ctx = ray.get_runtime_context()
        return {
            "node_id": ctx.get_node_id(),
            "pid": os.getpid(),
            "host": socket.gethostname(),
            "resources": ctx.get_assigned_resources(),
        }

    def prepare(self, remote_run_dir: str | None, name: str) -> str:
        base = Path(remote_run_dir) if remote_run_dir else Path(tempfile.gettempdir()) / "inference-runs"
        self.run_dir = base / f"{name}-{uuid.uuid4().hex[:8]}"
        self.run_dir.mkdir(parents=True, exist_ok=True)
        handler = logging.FileHandler(self.run_dir / "actor.log")
        handler.setFormatter(logging.Formatter("[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"))
        root = logging.getLogger()
        root.addHandler(handler)
        if root.level > logging.INFO or root.level == logging.NOTSET:
            root.setLevel(logging.INFO)
        self._log_handler = handler
        return str(self.run_dir)

    def execute(self, run: Any) -> dict[str, Any]:
        """``run.execute()`` with the run dir moved to this node."""
        from robots import gl

        gl.select_backend()  # MUJOCO_GL before anything imports mujoco

        assert self.run_dir is not None, "prepare() first"
        local = copy.copy(run)
        local.run_dir = self.run_dir
        # log_level is the console's level; actor.log, the run's log file here, keeps INFO and up
        logs.configure(logging.getLevelNamesMapping()[str(local.cfg.get("log_level", "WARNING"))])
        self._thread_id = threading.get_ident()
        try:
            return local.execute()
        finally:
            self._thread_id = None
            if self._log_handler is not None:
                self._log_handler.flush()

    def stop(self) -> bool:
        """Raise ``KeyboardInterrupt`` in the thread running ``execute`` (the algorithm's Ctrl-C path)."""
        ident = self._thread_id
        if ident is None:
            return False
        n = ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(ident), ctypes.py_object(KeyboardInterrupt))
        return n == 1

    def read_new(self, offsets: dict[str, int]) -> dict[str, tuple[int, bytes]]:
        """Bytes appended to each file of the run dir since ``offsets[path]``.

        Returns ``{relative path: (offset the bytes start at, bytes)}``; a file that shrank
        (rewritten) is sent again from 0.
        """
        out: dict[str, tuple[int, bytes]] = {}
        if self.run_dir is None:
            return out
        for path in sorted(self.run_dir.rglob("*")):
            if not path.is_file():
                continue
            rel = str(path.relative_to(self.run_dir))
            try:
                size = path.stat().st_size
                start = offsets.get(rel, 0)
                if size < start:
                    start = 0
                if size == start and rel in offsets:
                    continue
                with path.open("rb") as f:
                    f.seek(start)
                    data = f.read(min(size - start, MAX_POLL_BYTES))
            except OSError:
                continue
            out[rel] = (start, data)
        return out

    def cleanup(self, keep: bool) -> None:
        if self._log_handler is not None:
            logging.getLogger().removeHandler(self._log_handler)
            self._log_handler.close()
            self._log_handler = None
        if not keep and self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)


class FileMirror:
    """Applies ``RunActor.read_new`` results under the driver's run dir."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self.offsets: dict[str, int] = {}

    def apply(self, chunks: Mapping[str, tuple[int, bytes]]) -> int:
        written = 0
        for rel, (start, data) in chunks.items():
            dst = self.root / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            mode = "r+b" if start > 0 and dst.exists() else "wb"
            with dst.open(mode) as f:
                f.seek(start)
                f.write(data)
                f.truncate()
            self.offsets[rel] = start + len(data)
            written += len(data)
        return written


# --------------------------------------------------------------------------- the launcher
class RayLauncher:
    """Places the run's actor on the node offering ``resources`` and mirrors its run dir here.

    ``address``: ``auto`` (``RAY_ADDRESS`` or a local head's address file) or ``host:port``.
    ``auth_mode`` must be the cluster's (``conf/cluster``): set as ``RAY_AUTH_MODE`` before connecting.
    ``remote_run_dir``: where the actor's run dir lives on the worker (null: the worker's temp dir);
    removed after the files arrived unless ``keep_remote_run_dir``.
    """

    @classmethod
    def preflight(cls, node: Mapping[str, Any], path: str) -> None:
        """Start-time check: token auth names a token file this driver can read."""
        from services.errors import ConfigError
        from services.ray_connection import address_problem

        token = node.get("auth_token_path")
        if node.get("auth_mode") == "token" and token and not Path(str(token)).expanduser().is_file():
            raise ConfigError(f"{path}.auth_token_path: token file {token} does not exist (auth_mode token)")
        why = address_problem(node.get("address", "auto"))
        if why:
            raise ConfigError(f"{path}.address: {why}")
        if not str(node.get("namespace", "inference")).strip():
            raise ConfigError(f"{path}.namespace: empty (Ray needs a namespace name)")

    def __init__(
        self,
        address: str = "auto",
        namespace: str = "inference",
        auth_mode: Literal["disabled", "token"] | None = "disabled",
        auth_token_path: str | None = None,
        resources: dict[str, float] | None = None,
        num_cpus: NonNegativeFloat = 1.0,
        num_gpus: NonNegativeFloat = 0.0,
        connect_timeout_s: PositiveFloat = 15.0,
        placement_timeout_s: PositiveFloat = 30.0,
        poll_interval_s: PositiveFloat = 0.5,
        stop_timeout_s: PositiveFloat = 10.0,
        remote_run_dir: str | None = None,
        keep_remote_run_dir: bool = False,
        log_to_driver: bool = True,
        runtime_env: dict | None = None,
    ) -> None:
        self.target = RayTarget(
            address, namespace, auth_mode, auth_token_path, resources, num_cpus, num_gpus, connect_timeout_s
        )
        self.placement_timeout_s = float(placement_timeout_s)
        self.poll_interval_s = float(poll_interval_s)
        self.stop_timeout_s = float(stop_timeout_s)
        self.remote_run_dir = remote_run_dir
        self.keep_remote_run_dir = keep_remote_run_dir
        self.log_to_driver = log_to_driver
        self.runtime_env = runtime_env
        self.placement: dict[str, Any] = {}
        self.remote_dir: str | None = None

    def connect(self) -> str:
        return self.target.connect(self.log_to_driver, self.runtime_env)

    def create_actor(self, address: str) -> Any:
        """The run's actor, placed and alive (bounded), with ``self.placement`` filled in."""
        import ray

        check_resources(self.target.demand, address)
        actor = (
            ray.remote(concurrency_groups={"io": 2})(RunActor)
            .options(**self.target.actor_options(), max_restarts=0, name=f"run-{uuid.uuid4().hex[:8]}")
            .remote()
        )
        try:
            self.placement = ray.get(actor.ready.remote(), timeout=self.placement_timeout_s)
        except ray.exceptions.GetTimeoutError:
            ray.kill(actor, no_restart=True)
            raise LaunchError(
                f"the run's actor was not placed within {self.placement_timeout_s:g} s: every node offering "
                f"{self.target.demand} is busy (another run?). Nodes:\n{describe_nodes(ray.nodes())}"
            ) from None
        log.info(
            "run actor placed on node %s (%s, pid %s)",
            str(self.placement["node_id"])[:8],
            self.placement["host"],
            self.placement["pid"],
        )
        return actor

    def launch(self, run: Any) -> dict[str, Any]:
        import ray

        address = self.connect()
        actor = self.create_actor(address)
        mirror = FileMirror(run.run_dir)
        finished = False
        ref = None
        try:
            self.remote_dir = ray.get(
                actor.prepare.remote(self.remote_run_dir, Path(run.run_dir).name), timeout=self.placement_timeout_s
            )
            log.info("run executing in Ray actor; its run dir %s is mirrored into %s", self.remote_dir, run.run_dir)
            ref = actor.execute.remote(run)
            while True:
                done, _ = ray.wait([ref], timeout=self.poll_interval_s)
                mirror.apply(ray.get(_io(actor.read_new).remote(mirror.offsets)))
                if done:
                    break
            summary = _get_unwrapped(ref)
            finished = True
            return summary
        except ray.exceptions.RayActorError as exc:
            from services.errors import AlgorithmFault

            raise AlgorithmFault(
                f"the run's Ray actor died (node {str(self.placement.get('node_id'))[:8]}): {exc}"
            ) from None
        except KeyboardInterrupt:
            log.warning("interrupted: stopping the run in the actor (bounded %.0f s)", self.stop_timeout_s)
            if ref is not None:
                self._stop(actor, ref)
            raise
        finally:
            self._drain(actor, mirror)
            try:
                ray.get(actor.cleanup.remote(self.keep_remote_run_dir or not finished), timeout=5.0)
            except Exception:  # noqa: BLE001 - the actor may be gone already
                pass
            ray.kill(actor, no_restart=True)

    def _stop(self, actor: Any, ref: Any) -> None:
        import ray

        try:
            ray.get(_io(actor.stop).remote(), timeout=5.0)
            ray.wait([ref], timeout=self.stop_timeout_s)
        except Exception:  # noqa: BLE001
            log.exception("could not stop the run in the actor gracefully; killing it")

    def _drain(self, actor: Any, mirror: FileMirror) -> None:
        import ray

        for _ in range(64):  # large files arrive MAX_POLL_BYTES per poll
            try:
                if not mirror.apply(ray.get(_io(actor.read_new).remote(mirror.offsets), timeout=10.0)):
                    return
            except Exception:  # noqa: BLE001 - actor died: what arrived is all there is
                log.warning("could not fetch the last telemetry bytes from the actor", exc_info=True)
                return


def _io(method: Any) -> Any:
    """The method, called in the actor's ``io`` concurrency group (beside a running ``execute``)."""
    return method.options(concurrency_group="io")


def _get_unwrapped(ref: Any) -> Any:
    """``ray.get`` that re-raises the run's own exception type (AlgorithmFault, ConfigError...)."""
    import ray

    try:
        return ray.get(ref)
    except ray.exceptions.RayTaskError as exc:
        cause = exc.as_instanceof_cause()
        raise cause from None
