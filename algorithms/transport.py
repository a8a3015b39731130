"""What answers an inference request: the one seam between the control loop and wherever the policy runs.

Every execution mode runs the same ``ControlLoop`` (``algorithms/loop.py``); modes differ only in the
transport that carries an ``InferenceRequest`` to a policy and brings an ``InferenceReply`` back:

* ``algorithm=rtc``: a spawned inference process over shared memory (``algorithms/rtc/``);
* ``algorithm=rtc_split``: a Ray actor on the ``inference_pc`` node (``algorithms/rtc_split/``);
* ``algorithm=sequential``: in this process, blocking (the robot holds while the model thinks);
* ``algorithm=lockstep_eval``: in this process, the answer held back a simulated number of ticks.

The contract, as the loop uses it (all calls from the control thread; none may block for long,
except ``submit`` of a transport with ``blocking = True``):

Attributes: ``name``; ``blocking`` (True: ``submit`` returns with the answer, the robot holding
meanwhile; the transport bounds the call by ``session.inference_timeout_s`` itself);
``simulated`` (True: answers are held back a simulated number of ticks; only a lockstep robot,
which waits for each send, can run it); ``startup_timeout_s`` (how long a restarted inference side
may take to get ready); ``restarts`` (how many times it was restarted).

``start(session)``
    Get the policy ready (build, warm up, place an actor, connect). ``session`` is a
    ``TransportSession``: the run's factories, the robot, the observation history, telemetry. A
    failure raises ``AlgorithmFault`` (kind ``startup``), or ``LaunchError`` for a cluster that is
    not there. ``start_early()`` (optional) runs before the robot starts, so a missing cluster
    fails with the robot untouched.
``begin_episode(episode, seed)``
    An episode starts: forget anything in flight (its answer would be for the last episode).
``ready() -> bool``
    True while a request can be submitted now (the inference side is up and has nothing in flight
    that it would drop).
``submit(request)``
    Hand one request over. Non-blocking transports return at once; a result comes back later from
    ``poll``. A blocking transport returns once the reply exists (``poll`` then returns it).
``poll(tick) -> InferenceReply | None``
    The reply that arrived since the last poll, if any (``tick``: the control tick now; a simulated
    transport releases a held reply once ``tick`` reaches its due tick). A reply answers request
    ``reply.seq``; the loop discards one that does not answer the request in flight. An inference
    that failed is a reply with ``error`` set (message and ``FaultKind``), not an exception.
``health(now) -> TransportFault | None``
    None while the inference side is healthy; else why not (dead process, stalled heartbeat, actor
    gone). ``now`` is ``time.monotonic()``. The loop bounds each inference itself
    (``inference_timeout_s``), so a transport need not time requests out.
``restart() -> bool``
    After a fault of the inference side itself, when the loop's ``max_restarts`` leaves one
    (``RestartConfig``: the loop decides and counts, the same in every mode): start a fresh inference
    side and return True, or return False where it cannot (the run then ends with the fault once the
    current chunk is used up).
``stop()``
    On every exit path; never raises; idempotent.
``summary() -> dict``
    Transport numbers for summary.json (restarts, transport percentiles, placement...).

A new transport (for example a client of a fleet of policy servers) implements these methods,
subclasses ``TransportBase`` for the defaults, and is handed to ``ControlLoop``; nothing else in
the loop, the planner or the rules changes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from policies.runner import Guide
from services.errors import FaultKind


@dataclass(frozen=True)
class ObservationPayload:
    """The observation a request is answered from, in robot units: the proprio history
    ``(state_history, state_dim)`` float32, per camera ``(num_img_obs, 3, H, W)`` uint8, the
    numeric ``info`` extras, and the capture time of the newest state (monotonic s)."""

    state: np.ndarray
    images: Mapping[str, np.ndarray]
    info: Mapping[str, Any]
    timestamp: float


@dataclass(frozen=True)
class InferenceRequest:
    """One inference to run, cut by the planner at control tick ``tick`` of episode ``episode``.

    ``guide`` None: plain predict (an episode's first chunk, sync execution, or nothing left to
    continue; under ``guidance: bid`` the first and the sync chunks carry a guide too, since it
    chooses among samples); else guided inference toward ``guide.prev_model`` (the previous chunk's unexecuted
    rest, model space), with ``guide.delay_ticks`` actions that execute before the new chunk takes
    over, and ``guide.execute_horizon`` (the policy's argument: the new chunk's free tail).
    ``history`` is the control side's observation history at the snapshot; ``observation()`` copies
    it out (a transport that can copy frames straight from their rings uses ``history`` itself).
    """

    seq: int
    episode: int
    tick: int
    guide: Guide | None
    history: Any = field(repr=False, compare=False)
    first: bool = False  # the episode's first chunk: the robot waits for it, still

    def observation(self) -> ObservationPayload:
        snap = self.history.snapshot()
        last = self.history.last
        return ObservationPayload(
            snap.state, snap.images, dict(last.info) if last is not None else {}, float(snap.timestamp)
        )


@dataclass(frozen=True)
class InferenceReply:
    """The answer to request ``seq``: the chunk in model space (what guidance continues) and robot
    space (what is executed), ``(H, action_dim)``, and its timings. ``t_start``/``t_end``: monotonic
    seconds on this machine from the request's submission (or snapshot) to the chunk's arrival;
    ``policy_ms`` the time inside the policy call; ``fields`` extra transport numbers recorded with
    the inference (``server_ms``, ``transport_ms``, ``payload_bytes``...). ``error`` set: the
    inference failed (message, kind) and there is no chunk."""

    seq: int
    model: np.ndarray | None
    robot: np.ndarray | None
    t_start: float
    t_end: float
    policy_ms: float = 0.0
    fields: Mapping[str, Any] = field(default_factory=dict)
    error: tuple[str, FaultKind] | None = None

    @property
    def latency_ms(self) -> float:
        return (self.t_end - self.t_start) * 1e3


@dataclass(frozen=True)
class TransportFault:
    """Why the inference side is not healthy."""

    message: str
    kind: FaultKind


@dataclass
class TransportSession:
    """What a transport may use from the run: ``run`` (factories: ``make_policy``, ``policy_metadata``,
    ``cfg``...), ``telemetry`` (events), the loop's ``inference_timeout_s``, the started ``robot`` and
    the control side's observation ``history`` (both None in ``start_early``)."""

    run: Any
    telemetry: Any
    inference_timeout_s: float
    robot: Any = None
    history: Any = None


@runtime_checkable
class Transport(Protocol):
    name: str
    blocking: bool
    simulated: bool
    startup_timeout_s: float
    restarts: int

    def begin_episode(self, episode: int, seed: int) -> None: ...
    def start_early(self, session: TransportSession) -> None: ...
    def start(self, session: TransportSession) -> None: ...
    def ready(self) -> bool: ...
    def submit(self, request: InferenceRequest) -> None: ...
    def poll(self, tick: int) -> InferenceReply | None: ...
    def health(self, now: float) -> TransportFault | None: ...
    def restart(self) -> bool: ...
    def stop(self) -> None: ...
    def summary(self) -> dict[str, Any]: ...


class TransportBase:
    """Defaults for the optional parts of the protocol."""

    name = "transport"
    blocking = False
    simulated = False
    startup_timeout_s = 0.0
    restarts = 0

    def start_early(self, session: TransportSession) -> None:
        pass

    def begin_episode(self, episode: int, seed: int) -> None:
        pass

    def ready(self) -> bool:
        return True

    def health(self, now: float) -> TransportFault | None:
        return None

    def restart(self) -> bool:
        return False

    def summary(self) -> dict[str, Any]:
        return {}
