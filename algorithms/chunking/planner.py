"""The control side's RTC planner: trigger, snapshot, delay estimate, delay clip, merge -- once.

Every transport runs this same object in the control loop: the shared-memory runtime
(``algorithm=rtc``), the Ray split runtime (``algorithm=rtc_split``) and the lockstep evaluator. The
planner decides *when* an inference starts and *what it continues* (``Request``: the snapshot's ``s``,
``prev = chunk[s:]`` in model space, the clipped delay estimate ``d``); the transport carries the
request to wherever the policy runs and brings the chunk back; the planner merges it
(``ChunkScheduler.merge``), measures ``d_actual`` on the control side (so the estimate includes any
transport) and feeds the delay estimator. Pure logic: no clocks, processes or I/O.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from algorithms.chunking.chunk_logic import (
    ChunkRejected,
    ChunkScheduler,
    DelayEstimator,
    Merge,
    Snapshot,
    Step,
    boundary_jump,
    clip_delay,
)
from algorithms.chunking.config import RTCConfig
from policies.base import Guidance, capped_execute_horizon
from policies.runner import Guide


@dataclass(frozen=True)
class Request:
    """One inference to run, from the observation of control tick ``tick``.

    ``snapshot`` None: the episode's first chunk (plain predict, except under ``guidance: bid``, whose
    first chunk is chosen by forward contrast alone: a guide with nothing to continue). ``guide`` is
    what guided inference continues (None when there is nothing left of the current chunk, ``s >= H``:
    plain predict).
    ``seq`` identifies the request: a result for any other seq is stale and discarded.
    """

    seq: int
    episode: int
    tick: int
    snapshot: Snapshot | None
    d: int
    guide: Guide | None
    restart: bool = False  # sync execution: the new chunk runs from index 0 (the robot paused meanwhile)

    @property
    def s(self) -> int:
        return self.snapshot.s if self.snapshot is not None else 0

    @property
    def first(self) -> bool:
        return self.snapshot is None

    @property
    def guidance(self) -> str:
        """What the inference did, for telemetry: the guidance name, or ``none`` for a plain predict."""
        return str(self.guide.guidance) if self.guide is not None else str(Guidance.NONE)


class RTCPlanner:
    """Current chunk + RTC rules for one run. ``initial_delay_ticks`` overrides the config's (the
    lockstep evaluator calibrates it to the simulated delay)."""

    def __init__(
        self, cfg: RTCConfig, chunk_size: int, action_dim: int, initial_delay_ticks: int | None = None
    ) -> None:
        cfg.check_chunk_size(chunk_size)
        self.cfg = cfg
        self.chunk_size = int(chunk_size)
        self.action_dim = int(action_dim)
        self.scheduler = ChunkScheduler(chunk_size, action_dim, cfg.execute_horizon)
        initial = cfg.initial_delay_ticks if initial_delay_ticks is None else initial_delay_ticks
        self.estimator = DelayEstimator(cfg.delay_window, int(initial or 0), cfg.warmup_inferences_excluded)
        self.pending: Request | None = None
        self.episode = 0
        self.anchor: np.ndarray | None = None
        self._seq = 0

    # ------------------------------------------------------------------ lifecycle
    def begin_episode(self, episode: int, anchor: np.ndarray | None = None) -> None:
        """A new episode: no chunk, nothing in flight (a late result of the last episode is stale).
        ``anchor``: where the robot is (robot space), what the first chunk's first action is checked
        against (``max_chunk_jump``)."""
        self.scheduler.reset()
        self.pending = None
        self.episode = int(episode)
        self.anchor = None if anchor is None else np.asarray(anchor, np.float32).copy()

    def inference_restarted(self) -> None:
        """The inference side was restarted: what was in flight is lost, and its first delays are
        warm-up again. The next request continues the current chunk (guided), so nothing jumps."""
        self.pending = None
        self.estimator.reset()

    def cancel(self) -> None:
        """Forget the request in flight (its result, if any, will be discarded)."""
        self.pending = None

    # ------------------------------------------------------------------ requests
    def wants_inference(self) -> bool:
        """True when a new inference should start now: no chunk yet, or ``t >= execute_horizon``, and none in flight."""
        if self.pending is not None:
            return False
        return not self.scheduler.has_chunk or self.scheduler.should_trigger()

    def request(self, tick: int) -> Request:
        """Cut the next request at this tick (call when ``wants_inference()``)."""
        sched, cfg = self.scheduler, self.cfg
        self._seq += 1
        if not sched.has_chunk:
            req = Request(self._seq, self.episode, int(tick), None, 0, self._first_guide())
        else:
            snap = sched.snapshot()
            H = self.chunk_size
            if snap.s < H:
                d = clip_delay(self.estimator.estimate(), snap.s, H)
                guide = Guide(
                    snap.prev_model,
                    d,
                    capped_execute_horizon(H, d, snap.s, cfg.guided_cap_ticks),
                    cfg.guidance,
                    cfg.schedule,
                    cfg.max_guidance_weight,
                )
            else:
                # nothing of the chunk is left (an underrun, or after an inference restart): the robot
                # holds the chunk's last action, so the new chunk is guided to continue from there
                d = clip_delay(self.estimator.estimate(), 0, H)
                hold = np.repeat(sched.chunk_model[-1:], H, axis=0)
                s = min(cfg.execute_horizon, H - d)
                guide = Guide(
                    hold,
                    d,
                    capped_execute_horizon(H, d, s, cfg.guided_cap_ticks),
                    cfg.guidance,
                    cfg.schedule,
                    cfg.max_guidance_weight,
                )
            req = Request(self._seq, self.episode, int(tick), snap, d, guide)
        self.pending = req
        return req

    def _first_guide(self) -> Guide | None:
        """What an episode's first inference continues: nothing (plain predict), except that
        bidirectional decoding chooses its first chunk among samples too, by forward contrast alone:
        a zero ``prev`` with no overlap (``d = 0``, all ``H`` actions free), so the soft mask is zero
        everywhere and the backward term vanishes."""
        cfg = self.cfg
        if cfg.guidance != Guidance.BID:
            return None
        return Guide(
            np.zeros((self.chunk_size, self.action_dim), np.float32),
            0,
            self.chunk_size,
            cfg.guidance,
            cfg.schedule,
            cfg.max_guidance_weight,
        )

    def plain_request(self, tick: int) -> Request:
        """A request for ``sync`` execution: the new chunk runs from index 0, so nothing of the current
        chunk is inpainted (a plain predict). Bidirectional decoding alone keeps using it: it chooses
        among plain samples by their agreement with the rest of the current chunk, with no delay
        (``d = 0``: the robot paused), which is the synchronous setting the method was made for."""
        req = self.request(tick)
        guide = None
        if req.guide is not None and req.guide.guidance == Guidance.BID:
            guide = dataclasses.replace(req.guide, delay_ticks=0)
        self.pending = Request(req.seq, req.episode, req.tick, req.snapshot, 0, guide, restart=True)
        return self.pending

    # ------------------------------------------------------------------ results
    def is_current(self, seq: int) -> bool:
        return self.pending is not None and int(seq) == self.pending.seq

    def accept(self, seq: int, chunk_robot: np.ndarray, chunk_model: np.ndarray) -> Merge | None:
        """Make the chunk computed for request ``seq`` current.

        Returns None for a stale result (not the request in flight: discarded). Raises
        ``ChunkRejected`` for a chunk that must not run (shape, NaN/inf); the request is then no
        longer in flight, so the next tick asks again. A first chunk runs from index 0
        (``d_actual`` 0), and so does a ``restart`` (sync execution), whose ``discontinuity`` and
        ``plan_jump`` are then measured at index 0; a later one continues at ``d_actual = t - s``
        (measured here, so it includes any transport), which feeds the delay estimator.
        """
        if not self.is_current(seq):
            return None
        req, self.pending = self.pending, None
        sched = self.scheduler
        if req.first or req.restart:
            reference = self.anchor if req.first else sched.last_action
            self._check_plausible(chunk_robot, 0, reference)
            last = None if req.first else sched.last_action
            planned = None if req.first else sched.planned_next()
            chunk_id = sched.start(chunk_robot, chunk_model)
            first_new = sched.chunk_robot[0]
            return Merge(chunk_id, 0, req.s, False, boundary_jump(last, first_new), boundary_jump(planned, first_new))
        self._check_plausible(chunk_robot, sched.t - req.s, sched.last_action)
        merge = sched.merge(chunk_robot, chunk_model, req.s)
        self.estimator.observe(merge.d_actual)
        return merge

    def _check_plausible(self, chunk_robot: np.ndarray, index: int, reference: np.ndarray | None) -> None:
        """``max_chunk_jump``: the first action this chunk would execute (``index``) must be within
        that distance (robot units, max over joints) of where the robot is commanded now."""
        limit = self.cfg.max_chunk_jump
        arr = np.asarray(chunk_robot)
        if limit is None or reference is None or arr.ndim != 2 or not 0 <= index < len(arr):
            return
        jump = np.abs(arr[index].astype(np.float64) - reference)
        if np.all(np.isfinite(jump)) and float(jump.max()) > limit:
            joint = int(np.argmax(jump))
            raise ChunkRejected(
                f"implausible chunk: its first executed action is {float(jump.max()):.3g} from the last "
                f"command on joint {joint} (algorithm.max_chunk_jump={limit:g})"
            )

    # ------------------------------------------------------------------ ticks
    def step(self) -> Step:
        return self.scheduler.step()

    @property
    def remaining(self) -> int:
        return self.scheduler.remaining
