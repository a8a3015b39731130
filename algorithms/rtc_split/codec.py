"""What travels between the control loop and the remote inference actor, as compact numpy.

Pure functions (no Ray, no I/O) so they are unit-tested on their own. An observation is the
history snapshot the local RTC runtime puts in shared memory: state (state_history, state_dim)
float32, per camera (num_img_obs, 3, H, W) uint8, and the numeric ``info`` extras. Frames are sent
raw, or JPEG-compressed (``cv2.imencode``) when ``jpeg_quality`` is set: at 320x240 a raw frame is
230 kB, a quality-90 JPEG about 10-20 kB, which matters on a 1 Gb/s link and costs ~1 ms to code.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

_warned_keys: set[str] = set()


def numeric_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of ``info`` (what the RTC shared-memory layout shares too)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        arr = np.asarray(value)
        if arr.dtype.kind not in "biuf":
            if key not in _warned_keys:
                _warned_keys.add(key)
                log.info("split: info[%r] (%s) is not numeric; not sent to the inference actor", key, arr.dtype)
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


def encode_observation(
    state: np.ndarray, images: Mapping[str, np.ndarray], info: Mapping[str, Any], jpeg_quality: int | None = None
) -> dict[str, Any]:
    return {
        "state": np.ascontiguousarray(state, dtype=np.float32),
        "images": {name: encode_frames(frames, jpeg_quality) for name, frames in images.items()},
        "info": numeric_info(info),
    }


def decode_observation(payload: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any]]:
    images = {name: decode_frames(data) for name, data in payload["images"].items()}
    return payload["state"], images, dict(payload["info"])


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


def encode_request(obs: Any, guide: Any, jpeg_quality: int | None = None) -> dict[str, Any]:
    """An ``InferenceRequest``'s observation (``ObservationPayload``) and ``Guide`` (or None: plain
    predict) as the dict the Ray actor takes."""
    request: dict[str, Any] = {"obs": encode_observation(obs.state, obs.images, obs.info, jpeg_quality)}
    if guide is not None:
        request.update(
            prev_model=np.ascontiguousarray(guide.prev_model, np.float32),
            delay_ticks=int(guide.delay_ticks),
            executed_ticks=int(guide.executed_ticks),
            guidance=str(guide.guidance),
            schedule=str(guide.schedule),
            max_guidance_weight=float(guide.max_guidance_weight),
        )
    return request


def decode_request(request: Mapping[str, Any]) -> tuple[np.ndarray, dict[str, np.ndarray], dict[str, Any], Any]:
    """Inverse of :func:`encode_request`: state, images, info and the ``Guide`` (or None)."""
    from policies.base import Guidance, Schedule
    from policies.runner import Guide

    state, images, info = decode_observation(request["obs"])
    guide = None
    if request.get("prev_model") is not None:
        guide = Guide(
            np.asarray(request["prev_model"], np.float32),
            int(request["delay_ticks"]),
            int(request["executed_ticks"]),
            Guidance(request["guidance"]),
            Schedule(request["schedule"]),
            float(request["max_guidance_weight"]),
        )
    return state, images, info, guide
