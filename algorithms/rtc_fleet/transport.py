"""The fleet transport: this robot's RTC requests go to a shared policy service on Ray Serve.

Each robot's control process keeps its own planner (trigger, snapshot, delay estimate, merge) as in
``algorithm=rtc``; only the carrier differs. A request (observation, the previous chunk's rest in
model space, ``d``, ``s``, guidance) goes to the Serve application of ``python -m inference.fleet
serve`` through Serve's Python handle (``algorithms.rtc_fleet.client``); the service batches it with
other robots' requests into one guided sampling call and keeps nothing of it, so any replica can
answer and a replica restart loses nothing. ``d_actual`` is counted on this side, so the delay
estimate includes the queue, the batch and the transport both ways.

Telemetry per inference (``inferences.csv``, and W&B's ``inference/*``): ``latency_ms`` (submit to
arrival here), ``queue_ms`` (waiting in the replica for its batch), ``batch_size``, ``policy_ms`` (the
batch's policy call), ``server_ms``, ``transport_ms`` (latency minus server time), ``attempts`` (2:
resent after its replica died). The summary adds their percentiles and which replicas answered.

Faults, all with the robot finishing its current chunk and holding: no reply within
``inference_timeout_s`` -> ``inference_timeout`` (the control loop's bound); the service overloaded
(Serve's caller queue full, or the request shed after waiting ``fleet.max_queue_wait_s`` in a
replica) -> ``inference_timeout`` whose message says ``fleet service overloaded``; the replica died
and the one resend failed too -> ``inference_died``; the service refused the request ->
``inference_error``. While the loop's ``max_restarts`` allows, a fault of the inference side
(``RESTARTABLE_KINDS``) is ridden through as in every real-time mode, but the service is shared and
Serve owns its replicas: this robot cannot replace one, so its "restart" is the next request (a dead
replica is replaced by Serve and any replica answers any robot; a frozen one stays until Serve's
health check replaces it, and requests that reach it time out again).
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from algorithms.rtc_fleet.client import DIED, TIMEOUT, FleetCall, FleetClient
from algorithms.transport import InferenceReply, InferenceRequest, TransportBase, TransportFault
from algorithms.wire import OVERLOADED, encode_request
from policies.base import capability_flag
from services.errors import AlgorithmFault, FaultKind
from services.knobs import NonNegativeInt, PositiveFloat

log = logging.getLogger(__name__)

_KINDS = {OVERLOADED: FaultKind.INFERENCE_TIMEOUT, TIMEOUT: FaultKind.INFERENCE_TIMEOUT, DIED: FaultKind.INFERENCE_DIED}


@dataclass(kw_only=True)
class FleetClientConfig:
    """Where the service is and how this robot talks to it. ``app_name``: the service's application
    (``fleet.app_name`` of ``python -m inference.fleet serve``); ``robot_name``: this robot in the
    service's per-robot numbers (null: host:pid); ``max_retries``: resends of a request whose replica
    died, inside the request's time budget (how many failed requests a run rides through is the
    loop's ``max_restarts``); ``request_timeout_s``: the client's own bound on one request (null: the
    loop's ``inference_timeout_s``)."""

    app_name: str = "fleet"
    robot_name: str | None = None
    address: str = "auto"
    auth_mode: str | None = "disabled"
    auth_token_path: str | None = None
    connect_timeout_s: PositiveFloat = 15.0
    max_retries: NonNegativeInt = 1
    request_timeout_s: PositiveFloat | None = None

    def __post_init__(self) -> None:
        from algorithms.settings import check_ranges

        check_ranges(self)
        if self.auth_mode not in (None, "disabled", "token"):
            raise ValueError(f"algorithm.auth_mode={self.auth_mode!r}; expected disabled or token")
        from services.ray_connection import address_problem

        why = address_problem(self.address)
        if why:
            raise ValueError(f"algorithm.address={why}")
        if not str(self.app_name).strip():
            raise ValueError("algorithm.app_name='': empty (the fleet service's fleet.app_name)")
        token = self.auth_token_path
        if self.auth_mode == "token" and token and not os.path.isfile(os.path.expanduser(str(token))):
            raise ValueError(f"algorithm.auth_token_path={token!r}: the token file does not exist (auth_mode token)")


class FleetTransport(TransportBase):
    """``algorithms.transport`` protocol over a ``FleetClient``; one request in flight at a time."""

    name = "rtc_fleet"
    blocking = False
    simulated = False

    def __init__(self, cfg: FleetClientConfig, client: FleetClient | None = None, guidance: str = "vjp") -> None:
        self.cfg = cfg
        self.guidance = guidance
        self.robot_name = cfg.robot_name or f"{socket.gethostname()}:{os.getpid()}"
        self.client = client or FleetClient(
            cfg.app_name,
            cfg.address,
            cfg.auth_mode,
            cfg.auth_token_path,
            cfg.connect_timeout_s,
            max_retries=cfg.max_retries,
        )
        self.session: Any = None
        self.call: FleetCall | None = None
        self.seq: int | None = None
        self.service: dict[str, Any] = {}
        self.restarts = 0
        self.startup_timeout_s = float(cfg.connect_timeout_s)
        self.timeout_s = 10.0
        self._numbers: dict[str, list[float]] = {
            k: [] for k in ("queue_ms", "batch_size", "policy_ms", "server_ms", "transport_ms", "latency_ms")
        }
        self.replicas: set[str] = set()
        self.resent = 0
        self.overloaded = 0

    # ------------------------------------------------------------------ lifecycle
    def start_early(self, session: Any) -> None:
        """Join the cluster and find the service before the robot starts (a missing service fails
        with the robot untouched: ``LaunchError``, a config error)."""
        self.session = session
        self.timeout_s = float(self.cfg.request_timeout_s or getattr(session, "inference_timeout_s", 10.0))
        address = self.client.connect()
        try:
            self.service = self.client.handle.metadata.remote().result(timeout_s=self.startup_timeout_s)
        except Exception as exc:  # noqa: BLE001 - no replica ready in time, replica failing
            raise AlgorithmFault(
                f"fleet service {self.cfg.app_name!r} on {address} did not answer: {exc}", FaultKind.STARTUP
            ) from None
        meta = session.run.policy_metadata
        for key in ("chunk_size", "action_dim", "state_dim"):
            if int(self.service[key]) != int(getattr(meta, key)):
                raise AlgorithmFault(
                    f"fleet service {self.cfg.app_name!r} serves {key}={self.service[key]} but this "
                    f"robot's policy config says {key}={getattr(meta, key)}",
                    FaultKind.STARTUP,
                )
        missing = sorted(set(self.service.get("camera_names", ())) - set(meta.camera_names))
        if missing:
            raise AlgorithmFault(
                f"fleet service {self.cfg.app_name!r} needs cameras {missing} that this robot's policy "
                f"config does not send (camera_names={list(meta.camera_names)})",
                FaultKind.STARTUP,
            )
        needs = capability_flag(self.guidance)
        if needs is not None and not self.service.get(needs, False):
            raise AlgorithmFault(
                f"algorithm.guidance={self.guidance}: fleet service {self.cfg.app_name!r} serves "
                f"{self.service.get('policy')}, which does not support it ({needs} is false)",
                FaultKind.STARTUP,
            )
        session.telemetry.event(
            "fleet_service",
            app=self.cfg.app_name,
            address=address,
            robot=self.robot_name,
            **{k: v for k, v in self.service.items() if k != "camera_names"},
        )
        log.info(
            "rtc_fleet: robot %s uses fleet app %r on %s (%s, batched=%s)",
            self.robot_name,
            self.cfg.app_name,
            address,
            self.service.get("policy"),
            self.service.get("batched"),
        )

    def start(self, session: Any) -> None:
        self.session = session
        if self.client.handle is None:
            self.start_early(session)

    def begin_episode(self, episode: int, seed: int) -> None:
        self._drop()

    def ready(self) -> bool:
        return self.call is None

    def stop(self) -> None:
        """Cancel the request in flight and wait for its thread (bounded by the request's deadline)."""
        call = self.call
        self._drop()
        if call is not None and not call.join():
            log.warning("fleet: the request thread of robot %s outlived its deadline", self.robot_name)

    def _drop(self) -> None:
        if self.call is not None:
            self.call.cancel()
        self.call, self.seq = None, None

    # ------------------------------------------------------------------ requests
    def submit(self, request: InferenceRequest) -> None:
        obs = request.observation()
        payload = encode_request(request.seq, obs.state, obs.images, obs.info, request.guide, robot=self.robot_name)
        self.seq = request.seq
        self.call = self.client.submit(payload, self.timeout_s)

    def poll(self, tick: int) -> InferenceReply | None:
        call = self.call
        if call is None or not call.arrived.is_set():
            return None
        self.call = None
        reply = call.reply or {}
        t_end = call.t_arrive if call.t_arrive is not None else time.monotonic()
        if call.attempts > 1:
            self.resent += call.attempts - 1
        if reply.get("error"):
            kind = _KINDS.get(reply.get("error_kind"), FaultKind.INFERENCE_ERROR)
            if reply.get("error_kind") == OVERLOADED:
                self.overloaded += 1
            return InferenceReply(
                self.seq, None, None, call.t_start, t_end, error=(f"{reply['error']} (robot {self.robot_name})", kind)
            )
        latency_ms = (t_end - call.t_start) * 1e3
        server_ms = float(reply.get("server_ms", 0.0))
        policy_ms = float(reply.get("policy_ms", 0.0))
        fields = dict(
            queue_ms=float(reply.get("queue_ms", 0.0)),
            batch_size=int(reply.get("batch_size", 0)),
            server_ms=server_ms,
            transport_ms=max(0.0, latency_ms - server_ms),
            attempts=call.attempts,
        )
        numbers = {**fields, "policy_ms": policy_ms, "latency_ms": latency_ms}
        for key in self._numbers:
            self._numbers[key].append(float(numbers[key]))
        self.replicas.add(str(reply.get("replica")))
        return InferenceReply(
            self.seq,
            reply["model"],
            reply["robot"],
            call.t_start,
            t_end,
            policy_ms=policy_ms,
            fields={**reply.get("info", {}), **fields},
        )

    # ------------------------------------------------------------------ faults
    def health(self, now: float) -> TransportFault | None:
        return None  # the service's health is Serve's; a lost request comes back as an error reply

    def restart(self) -> bool:
        """Nothing to replace on this side (Serve owns the replicas and any replica answers any
        robot): drop the failed request so that the next one goes out (the loop decided that a
        restart is due)."""
        if self.client.handle is None:
            return False
        self.restarts += 1
        self._drop()
        log.warning("rtc_fleet: inference failed; sending the next request to the service (restart %d)", self.restarts)
        return True

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = dict(
            fleet_app=self.cfg.app_name,
            fleet_robot=self.robot_name,
            fleet_replicas=sorted(self.replicas),
            fleet_resent=self.resent,
            fleet_overloaded=self.overloaded,
            fleet_restarts=self.restarts,
        )
        for key, values in self._numbers.items():
            arr = np.asarray(values, np.float64)
            if arr.size:
                out[f"fleet_{key}_p50"] = float(np.percentile(arr, 50))
                out[f"fleet_{key}_p99"] = float(np.percentile(arr, 99))
                out[f"fleet_{key}_max"] = float(arr.max())
        sizes = np.asarray(self._numbers["batch_size"], np.int64)
        if sizes.size:
            out["fleet_batch_size_hist"] = {int(k): int(v) for k, v in zip(*np.unique(sizes, return_counts=True))}
        return out
