"""The one request and reply that cross a process or machine boundary over Ray: plain dicts of numpy
arrays (Ray pickles them with zero-copy buffers). Pure functions, no Ray, so both ends of the split
actor (``algorithm=rtc_split``) and of the fleet service (``algorithm=rtc_fleet``), the benchmarks and
the tests share them. The shared-memory transport carries the same fields in fixed slots
(``algorithms/rtc/layout.py``); openpi's websocket keeps openpi's own protocol (``inference/serve.py``).

Request:
- ``seq``: the planner's request id; ``robot``: the robot's name (the fleet's per-robot numbers).
- ``state`` ``(state_history, state_dim)`` float32 in robot units; ``images`` camera ->
  ``(num_img_obs, 3, H, W)`` uint8, raw or as a list of JPEG byte strings (``jpeg_quality``: at
  320x240 a raw frame is 230 kB, a quality-90 JPEG 10-20 kB, which matters on a 1 Gb/s link and costs
  ~1 ms to code); ``info``: the numeric extras of the observation.
- ``guide``: None (plain predict) or the ``policies.runner.Guide`` fields under their own names
  (``prev_model``, ``delay_ticks``, ``execute_horizon``, ``guidance``, ``schedule``,
  ``max_guidance_weight``).

Reply: ``model`` / ``robot`` chunks ``(H, action_dim)`` float32, ``policy_ms`` (the policy call; for a
batch, the whole batch's), ``server_ms`` (in the server, end to end), ``info`` (what the policy
reported with the chunk, e.g. bidirectional decoding's choice), and ``seq``; or ``error`` (one line)
with ``error_kind``. A carrier may add numbers of its own (the fleet: ``queue_ms``, ``batch_size``,
``replica``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

from policies.base import Guidance, Schedule
from policies.runner import Guide

log = logging.getLogger(__name__)

# error_kind of a reply that carries no chunk
OVERLOADED = "overloaded"  # the fleet's queue was full
REFUSED = "refused"  # the policy refused the request (e.g. a guidance it does not have)

_warned_keys: set[str] = set()


def numeric_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of ``info`` (what the shared-memory layout shares too); strings and objects
    stay on the robot, said once per key in the log."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            if key not in _warned_keys:
                _warned_keys.add(key)
                log.info("info[%r] (%s) is not numeric; it is not sent to the policy", key, arr.dtype)
            continue
        out[key] = value if isinstance(value, np.ndarray) else arr.item() if arr.ndim == 0 else arr
    return out


def encode_frames(frames: np.ndarray, jpeg_quality: int | None) -> Any:
    """(N, 3, H, W) uint8 -> the same array (raw) or a list of N JPEG byte strings."""
    if jpeg_quality is None:
        return np.ascontiguousarray(frames)
    import cv2

    out = []
    for frame in frames:
        hwc = np.ascontiguousarray(np.transpose(frame, (1, 2, 0)))
        ok, buf = cv2.imencode(".jpg", hwc, [int(cv2.IMWRITE_JPEG_QUALITY), int(jpeg_quality)])
        if not ok:
            raise ValueError("cv2.imencode failed on a camera frame")
        out.append(buf.tobytes())
    return out


def decode_frames(data: Any) -> np.ndarray:
    """Inverse of :func:`encode_frames` (JPEG is lossy: values within a few units)."""
    if isinstance(data, np.ndarray):
        return data
    import cv2

    frames = []
    for buf in data:
        hwc = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_COLOR)
        if hwc is None:
            raise ValueError("cv2.imdecode could not decode a camera frame")
        frames.append(np.transpose(hwc, (2, 0, 1)))
    return np.ascontiguousarray(np.stack(frames))


def encode_guide(guide: Guide | None) -> dict[str, Any] | None:
    if guide is None:
        return None
    return {
        "prev_model": np.ascontiguousarray(guide.prev_model, np.float32),
        "delay_ticks": int(guide.delay_ticks),
        "execute_horizon": int(guide.execute_horizon),
        "guidance": str(guide.guidance),
        "schedule": str(guide.schedule),
        "max_guidance_weight": float(guide.max_guidance_weight),
    }


def decode_guide(data: Mapping[str, Any] | None) -> Guide | None:
    if data is None:
        return None
    return Guide(
        np.asarray(data["prev_model"], np.float32),
        int(data["delay_ticks"]),
        int(data["execute_horizon"]),
        Guidance(data["guidance"]),
        Schedule(data["schedule"]),
        float(data["max_guidance_weight"]),
    )


def encode_request(
    seq: int,
    state: np.ndarray,
    images: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    guide: Guide | None,
    *,
    robot: str = "",
    jpeg_quality: int | None = None,
) -> dict[str, Any]:
    """One request from an observation and the planner's guide."""
    return {
        "seq": int(seq),
        "robot": str(robot),
        "state": np.ascontiguousarray(state, dtype=np.float32),
        "images": {name: encode_frames(frames, jpeg_quality) for name, frames in images.items()},
        "info": numeric_info(info),
        "guide": encode_guide(guide),
    }


def decode_request(
    request: Mapping[str, Any],
) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any], Guide | None]:
    """Inverse of :func:`encode_request`: state, images, info and the ``Guide`` (or None)."""
    images = {name: decode_frames(data) for name, data in request["images"].items()}
    state = np.asarray(request["state"], np.float32)
    return state, images, dict(request.get("info") or {}), decode_guide(request.get("guide"))


def chunk_reply(
    seq: Any,
    model: np.ndarray,
    robot: np.ndarray,
    policy_ms: float,
    server_ms: float,
    info: Mapping[str, Any],
    **extra: Any,
) -> dict[str, Any]:
    """A reply that carries a chunk."""
    return {
        "seq": seq,
        "model": model,
        "robot": robot,
        "policy_ms": float(policy_ms),
        "server_ms": float(server_ms),
        "info": dict(info),
        "error": None,
        "error_kind": None,
        **extra,
    }


def error_reply(message: str, kind: str, **extra: Any) -> dict[str, Any]:
    """A reply without a chunk: ``message`` says why, ``kind`` is what the robot side makes of it."""
    return {"model": None, "robot": None, "error": message, "error_kind": kind, **extra}


def payload_bytes(payload: Mapping[str, Any]) -> int:
    """Approximate size on the wire (arrays and byte strings), for telemetry."""
    total = 0

    def walk(v: Any) -> None:
        nonlocal total
        if isinstance(v, np.ndarray):
            total += v.nbytes
        elif isinstance(v, (bytes, bytearray)):
            total += len(v)
        elif isinstance(v, Mapping):
            for x in v.values():
                walk(x)
        elif isinstance(v, (list, tuple)):
            for x in v:
                walk(x)
        else:
            total += 8

    walk(payload)
    return total
