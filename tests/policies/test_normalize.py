import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from policies.normalize import Normalizer, NormalizerError

finite = st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=32)


def _data(dim, n=64, seed=0):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, dim)) * rng.uniform(0.1, 5, size=dim) + rng.uniform(-3, 3, size=dim)


@pytest.mark.parametrize("mode", ["zscore", "minmax", "quantile", "identity"])
@settings(max_examples=40, deadline=None)
@given(x=arrays(np.float64, (5, 4), elements=finite))
def test_round_trip(mode, x):
    stats = Normalizer.compute_stats({"state": _data(4), "action": _data(4, seed=1)})
    norm = Normalizer(stats, {"state": mode, "action": mode})
    back = norm.action_to_robot(norm.action_to_model(x))
    np.testing.assert_allclose(back, x.astype(np.float32), rtol=1e-4, atol=1e-2)


def test_modes_map_to_expected_ranges():
    data = _data(3, n=10_000)
    stats = Normalizer.compute_stats({"state": data, "action": data})
    z = Normalizer(stats, {"state": "zscore", "action": "zscore"}).state_to_model(data)
    np.testing.assert_allclose(z.mean(0), 0, atol=1e-3)
    np.testing.assert_allclose(z.std(0), 1, atol=1e-3)
    m = Normalizer(stats, {"state": "minmax", "action": "minmax"}).state_to_model(data)
    np.testing.assert_allclose(m.min(0), -1, atol=1e-4)
    np.testing.assert_allclose(m.max(0), 1, atol=1e-4)
    q = Normalizer(stats, {"state": "quantile", "action": "quantile"}).state_to_model(data)
    inside = np.mean((q >= -1) & (q <= 1), axis=0)
    assert np.all((inside > 0.97) & (inside < 0.99))


def test_constant_dimension_does_not_blow_up():
    data = np.ones((50, 2))
    stats = Normalizer.compute_stats({"state": data, "action": data})
    out = Normalizer(stats, {"state": "zscore"}).state_to_model(data)
    assert np.all(np.isfinite(out))


@pytest.mark.parametrize("suffix", [".json", ".npz", ".safetensors"])
def test_file_formats_round_trip(tmp_path, suffix):
    stats = Normalizer.compute_stats({"state": _data(3), "action": _data(2, seed=2)})
    path = tmp_path / f"stats{suffix}"
    flat = {f"{k}.{s}": v.astype(np.float32) for k, st_ in stats.items() for s, v in st_.items()}
    if suffix == ".json":
        Normalizer(stats, {"state": "zscore", "action": "quantile"}).save(path)
    elif suffix == ".npz":
        np.savez(path, **flat)
    else:
        from safetensors.numpy import save_file

        save_file(flat, str(path))
    norm = Normalizer.from_file(path, modes={"state": "zscore", "action": "quantile"})
    np.testing.assert_allclose(norm.stats["action"]["q99"], stats["action"]["q99"], rtol=1e-6)
    norm.require("state", 3)
    with pytest.raises(NormalizerError, match="state.mean have dim 3, data has dim 4"):
        norm.require("state", 4)


def test_missing_key_is_a_clear_error(tmp_path):
    path = tmp_path / "stats.json"
    path.write_text(json.dumps({"state": {"mean": [0.0], "std": [1.0]}}))
    with pytest.raises(NormalizerError, match="'action' lack \\['mean', 'std'\\]"):
        Normalizer.from_file(path)
    with pytest.raises(NormalizerError, match="does not exist"):
        Normalizer.from_file(tmp_path / "nope.json")


def test_policy_input_scales_images():
    norm = Normalizer.identity()
    img = np.full((1, 3, 4, 5), 255, dtype=np.uint8)
    inp = norm.policy_input(np.zeros((1, 2)), {"head": img}, {"step": 3})
    assert inp.images["head"].dtype == np.float32 and inp.images["head"].max() == 1.0
    assert inp.state.shape == (1, 2) and inp.info == {"step": 3}


def test_a_key_without_a_mode_is_never_identity():
    """A normalizer normalizes only the keys it was given a mode for; using another is an error at
    start (``require``) and at use, never robot units passed through as model units."""
    stats = Normalizer.compute_stats({"state": _data(3), "action": _data(3, seed=1)})
    norm = Normalizer(stats, {"state": "zscore"})
    norm.require("state", 3)
    with pytest.raises(NormalizerError, match="no mode for 'action'"):
        norm.require("action", 3)
    with pytest.raises(NormalizerError, match="no mode for 'action'"):
        norm.action_to_robot(np.zeros(3))
    with pytest.raises(NormalizerError, match="no mode for 'action'"):
        Normalizer().require("action", 3)


def test_identity_is_said_explicitly_for_every_key():
    norm = Normalizer.identity()
    assert norm.modes == {"state": "identity", "action": "identity"}
    norm.require("state", 5)
    norm.require("action", 7)
    x = np.arange(7, dtype=np.float32)
    np.testing.assert_array_equal(norm.action_to_robot(x), x)


def test_a_stats_file_that_lost_its_action_entry_is_refused(tmp_path):
    """The bundled format (``modes`` + ``stats``) with ``action`` deleted from both: the action would
    have been identity; it has no mode now."""
    stats = Normalizer.compute_stats({"state": _data(3), "action": _data(2, seed=2)})
    path = tmp_path / "stats.json"
    Normalizer(stats, {"state": "zscore", "action": "zscore"}).save(path)
    raw = json.loads(path.read_text())
    del raw["stats"]["action"], raw["modes"]["action"]
    path.write_text(json.dumps(raw))
    norm = Normalizer.from_file(path)
    with pytest.raises(NormalizerError, match="no mode for 'action'"):
        norm.require("action", 2)


@pytest.mark.parametrize("mode,missing", [("zscore", "std"), ("minmax", "max"), ("quantile", "q01")])
def test_a_mode_without_its_stats_is_refused(mode, missing):
    stats = Normalizer.compute_stats({"state": _data(3), "action": _data(3, seed=1)})
    del stats["action"][missing]
    with pytest.raises(NormalizerError, match=f"'action' lack \\['{missing}'\\] needed by mode '{mode}'"):
        Normalizer(stats, {"state": "zscore", "action": mode})


def test_an_unknown_mode_is_refused():
    with pytest.raises(NormalizerError, match="'tanh'; expected one of"):
        Normalizer({}, {"state": "tanh"})
