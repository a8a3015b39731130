"""msgpack-numpy codec (openpi's wire format) and the observation key map."""

from __future__ import annotations

import msgpack
import numpy as np
import pytest

from policies.openpi import codec
from policies.openpi.obs_map import ObsKeyMap, images_to_uint8, wire_safe


def test_roundtrip_nested_tree_keeps_dtype_shape_values():
    tree = {
        "actions": np.arange(50 * 14, dtype=np.float32).reshape(50, 14),
        "img": np.random.default_rng(0).integers(0, 255, (3, 240, 320), dtype=np.uint8),
        "nested": {"i": np.int64(7), "f": np.float32(0.5), "list": [1, "a", None, True]},
        "prompt": "pick up the cube",
    }
    out = codec.unpackb(codec.packb(tree))
    assert out["actions"].dtype == np.float32 and out["actions"].shape == (50, 14)
    np.testing.assert_array_equal(out["actions"], tree["actions"])
    np.testing.assert_array_equal(out["img"], tree["img"])
    assert out["nested"]["i"] == 7 and isinstance(out["nested"]["i"], np.int64)
    assert isinstance(out["nested"]["f"], np.float32)
    assert out["nested"]["list"] == [1, "a", None, True]
    assert out["prompt"] == "pick up the cube"


def test_wire_format_is_openpis():
    """The exact map openpi_client.msgpack_numpy writes: bytes keys, dtype.str, C-order data."""
    arr = np.arange(6, dtype="<f4").reshape(2, 3)
    raw = msgpack.unpackb(codec.packb({"a": arr}), raw=False)
    enc = raw["a"]
    assert set(enc) == {b"__ndarray__", b"data", b"dtype", b"shape"}
    assert enc[b"__ndarray__"] is True and enc[b"dtype"] == "<f4" and enc[b"shape"] == [2, 3]
    assert enc[b"data"] == arr.tobytes()
    # and a message written by hand in that format decodes
    manual = msgpack.packb(
        {
            "x": {b"__ndarray__": True, b"data": arr.tobytes(), b"dtype": "<f4", b"shape": (2, 3)},
            "s": {b"__npgeneric__": True, b"data": 3, b"dtype": "<i8"},
        },
        use_bin_type=True,
    )
    out = codec.unpackb(manual)
    np.testing.assert_array_equal(out["x"], arr)
    assert out["s"] == 3 and out["s"].dtype == np.int64


def test_non_contiguous_arrays_are_sent_in_c_order():
    arr = np.arange(24, dtype=np.float64).reshape(4, 6)[:, ::2].T
    np.testing.assert_array_equal(codec.unpackb(codec.packb(arr)), arr)


@pytest.mark.parametrize("bad", [np.array([object()]), np.array([1 + 2j]), np.zeros(2, dtype=[("a", "f4")])])
def test_object_complex_void_never_go_on_the_wire(bad):
    with pytest.raises(codec.CodecError):
        codec.packb({"x": bad})


def test_refuses_object_dtype_on_decode_and_arbitrary_python_objects():
    evil = msgpack.packb({b"__ndarray__": True, b"data": b"\0" * 8, b"dtype": "|O", b"shape": [1]}, use_bin_type=True)
    with pytest.raises(codec.CodecError):
        codec.unpackb(evil)
    with pytest.raises(TypeError):
        codec.packb({"x": object()})
    with pytest.raises(codec.CodecError):
        codec.unpackb(b"\xc1garbage")


@pytest.mark.parametrize("layout", ["chw", "hwc"])
def test_obs_map_encode_decode_roundtrip(layout):
    rng = np.random.default_rng(1)
    m = ObsKeyMap.from_config(
        {
            "state": "state",
            "images": {"head": "images/cam_high"},
            "image_layout": layout,
            "state_history": True,
            "info": "info",
        },
        ("head", "left"),
    )
    assert m.images == {"head": "images/cam_high", "left": "observation/images/left"}
    state = rng.normal(size=(2, 14)).astype(np.float32)
    imgs = {c: rng.integers(0, 255, (1, 3, 24, 32), dtype=np.uint8) for c in ("head", "left")}
    req = m.encode(state, imgs, prompt="go", info={"cube": np.ones(3), "name": "x", "obj": object()})
    expect = (24, 32, 3) if layout == "hwc" else (3, 24, 32)
    assert req["images/cam_high"].shape == expect and req["state"].shape == (2, 14)
    assert req["prompt"] == "go" and "obj" not in req["info"]
    state2, imgs2, prompt, info = m.decode(codec.unpackb(codec.packb(req)))
    np.testing.assert_array_equal(state2, state)
    for c in imgs:
        np.testing.assert_array_equal(imgs2[c], imgs[c])
    assert prompt == "go" and info["name"] == "x"


