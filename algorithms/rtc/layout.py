"""The RTC shared-memory layout: which arrays exist, who writes them, how they are read.

One block per run (``rtc_<pid>_<random>``), created by the control side from explicit specs.
Two single-writer regions, each behind its own seqlock:

* ``ctrl.*`` + ``obs.*`` + ``req.*`` (written by the control process once per request, when its
  ``RTCPlanner`` starts an inference): the observation history of that tick (proprio ring of
  ``state_history`` samples, ``num_img_obs`` frames per camera, numeric ``info`` extras), the
  request (its seq, episode, tick, ``s``, ``d``, guidance) and ``prev = chunk[s:]`` in model space.
  The inference process runs the policy on exactly that and nothing else.
* ``res.*`` (written by the inference process once per inference): the new chunk in both spaces
  and the request it answers (its seq), with times and what the policy reported beside it; or, when
  the policy raised, no chunk and the error's message (``res.error``, UTF-8, cut to ``ERROR_BYTES``).

Plus ``hb.*``: the inference process' heartbeat and state, plain aligned float64/int64 stores that
need no lock. Integers live in small int64 vectors indexed by the ``IntEnum`` slots below;
``encode_request``/``decode_request`` and ``encode_reply``/``decode_reply`` are this wire's one
encoder/decoder of the transport schema (``algorithms/transport.py``).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

import numpy as np

from policies.base import Guidance, Schedule
from services.shm import ArraySpec, SeqLock, SharedArrays

log = logging.getLogger(__name__)


class RequestSlot(IntEnum):
    """Indices into ``ctrl.i64`` (written by control)."""

    EPISODE = 0  # episode number, starts at 1 for the first episode
    TICK = 1  # control tick of the request's observation (per episode, from 0)
    SEQ = 2  # id of the newest request (0: none yet); the inference process answers each once
    EXECUTE_HORIZON = 3  # Guide.execute_horizon: the new chunk's free tail (0 for a plain predict)
    DELAY_TICKS = 4  # delay estimate d handed to guidance (ticks)
    GUIDED = 5  # 1: guided inference toward req.prev; 0: plain predict
    GUIDANCE = 6  # index into GUIDANCE_CODES
    SCHEDULE = 7  # index into SCHEDULE_CODES
    STOP = 8  # 1: the inference process must exit


class RequestValue(IntEnum):
    """Indices into ``ctrl.f64``."""

    OBS_TIME = 0  # capture time of the newest state (monotonic s)
    TICK_TIME = 1  # when the tick published it (monotonic s)
    MAX_GUIDANCE_WEIGHT = 2  # beta of the request


# enum members as shared-memory integers (ctrl.i64 holds no strings)
GUIDANCE_CODES: tuple[Guidance, ...] = tuple(Guidance)
SCHEDULE_CODES: tuple[Schedule, ...] = tuple(Schedule)


class ReplySlot(IntEnum):
    """Indices into ``res.i64`` (written by inference)."""

    SEQ = 0  # increments once per published result
    REQUEST_SEQ = 1  # the request this result answers
    FAILED = 2  # 1: the policy raised; no chunk, the message is in res.error
    ERROR_LEN = 3  # bytes of res.error in use


class ReplyValue(IntEnum):
    """Indices into ``res.f64``."""

    T_START = 0  # snapshot time (monotonic s)
    T_END = 1  # publish time
    POLICY_MS = 2  # time inside the policy call
    SELECT_STALE = 3  # what the policy reported beside the chunk (last_info): NaN where it reported nothing
    BID_INDEX = 4  # likewise (guidance: bid)
    BID_BACKWARD = 5
    BID_FORWARD = 6


ERROR_BYTES = 1024  # room for a failed inference's message (the traceback goes to the run log)

# The policy's per-inference report (``last_info``) keys this wire carries, each in its ``res.f64`` slot.
REPLY_INFO_SLOTS = {
    "select_stale": ReplyValue.SELECT_STALE,
    "bid_index": ReplyValue.BID_INDEX,
    "bid_backward": ReplyValue.BID_BACKWARD,
    "bid_forward": ReplyValue.BID_FORWARD,
}


class HeartbeatTime(IntEnum):
    """Indices into ``hb.f64`` (written by inference, no lock)."""

    BEAT = 0  # last heartbeat (monotonic s)


class HeartbeatState(IntEnum):
    """Indices into ``hb.i64`` (written by inference, no lock)."""

    READY = 0  # 1 after warmup
    PID = 1  # inference pid
    INFERENCES = 2  # completed inferences


@dataclass(frozen=True)
class Layout:
    """Everything a process needs to attach: block name and specs (pickled once, at spawn)."""

    block: str
    specs: tuple[ArraySpec, ...]
    chunk_size: int
    action_dim: int
    camera_names: tuple[str, ...]
    info_keys: tuple[str, ...]
    info_scalar: tuple[bool, ...] = field(default=())


def build_specs(
    state_shape: tuple[int, int],
    images: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    chunk_size: int,
    action_dim: int,
) -> tuple[list[ArraySpec], tuple[str, ...], tuple[bool, ...]]:
    """Specs from the first observation's history. Non-numeric ``info`` entries are not shared
    (a policy that needs them cannot run under RTC; said in the log)."""
    specs = [
        ArraySpec("ctrl.seq", (1,), "int64"),
        ArraySpec("ctrl.i64", (len(RequestSlot),), "int64"),
        ArraySpec("ctrl.f64", (len(RequestValue),), "float64"),
        ArraySpec("obs.state", tuple(state_shape), "float32"),
    ]
    for name, arr in images.items():
        specs.append(ArraySpec(f"obs.img.{name}", tuple(arr.shape), str(arr.dtype)))
    info_keys, info_scalar = [], []
    for key, value in info.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            log.info("rtc: info[%r] (%s) is not numeric; not shared with the inference process", key, arr.dtype)
            continue
        specs.append(ArraySpec(f"obs.info.{key}", tuple(arr.shape), str(arr.dtype)))
        info_keys.append(key)
        info_scalar.append(arr.ndim == 0 and not isinstance(value, np.ndarray))
    specs += [
        ArraySpec("req.prev", (chunk_size, action_dim), "float32"),
        ArraySpec("res.seq", (1,), "int64"),
        ArraySpec("res.i64", (len(ReplySlot),), "int64"),
        ArraySpec("res.f64", (len(ReplyValue),), "float64"),
        ArraySpec("res.model", (chunk_size, action_dim), "float32"),
        ArraySpec("res.robot", (chunk_size, action_dim), "float32"),
        ArraySpec("res.error", (ERROR_BYTES,), "uint8"),
        ArraySpec("hb.f64", (len(HeartbeatTime),), "float64"),
        ArraySpec("hb.i64", (len(HeartbeatState),), "int64"),
    ]
    return specs, tuple(info_keys), tuple(info_scalar)


class SharedState:
    """Typed access to the block for both sides."""

    def __init__(self, arrays: SharedArrays, layout: Layout) -> None:
        self.arrays = arrays
        self.layout = layout
        a = arrays.arrays
        self.ctrl_lock = SeqLock(a["ctrl.seq"])
        self.res_lock = SeqLock(a["res.seq"])
        self.ctrl_i64, self.ctrl_f64 = a["ctrl.i64"], a["ctrl.f64"]
        self.res_i64, self.res_f64 = a["res.i64"], a["res.f64"]
        self.hb_f64, self.hb_i64 = a["hb.f64"], a["hb.i64"]
        self.obs_state = a["obs.state"]
        self.obs_images = {n: a[f"obs.img.{n}"] for n in layout.camera_names}
        self.obs_info = {k: a[f"obs.info.{k}"] for k in layout.info_keys}
        self.req_prev = a["req.prev"]
        self.res_model, self.res_robot = a["res.model"], a["res.robot"]
        self.res_error = a["res.error"]

    # ------------------------------------------------------------ control side (writer of ctrl)
    def publish_request(
        self,
        state: np.ndarray,
        images: Mapping[str, np.ndarray] | Callable[[dict[str, np.ndarray]], None],
        info: Mapping[str, Any],
        counters: Mapping[int, int],
        obs_time: float,
        tick_time: float,
        prev: np.ndarray | None = None,
        max_guidance_weight: float = 0.0,
    ) -> None:
        """One request: the observation of this tick, its counters and ``prev`` (model space; None
        leaves the previous contents, unused by a plain predict), all under one seqlock write.

        ``images`` is either the frames or a function that copies them into the block's image
        arrays (``ObservationHistory.copy_images_into``: the frames' one copy). If that raises, the
        counters are not written, so the inference process sees no new request."""
        self.ctrl_lock.write_begin()
        try:
            if callable(images):
                images(self.obs_images)
            else:
                for name, dst in self.obs_images.items():
                    np.copyto(dst, images[name])
            np.copyto(self.obs_state, state, casting="unsafe")
            for key, dst in self.obs_info.items():
                value = np.asarray(info.get(key, 0))
                if value.shape == dst.shape:
                    np.copyto(dst, value, casting="unsafe")
            for index, value in counters.items():
                self.ctrl_i64[index] = value
            self.ctrl_f64[RequestValue.OBS_TIME] = obs_time
            self.ctrl_f64[RequestValue.TICK_TIME] = tick_time
            self.ctrl_f64[RequestValue.MAX_GUIDANCE_WEIGHT] = max_guidance_weight
            if prev is not None:
                np.copyto(self.req_prev, prev, casting="unsafe")
        finally:
            self.ctrl_lock.write_end()

    def set_counters(self, counters: Mapping[int, int]) -> None:
        self.ctrl_lock.write_begin()
        try:
            for index, value in counters.items():
                self.ctrl_i64[index] = value
        finally:
            self.ctrl_lock.write_end()

    def read_result(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bytes]:
        def copy() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, bytes]:
            i64 = self.res_i64.copy()
            used = int(i64[ReplySlot.ERROR_LEN]) if i64[ReplySlot.FAILED] else 0
            return (
                self.res_model.copy(),
                self.res_robot.copy(),
                i64,
                self.res_f64.copy(),
                self.res_error[: max(0, min(used, ERROR_BYTES))].tobytes(),
            )

        return self.res_lock.read(copy)

    # ------------------------------------------------------------ inference side
    def read_counters(self) -> np.ndarray:
        return self.ctrl_lock.read(lambda: self.ctrl_i64.copy())

    def read_snapshot(self) -> dict[str, Any]:
        def copy() -> dict[str, Any]:
            return {
                "i64": self.ctrl_i64.copy(),
                "f64": self.ctrl_f64.copy(),
                "state": self.obs_state.copy(),
                "images": {n: a.copy() for n, a in self.obs_images.items()},
                "info": {k: a.copy() for k, a in self.obs_info.items()},
                "prev": self.req_prev.copy(),
            }

        snap = self.ctrl_lock.read(copy)
        snap["info"] = {
            k: (v.item() if scalar else v) for (k, v), scalar in zip(snap["info"].items(), self.layout.info_scalar)
        }
        return snap

    def publish_result(
        self,
        model: np.ndarray | None,
        robot: np.ndarray | None,
        meta: Mapping[int, int],
        times: Mapping[int, float],
        error: bytes = b"",
    ) -> int:
        """One result: the chunks, or (``model`` None) a failed inference's ``error`` message."""
        self.res_lock.write_begin()
        try:
            failed = model is None
            if not failed:
                np.copyto(self.res_model, model, casting="unsafe")
                np.copyto(self.res_robot, robot, casting="unsafe")
            message = error[:ERROR_BYTES] if failed else b""
            self.res_error[: len(message)] = np.frombuffer(message, dtype=np.uint8)
            self.res_i64[ReplySlot.FAILED] = int(failed)
            self.res_i64[ReplySlot.ERROR_LEN] = len(message)
            for index, value in meta.items():
                self.res_i64[index] = value
            for index, value in times.items():
                self.res_f64[index] = value
            self.res_i64[ReplySlot.SEQ] += 1
            seq = int(self.res_i64[ReplySlot.SEQ])
        finally:
            self.res_lock.write_end()
        return seq


# ---------------------------------------------------------------- the schema on this wire
def encode_request(shared: SharedState, request: Any, episode_no: int, tick_time: float) -> None:
    """Publish an ``InferenceRequest``: the history's newest state ring, its frames straight from
    their rings into the block (the frames' one copy), the numeric info, and the guide."""
    history = request.history
    snap = history.snapshot(images=False)
    last = history.last
    guide = request.guide
    counters = {
        RequestSlot.EPISODE: episode_no,
        RequestSlot.TICK: request.tick,
        RequestSlot.SEQ: request.seq,
        RequestSlot.EXECUTE_HORIZON: guide.execute_horizon if guide is not None else 0,
        RequestSlot.DELAY_TICKS: guide.delay_ticks if guide is not None else 0,
        RequestSlot.GUIDED: int(guide is not None),
    }
    if guide is not None:
        counters[RequestSlot.GUIDANCE] = GUIDANCE_CODES.index(guide.guidance)
        counters[RequestSlot.SCHEDULE] = SCHEDULE_CODES.index(guide.schedule)
    shared.publish_request(
        snap.state,
        history.copy_images_into,
        last.info if last is not None else {},
        counters,
        obs_time=snap.timestamp,
        tick_time=tick_time,
        prev=guide.prev_model if guide is not None else None,
        max_guidance_weight=guide.max_guidance_weight if guide is not None else 0.0,
    )


def decode_request(shared: SharedState) -> tuple[int, Any, Any]:
    """The newest request as (seq, ``ObservationPayload``, ``Guide`` or None)."""
    from algorithms.transport import ObservationPayload
    from policies.runner import Guide

    snap = shared.read_snapshot()
    i64, f64 = snap["i64"], snap["f64"]
    guide = None
    if i64[RequestSlot.GUIDED]:
        guide = Guide(
            snap["prev"],
            int(i64[RequestSlot.DELAY_TICKS]),
            int(i64[RequestSlot.EXECUTE_HORIZON]),
            GUIDANCE_CODES[int(i64[RequestSlot.GUIDANCE])],
            SCHEDULE_CODES[int(i64[RequestSlot.SCHEDULE])],
            float(f64[RequestValue.MAX_GUIDANCE_WEIGHT]),
        )
    obs = ObservationPayload(snap["state"], snap["images"], snap["info"], float(f64[RequestValue.OBS_TIME]))
    return int(i64[RequestSlot.SEQ]), obs, guide


def encode_reply(
    shared: SharedState,
    request_seq: int,
    model: np.ndarray,
    robot: np.ndarray,
    t_start: float,
    t_end: float,
    policy_ms: float,
    info: Mapping[str, Any] | None = None,
) -> int:
    """Publish a result; ``info`` is the policy's ``last_info`` (keys this wire has no slot for are
    left out, a key it did not report is NaN)."""
    info = info or {}
    values = {ReplyValue.T_START: t_start, ReplyValue.T_END: t_end, ReplyValue.POLICY_MS: policy_ms}
    for key, slot in REPLY_INFO_SLOTS.items():
        value = info.get(key)
        values[slot] = float("nan") if value is None else float(value)
    return shared.publish_result(model, robot, {ReplySlot.REQUEST_SEQ: request_seq}, values)


def encode_error_reply(shared: SharedState, request_seq: int, message: str, t_start: float, t_end: float) -> int:
    """Publish that the inference for ``request_seq`` failed (the policy raised): no chunk, the
    message (cut to ``ERROR_BYTES`` on a character boundary)."""
    raw = message.encode("utf-8")[:ERROR_BYTES].decode("utf-8", errors="ignore").encode("utf-8")
    values = {ReplyValue.T_START: t_start, ReplyValue.T_END: t_end, ReplyValue.POLICY_MS: 0.0}
    values.update({slot: float("nan") for slot in REPLY_INFO_SLOTS.values()})
    return shared.publish_result(None, None, {ReplySlot.REQUEST_SEQ: request_seq}, values, error=raw)


def decode_reply(shared: SharedState) -> tuple[int, Any]:
    """(published result counter, ``InferenceReply``) of the result in the block; a failed
    inference is a reply with ``error`` set (``inference_error``) and no chunk."""
    from algorithms.transport import InferenceReply
    from services.errors import FaultKind

    model, robot, meta, values, error = shared.read_result()
    times = (float(values[ReplyValue.T_START]), float(values[ReplyValue.T_END]))
    if meta[ReplySlot.FAILED]:
        message = f"inference failed: {error.decode('utf-8', errors='replace')}"
        return int(meta[ReplySlot.SEQ]), InferenceReply(
            int(meta[ReplySlot.REQUEST_SEQ]), None, None, *times, error=(message, FaultKind.INFERENCE_ERROR)
        )
    fields = {key: float(values[slot]) for key, slot in REPLY_INFO_SLOTS.items() if not np.isnan(values[slot])}
    reply = InferenceReply(
        int(meta[ReplySlot.REQUEST_SEQ]), model, robot, *times, float(values[ReplyValue.POLICY_MS]), fields
    )
    return int(meta[ReplySlot.SEQ]), reply
