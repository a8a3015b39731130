"""What travels between a robot and the fleet service: plain dicts of numpy arrays (Ray pickles
them with zero-copy buffers). Pure functions, no Ray, so both ends and the tests share them.

Request: ``robot`` (the robot's name, for the service's per-robot numbers), ``seq``, ``state``
``(state_history, state_dim)`` float32 robot units, ``images`` camera -> ``(num_img_obs, 3, H, W)``
uint8, ``info`` numeric extras, and the RTC part the robot's own planner cut: ``prev`` (model space,
or None for a plain chunk), ``d`` (delay ticks), ``s`` (executed ticks), ``guidance``, ``schedule``,
``max_guidance_weight``. The service keeps none of it.

Reply: ``model``/``robot`` chunks ``(H, action_dim)`` float32, or ``error`` (a message) with
``error_kind`` (``overloaded`` | ``refused``); and the timings the robot records with the chunk:
``queue_ms`` (in the replica before its batch started), ``batch_size``, ``compute_ms`` (the batch's
policy call), ``server_ms`` (in the replica, end to end), ``replica`` (which replica answered).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

OVERLOADED = "overloaded"
REFUSED = "refused"


def numeric_info(info: Mapping[str, Any]) -> dict[str, Any]:
    """The numeric entries of ``info`` (strings and objects stay on the robot)."""
    out: dict[str, Any] = {}
    for key, value in info.items():
        arr = np.asarray(value)
        if arr.dtype.kind in "biuf":
            out[key] = arr.item() if arr.ndim == 0 else arr  # scalars stay scalars (hashable, as sent)
    return out


def make_request(
    robot: str,
    seq: int,
    state: np.ndarray,
    images: Mapping[str, np.ndarray],
    info: Mapping[str, Any],
    guide: Any | None,
) -> dict[str, Any]:
    """A request from a robot's observation and its planner's guide (``policies.runner.Guide`` or None)."""
    req: dict[str, Any] = {
        "robot": str(robot),
        "seq": int(seq),
        "state": np.ascontiguousarray(state, dtype=np.float32),
        "images": {name: np.ascontiguousarray(frames) for name, frames in images.items()},
        "info": numeric_info(info),
        "prev": None,
        "d": 0,
        "s": 0,
        "guidance": "none",
        "schedule": "exp",
        "max_guidance_weight": 5.0,
    }
    if guide is not None:
        req.update(
            prev=np.ascontiguousarray(guide.prev_model, dtype=np.float32),
            d=int(guide.delay_ticks),
            s=int(guide.executed_ticks),
            guidance=str(guide.guidance),
            schedule=str(guide.schedule),
            max_guidance_weight=float(guide.max_guidance_weight),
        )
    return req


def error_reply(message: str, kind: str, **timings: Any) -> dict[str, Any]:
    return {"model": None, "robot": None, "error": message, "error_kind": kind, **timings}