def test_obs_map_newest_state_only_by_default_and_clear_errors():
    m = ObsKeyMap.from_config(None, ("head",))
    req = m.encode(np.arange(28, dtype=np.float32).reshape(2, 14), {"head": np.zeros((1, 3, 4, 4), np.uint8)})
    np.testing.assert_array_equal(req["observation/state"], np.arange(14, 28))
    with pytest.raises(KeyError, match="head"):
        m.encode(np.zeros((1, 14)), {})
    with pytest.raises(KeyError, match="observation/state"):
        m.decode({"state": np.zeros(3)})
    with pytest.raises(ValueError, match="unknown entries"):
        ObsKeyMap.from_config({"sate": "x"})
    with pytest.raises(ValueError, match="image_layout"):
        ObsKeyMap.from_config({"image_layout": "nchw"})


def test_obs_map_nested_keys_and_several_state_keys_roundtrip():
    """ALOHA-style nesting and DROID-style state from several keys, from config alone."""
    rng = np.random.default_rng(2)
    state = rng.normal(size=(1, 8)).astype(np.float32)
    img = {"head": rng.integers(0, 255, (1, 3, 8, 8), dtype=np.uint8)}
    nested = ObsKeyMap.from_config({"nested": True, "state": "state", "images": {"head": "images/cam_high"}}, ("head",))
    req = nested.encode(state, img, prompt="go")
    assert set(req) == {"state", "images", "prompt"} and set(req["images"]) == {"cam_high"}
    np.testing.assert_array_equal(req["images"]["cam_high"], img["head"][0])
    state2, imgs2, prompt, _ = nested.decode(codec.unpackb(codec.packb(req)))
    np.testing.assert_array_equal(state2, state)
    np.testing.assert_array_equal(imgs2["head"], img["head"])
    assert prompt == "go" and nested.as_dict()["nested"] is True
    split = ObsKeyMap.from_config(
        {
            "state": {"observation/gripper_position": [7, 8], "observation/joint_position": [0, 7]},
            "images": {"head": "observation/exterior_image_1_left"},
            "image_layout": "hwc",
        },
        ("head",),
        state_dim=8,
    )
    req = split.encode(state, img)
    np.testing.assert_array_equal(req["observation/joint_position"], state[0, :7])
    np.testing.assert_array_equal(req["observation/gripper_position"], state[0, 7:])
    assert req["observation/exterior_image_1_left"].shape == (8, 8, 3)
    np.testing.assert_array_equal(split.decode(req)[0], state)
    assert ObsKeyMap.from_config(split.as_dict(), ("head",), 8) == split


def test_obs_map_state_slices_are_checked():
    with pytest.raises(ValueError, match=r"obs_keys.state.a: \[0, 9\] is not a slice .* <= state_dim=8"):
        ObsKeyMap.from_config({"state": {"a": [0, 9]}}, (), state_dim=8)
    with pytest.raises(ValueError, match="overlap"):
        ObsKeyMap.from_config({"state": {"a": [0, 4], "b": [3, 8]}})
    with pytest.raises(ValueError, match=r"expected \[start, stop\]"):
        ObsKeyMap.from_config({"state": {"a": 3}})
    gap = ObsKeyMap.from_config({"state": {"a": [0, 2], "b": [3, 5]}})
    with pytest.raises(ValueError, match=r"dims \[2, 3\) come from no key"):
        gap.decode({"a": np.zeros(2), "b": np.zeros(2)})
    with pytest.raises(KeyError, match="images/cam_high"):
        ObsKeyMap.from_config({"nested": True, "images": {"head": "images/cam_high"}}, ("head",)).decode(
            {"observation": {"state": np.zeros(3)}, "images": {}}
        )


def test_images_to_uint8_inverts_model_scaling():
    u8 = np.arange(256, dtype=np.uint8).reshape(1, 1, 16, 16)
    back = images_to_uint8({"c": u8.astype(np.float32) / 255.0})["c"]
    np.testing.assert_array_equal(back, u8)
    assert wire_safe({"a": np.array(["s"]), "b": [np.float64(1.5)]}) == {"b": [1.5]}
