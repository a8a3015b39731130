"""Split RTC: the control loop runs here (robot, cameras, safety filter), the policy runs in a Ray
actor on the node advertising ``inference_pc`` (the inference PC of a Ray cluster; docs/distributed.md).

The one control loop (``algorithms/loop.py``) as ``algorithm=rtc``; only the transport differs:
instead of shared memory and a spawned process, the request (``algorithms.wire.encode_request``: observation as
compact numpy, frames optionally JPEG, the guide) goes to the actor through Ray, and the chunk comes
back as an object reference the transport polls without blocking. The loop never waits on inference after an
episode's first chunk. ``d_actual`` is counted in control ticks from the snapshot to the merge on
*this* side, so the delay estimate includes the transport both ways -- RTC absorbs the network.

Telemetry per inference: ``latency_ms`` from submit to the result's arrival in this process (a
waiter thread stamps it), ``server_ms`` the actor's own time (decode + policy), ``transport_ms``
their difference, ``payload_bytes``; ``d_actual`` in ticks from snapshot to merge.

Faults: the actor dies (``inference_died``), the policy raises (``inference_error``) or a request
takes longer than ``inference_timeout_s`` (``inference_timeout``) -> the loop finishes the current
chunk through the safety filter, holds, and the run ends with ``AlgorithmFault``; or, while the
loop's ``max_restarts`` allows, this transport kills the actor and places a new one (it is not
sent requests before it is ready) and the run carries on. Ctrl-C: hold, kill the actor, flush
telemetry.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Annotated, Any

import numpy as np

from algorithms.chunking.config import RTCConfig
from algorithms.loop import ControlLoop, LoopConfig, RestartConfig
from algorithms.remote_errors import error_line
from algorithms.rtc_split.server import InferenceServer
from algorithms.settings import build_groups, check_ranges, knob_groups
from algorithms.transport import InferenceReply, InferenceRequest, TransportBase, TransportFault, TransportSession
from algorithms.wire import encode_request, payload_bytes
from services.errors import AlgorithmFault, FaultKind
from services.knobs import PositiveFloat, Range
from services.ray_connection import RayTarget

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class SplitConfig:
    """The split transport's own knobs (where the actor goes is ``RayTarget``, shared with
    ``launcher=ray``). ``jpeg_quality``: null sends raw uint8 frames, 1-100 JPEG-compresses them
    (``cv2.imencode``). ``startup_timeout_s``: actor placement + policy build + warm-up."""

    jpeg_quality: Annotated[int, Range(ge=1, le=100)] | None = None
    startup_timeout_s: PositiveFloat = 120.0

    def __post_init__(self) -> None:
        check_ranges(self)


@dataclass
class _Pending:
    """One request in flight. A daemon thread submits it to the actor and stamps its arrival, so
    the control tick neither pays Ray's serialization/RPC nor quantizes latency to the period."""

    seq: int
    t_start: float
    nbytes: int = 0
    ref: Any = None
    error: BaseException | None = None
    arrived: threading.Event = field(default_factory=threading.Event)
    t_arrive: float | None = None  # when the result reached this process

    def send(self, actor: Any, request: InferenceRequest, jpeg_quality: int | None, timeout_s: float) -> None:
        """Copy the observation out now (this tick's), encode and submit it in the request's thread."""
        obs, guide = request.observation(), request.guide

        def run() -> None:
            import ray

            try:
                payload = encode_request(self.seq, obs.state, obs.images, obs.info, guide, jpeg_quality=jpeg_quality)
                self.nbytes = payload_bytes(payload)
                self.ref = actor.infer.remote(payload)
                done, _ = ray.wait([self.ref], timeout=timeout_s)
            except BaseException as exc:  # noqa: BLE001 - reported by the poll as a fault
                self.error, done = exc, [None]
            if done:
                self.t_arrive = time.monotonic()
                self.arrived.set()

        threading.Thread(target=run, name="split-request", daemon=True).start()


