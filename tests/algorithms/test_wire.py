"""The one request/reply every Ray carrier uses (``algorithms/wire.py``): what goes in comes out."""

from __future__ import annotations

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from algorithms.wire import (
    OVERLOADED,
    chunk_reply,
    decode_request,
    encode_request,
    error_reply,
    numeric_info,
    payload_bytes,
)
from policies.base import Guidance, Schedule
from policies.runner import Guide


def test_raw_request_roundtrip_is_exact_and_drops_non_numeric_info():
    rng = np.random.default_rng(0)
    state = rng.standard_normal((2, 14)).astype(np.float32)
    images = {"head": rng.integers(0, 255, (1, 3, 24, 32), dtype=np.uint8)}
    info = {"step": 3, "cube_init_pose": np.arange(7.0), "task": "transfer", "success": False}
    payload = encode_request(7, state, images, info, None, robot="left")
    assert payload["seq"] == 7 and payload["robot"] == "left" and payload["guide"] is None
    s, im, inf, guide = decode_request(payload)
    np.testing.assert_array_equal(s, state)
    np.testing.assert_array_equal(im["head"], images["head"])
    assert set(inf) == {"step", "cube_init_pose", "success"} and inf["step"] == 3
    assert guide is None
    assert numeric_info({"x": "no"}) == {}
    assert payload_bytes(payload) >= state.nbytes + images["head"].nbytes


def test_jpeg_frames_are_smaller_and_close():
    y, x = np.mgrid[0:96, 0:128]
    frame = np.stack([(x * 2) % 256, (y * 2) % 256, (x + y) % 256]).astype(np.uint8)
    images = {"head": np.stack([frame, frame])}  # (2, 3, 96, 128)
    payload = encode_request(1, np.zeros((1, 4), np.float32), images, {}, None, jpeg_quality=90)
    assert isinstance(payload["images"]["head"], list) and len(payload["images"]["head"]) == 2
    assert payload_bytes(payload) < images["head"].nbytes / 3
    _, im, _, _ = decode_request(payload)
    assert im["head"].shape == images["head"].shape and im["head"].dtype == np.uint8
    assert np.mean(np.abs(im["head"].astype(int) - images["head"].astype(int))) < 4.0


@given(
    h=st.integers(1, 12),
    a=st.integers(1, 4),
    d=st.integers(0, 12),
    s=st.integers(0, 12),
    guidance=st.sampled_from(list(Guidance)),
    schedule=st.sampled_from(list(Schedule)),
    beta=st.floats(0.01, 100.0),
    seed=st.integers(0, 2**16),
)
def test_every_guide_field_crosses_under_its_own_name(h, a, d, s, guidance, schedule, beta, seed):
    prev = np.random.default_rng(seed).standard_normal((h, a)).astype(np.float32)
    guide = Guide(prev, d, s, guidance, schedule, beta)
    payload = encode_request(0, np.zeros((1, 3), np.float32), {}, {}, guide)
    assert set(payload["guide"]) == {
        "prev_model",
        "delay_ticks",
        "execute_horizon",
        "guidance",
        "schedule",
        "max_guidance_weight",
    }
    _, _, _, back = decode_request(payload)
    np.testing.assert_array_equal(back.prev_model, prev)
    assert (back.delay_ticks, back.execute_horizon, back.guidance, back.schedule) == (d, s, guidance, schedule)
    assert back.max_guidance_weight == beta


def test_replies_with_and_without_a_chunk():
    model = np.ones((4, 2), np.float32)
    ok = chunk_reply(3, model, 2 * model, 1.5, 2.5, {"bid_choice": 1}, queue_ms=0.1)
    assert ok["error"] is None and ok["seq"] == 3 and ok["info"] == {"bid_choice": 1} and ok["queue_ms"] == 0.1
    assert ok["policy_ms"] == 1.5 and ok["server_ms"] == 2.5
    bad = error_reply("queue full", OVERLOADED, queue_ms=900.0)
    assert bad["model"] is None and bad["error_kind"] == OVERLOADED and bad["queue_ms"] == 900.0
