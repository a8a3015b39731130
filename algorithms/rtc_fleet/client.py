"""A robot's connection to the fleet service: Serve's Python handle API from the control process.

``FleetClient.connect()`` joins the Ray cluster (bounded, auth as every Ray piece here) and looks up
the service's application; ``submit(request)`` returns a ``FleetCall`` whose daemon thread sends the
request, waits for the reply (bounded) and stamps its arrival, so the control tick never blocks on
Serve. The service is stateless, so a request whose replica died is simply sent again (to whichever
replica Serve picks, the restarted one included) while its time budget lasts; Serve's back-pressure
(``max_queued_requests``) and the replica's load shedding come back as ``overloaded`` replies.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from algorithms.remote_errors import error_line
from algorithms.wire import OVERLOADED, error_reply
from services.ray_connection import LaunchError, connect

log = logging.getLogger(__name__)

DIED = "replica_died"
TIMEOUT = "timeout"
FAILED = "failed"


@dataclass
class FleetCall:
    """One request in flight. ``reply`` is set (and ``arrived``) when the answer or a named error
    is in; ``t_arrive`` is when (monotonic, this process); ``attempts`` counts sends."""

    t_start: float
    deadline: float = 0.0  # monotonic s: the call ends by then, whatever happens
    reply: dict[str, Any] | None = None
    t_arrive: float | None = None
    attempts: int = 0
    arrived: threading.Event = field(default_factory=threading.Event)
    response: Any = None
    thread: threading.Thread | None = None

    def done(self, reply: dict[str, Any]) -> None:
        self.reply, self.t_arrive = reply, time.monotonic()
        self.arrived.set()

    def cancel(self) -> None:
        response = self.response
        if response is not None:
            try:
                response.cancel()
            except Exception:  # noqa: BLE001 - already finished or gone
                pass

    def join(self, grace_s: float = 1.0) -> bool:
        """Wait for the call's thread to end (its deadline, plus ``grace_s``); False if it has not.
        A thread left waiting on Serve when the interpreter exits touches Ray after Ray's own exit
        handler shut the core worker down, and Ray then ends the process with code 1."""
        if self.thread is None:
            return True
        self.thread.join(max(0.0, self.deadline - time.monotonic()) + grace_s)
        return not self.thread.is_alive()


class FleetClient:
    """The service's application ``app_name`` on the cluster at ``address``."""

    def __init__(
        self,
        app_name: str = "fleet",
        address: str = "auto",
        auth_mode: str | None = "disabled",
        auth_token_path: str | None = None,
        connect_timeout_s: float = 15.0,
        namespace: str = "inference",
        max_retries: int = 1,
    ) -> None:
        self.app_name = app_name
        self.address = address
        self.auth_mode = auth_mode
        self.auth_token_path = auth_token_path
        self.connect_timeout_s = float(connect_timeout_s)
        self.namespace = namespace
        self.max_retries = int(max_retries)
        self.handle: Any = None
        self.resolved = ""

    def connect(self) -> str:
        """Join the cluster and find the application (``LaunchError`` naming the app if absent)."""
        self.resolved = connect(
            self.address,
            self.namespace,
            self.connect_timeout_s,
            self.auth_mode,
            self.auth_token_path,
            log_to_driver=False,
            address_key="algorithm.address",
        )
        from ray import serve

        try:
            status = serve.status().applications.get(self.app_name)
        except Exception as exc:  # noqa: BLE001 - no Serve controller on this cluster
            raise LaunchError(
                f"no fleet service on the Ray cluster at {self.resolved}: {exc}; start it with "
                f"`python -m inference.fleet serve policy=...`"
            ) from None
        if status is None:
            raise LaunchError(
                f"the Ray cluster at {self.resolved} serves no application {self.app_name!r}; start it "
                f"with `python -m inference.fleet serve policy=... fleet.app_name={self.app_name}`"
            )
        self.handle = serve.get_app_handle(self.app_name)
        return self.resolved

    def submit(self, request: dict[str, Any], timeout_s: float) -> FleetCall:
        """Send ``request`` from a daemon thread; the call ends within ``timeout_s`` whatever happens."""
        call = FleetCall(time.monotonic())
        call.deadline = call.t_start + timeout_s
        call.thread = threading.Thread(
            target=self._run, args=(call, request, timeout_s), name="fleet-request", daemon=True
        )
        call.thread.start()
        return call

    def call(self, request: dict[str, Any], timeout_s: float) -> dict[str, Any]:
        """Blocking form (benchmarks, tools)."""
        c = self.submit(request, timeout_s)
        c.arrived.wait(timeout_s + 1.0)
        return c.reply or error_reply("no reply", TIMEOUT)

    def _run(self, call: FleetCall, request: dict[str, Any], timeout_s: float) -> None:
        import ray
        from ray.serve.exceptions import BackPressureError

        deadline = call.t_start + timeout_s
        while True:
            call.attempts += 1
            try:
                call.response = self.handle.remote(request)
                left = max(0.01, deadline - time.monotonic())
                call.done(call.response.result(timeout_s=left))
                return
            except BackPressureError as exc:
                call.done(error_reply(f"fleet service overloaded: {exc}", OVERLOADED))
                return
            except TimeoutError:
                call.cancel()
                call.done(
                    error_reply(f"inference timeout: no reply from the fleet service within {timeout_s:g} s", TIMEOUT)
                )
                return
            except (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError) as exc:
                if call.attempts <= self.max_retries and time.monotonic() < deadline:
                    log.warning("fleet: replica gone (%s); sending the request again", type(exc).__name__)
                    continue
                call.done(
                    error_reply(
                        f"fleet replica died with the request in flight ({call.attempts} "
                        f"attempt(s)): {error_line(exc)}",
                        DIED,
                    )
                )
                return
            except Exception as exc:  # noqa: BLE001 - the replica raised, the handle failed
                call.done(error_reply(f"fleet request failed: {error_line(exc)}", FAILED))
                return