class RayActorTransport(TransportBase):
    """The policy in a Ray actor (``InferenceServer``) on the node ``target`` names."""

    name = "ray-actor"

    def __init__(self, target: RayTarget, settings: SplitConfig) -> None:
        self.target = target
        self.settings = settings
        self.startup_timeout_s = settings.startup_timeout_s
        self.actor: Any = None
        self.placement: dict[str, Any] = {}
        self.pending: _Pending | None = None
        self.timeout_s = 0.0
        self.session: TransportSession | None = None
        self.placing: Any = None  # a replacement actor's ``ready`` reference while it starts
        self.placed_at = 0.0
        self.transport_ms: list[float] = []
        self.payload_sizes: list[int] = []

    def start_early(self, session: TransportSession) -> None:
        """Place the actor before the robot starts: a missing cluster fails with the robot untouched."""
        import ray

        from services.ray_connection import LaunchError, check_resources

        self.session = session
        self.timeout_s = float(session.inference_timeout_s)
        address = self.target.connect()
        demand = self.target.demand
        check_resources(demand, address)
        self.actor = self._new_actor()
        try:
            self.placement = ray.get(self.actor.ready.remote(), timeout=self.startup_timeout_s)
        except ray.exceptions.GetTimeoutError:
            raise LaunchError(
                f"the split inference actor was not ready within {self.startup_timeout_s:g} s "
                f"(placement on {demand} + policy build + warmup)"
            ) from None
        except ray.exceptions.RayActorError as exc:
            raise AlgorithmFault(
                f"split inference actor failed at start: {error_line(exc)}", FaultKind.STARTUP
            ) from None
        self._placed(session.telemetry)

    def _new_actor(self) -> Any:
        import ray

        return (
            ray.remote(InferenceServer).options(**self.target.actor_options(), max_restarts=0).remote(self.session.run)
        )

    def _placed(self, telemetry: Any) -> None:
        telemetry.event("inference_actor_ready", **{k: v for k, v in self.placement.items()})
        log.info(
            "rtc_split: inference actor on node %s (%s, pid %s), policy ready in %.2f s",
            str(self.placement["node_id"])[:8],
            self.placement["host"],
            self.placement["pid"],
            self.placement["startup_s"],
        )

    def start(self, session: TransportSession) -> None:
        pass

    def begin_episode(self, episode: int, seed: int) -> None:
        self.pending = None  # a request of the previous episode: its answer is not waited for

    def ready(self) -> bool:
        return self.actor is not None and self.pending is None and self._replacement_ready()

    def _replacement_ready(self) -> bool:
        """True once no replacement actor is starting (or the one starting is ready); a failed
        start is for ``health`` to report."""
        if self.placing is None:
            return True
        import ray

        done, _ = ray.wait([self.placing], timeout=0)
        if not done:
            return False
        try:
            self.placement = ray.get(self.placing)
        except Exception:  # noqa: BLE001 - reported by health()
            return False
        self.placing = None
        self._placed(self.session.telemetry)
        return True

    def health(self, now: float) -> TransportFault | None:
        """Only while a replacement actor starts: its start failed, or took longer than
        ``startup_timeout_s`` (a running actor's failures come back as replies)."""
        if self.placing is None:
            return None
        import ray

        done, _ = ray.wait([self.placing], timeout=0)
        if done:
            try:
                ray.get(self.placing)
            except Exception as exc:  # noqa: BLE001 - the policy could not be built there
                self.placing = None
                return TransportFault(f"split inference actor failed at restart: {error_line(exc)}", FaultKind.STARTUP)
        elif now - self.placed_at > self.startup_timeout_s:
            self.placing = None
            return TransportFault(
                f"split inference actor not ready {self.startup_timeout_s:g} s after its restart", FaultKind.STARTUP
            )
        return None

    def submit(self, request: InferenceRequest) -> None:
        self.pending = _Pending(request.seq, time.monotonic())
        self.pending.send(self.actor, request, self.settings.jpeg_quality, self.timeout_s + 1.0)

    def poll(self, tick: int) -> InferenceReply | None:
        """The in-flight result once it arrived (an actor failure is a reply with an error)."""
        import ray

        pending = self.pending
        if pending is None or not pending.arrived.is_set():
            return None
        self.pending = None
        t_end = pending.t_arrive if pending.t_arrive is not None else time.monotonic()
        try:
            if pending.error is not None:
                raise pending.error
            result = ray.get(pending.ref)
        except Exception as exc:  # noqa: BLE001 - actor died, task raised, submit failed
            died = isinstance(exc, (ray.exceptions.RayActorError, ray.exceptions.ActorDiedError))
            return InferenceReply(
                pending.seq,
                None,
                None,
                pending.t_start,
                t_end,
                error=(
                    f"split inference actor failed: {error_line(exc)}",
                    FaultKind.INFERENCE_DIED if died else FaultKind.INFERENCE_ERROR,
                ),
            )
        latency_ms = (t_end - pending.t_start) * 1e3
        transport_ms = max(0.0, latency_ms - float(result["server_ms"]))
        self.transport_ms.append(transport_ms)
        self.payload_sizes.append(pending.nbytes)
        return InferenceReply(
            pending.seq,
            result["model"],
            result["robot"],
            pending.t_start,
            t_end,
            float(result["policy_ms"]),
            {
                **result.get("info", {}),
                "server_ms": float(result["server_ms"]),
                "transport_ms": transport_ms,
                "payload_bytes": pending.nbytes,
            },
        )

    def restart(self) -> bool:
        """Kill the actor and place a new one (the loop decided that one is due); requests wait
        until it is ready (``ready``), within ``startup_timeout_s`` (``health``)."""
        self._kill()
        self.restarts += 1
        self.actor = self._new_actor()
        self.placing = self.actor.ready.remote()
        self.placed_at = time.monotonic()
        log.warning("rtc_split: placing a new inference actor (restart %d)", self.restarts)
        return True

    def stop(self) -> None:
        self._kill()

    def _kill(self) -> None:
        self.pending = None
        self.placing = None
        if self.actor is None:
            return
        import ray

        try:
            ray.kill(self.actor, no_restart=True)
        except Exception:  # noqa: BLE001
            log.warning("rtc_split: could not kill the inference actor", exc_info=True)
        self.actor = None

    def summary(self) -> dict[str, Any]:
        fields: dict[str, Any] = dict(
            jpeg_quality=self.settings.jpeg_quality,
            inference_node=str(self.placement.get("node_id", ""))[:16],
            inference_host=self.placement.get("host"),
        )
        transport = np.asarray(self.transport_ms, dtype=np.float64)
        if transport.size:
            fields.update({f"transport_ms_p{p}": float(np.percentile(transport, p)) for p in (50, 95, 99)})
            fields["transport_ms_max"] = float(transport.max())
            fields["payload_bytes_mean"] = float(np.mean(self.payload_sizes))
        return fields


@knob_groups(rtc=RTCConfig, limits=LoopConfig, restarts=RestartConfig, ray=RayTarget, split=SplitConfig)
class SplitRTCAlgorithm:
    """RTC with the inference on a Ray node: the chunking knobs (``RTCConfig``), the loop's bounds
    (``LoopConfig``), how often a failed actor is replaced (``RestartConfig``), where the actor goes
    (``RayTarget``, the settings ``launcher=ray`` uses too) and the transport's own (``SplitConfig``),
    each a member."""

    def __init__(self, run: Any, **knobs: Any) -> None:
        groups = build_groups(self.knob_groups, knobs)
        self.run = run
        self.rtc: RTCConfig = groups["rtc"]
        self.limits: LoopConfig = groups["limits"]
        self.restarts: RestartConfig = groups["restarts"]
        self.target: RayTarget = groups["ray"]
        self.split: SplitConfig = groups["split"]
        self.rtc.check_chunk_size(run.policy_metadata.chunk_size)

    def execute(self) -> dict[str, Any]:
        transport = RayActorTransport(self.target, self.split)
        return ControlLoop(
            self.run, self.rtc, self.limits, transport, name="rtc_split", restarts=self.restarts
        ).execute()
