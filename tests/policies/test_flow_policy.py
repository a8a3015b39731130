"""FlowPolicy: checkpoint round trip, config cross-checks, guided inference on a trained model.

A tiny model (300 steps, ~3 s of CPU training in a fixture) learns a synthetic task: the chunk is a ramp whose
start and slope are read from the state, plus an unobservable whole-chunk offset ~ N(0, 1) (the
multimodality RTC guidance resolves: it must pick the offset that continues prev). That makes "guidance pulls the prefix onto prev" a
property of a real learned velocity field, not of an untrained (zero-output) network.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from policies.base import Policy, PolicyInput
from policies.flow import FlowModel, FlowModelConfig, FlowPolicy
from policies.flow.checkpoint import DEFAULT_CHECKPOINT, load_model, resolve_path, save_checkpoint
from policies.guidance import prefix_weights
from policies.normalize import Normalizer
from policies.registry import POLICY_REGISTRY, build_policy

H, A, S = 8, 3, 4
CFG = FlowModelConfig(
    chunk_size=H,
    action_dim=A,
    state_dim=S,
    camera_names=("head",),
    image_size=(16, 16),
    image_downsample=1,
    dim=32,
    heads=2,
    expert_layers=1,
    prefix_layers=1,
    cnn_channels=(8, 8),
    mlp_ratio=2,
)


def synthetic_batch(n: int, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    state = torch.randn(n, S, generator=gen)
    ramp = torch.linspace(0, 1, H)[None, :, None]
    mode = torch.randn(n, 1, A, generator=gen)  # not observable: a whole-chunk offset
    actions = state[:, None, :A] + ramp * state[:, None, 3:4] + mode + 0.05 * torch.randn(n, H, A, generator=gen)
    images = torch.rand(n, 1, 3, 16, 16, generator=gen)
    return state, images, actions


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    model = FlowModel(CFG)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(300):  # ~3 s on one core; a fixed count keeps the result deterministic
        loss = model.loss(*synthetic_batch(64, gen))
        opt.zero_grad()
        loss.backward()
        opt.step()
    state, _, actions = synthetic_batch(256, gen)
    stats = Normalizer.compute_stats({"state": state.numpy(), "action": actions.reshape(-1, A).numpy()})
    out = tmp_path_factory.mktemp("flow_ckpt")
    save_checkpoint(out, model, Normalizer(stats, {"state": "zscore", "action": "zscore"}), meta={"test": True})
    return out


def make_obs(state: np.ndarray, seed: int = 0) -> PolicyInput:
    rng = np.random.default_rng(seed)
    return PolicyInput(
        state=np.asarray(state, np.float32)[None], images={"head": rng.random((1, 3, 16, 16), dtype=np.float32)}
    )


@pytest.fixture()
def policy(checkpoint: Path) -> FlowPolicy:
    return FlowPolicy(checkpoint=str(checkpoint), num_steps=10, seed=0)


def test_metadata_and_protocol(policy: FlowPolicy) -> None:
    m = policy.metadata
    assert (m.chunk_size, m.action_dim, m.state_dim) == (H, A, S)
    assert m.camera_names == ("head",) and m.image_size == (16, 16) and m.supports_vjp
    assert isinstance(policy, Policy)
    assert POLICY_REGISTRY.get("flow") is FlowPolicy


def test_model_learned_the_synthetic_task(policy: FlowPolicy) -> None:
    state = np.array([0.5, -1.0, 1.0, 2.0], np.float32)
    chunks = np.stack([policy.predict(make_obs(state)) for _ in range(32)])
    expected = state[None, :A] + np.linspace(0, 1, H)[:, None] * state[3]
    err = np.abs(chunks.mean(0) - expected).mean()
    assert err < 0.5 * np.abs(expected).mean(), (err, np.abs(expected).mean())  # measured 0.45 vs 1.36
    # the offset is sampled, not averaged away: chunks vary as a whole, about N(0, 1)
    assert 0.5 < chunks.std(0).mean() < 1.5, chunks.std(0).mean()


def test_checkpoint_round_trip(checkpoint: Path, tmp_path: Path) -> None:
    model, meta = load_model(checkpoint)
    assert meta == {"test": True}
    again = save_checkpoint(tmp_path / "copy", model, meta=meta)
    model2, _ = load_model(again)
    for (k1, v1), (k2, v2) in zip(model.state_dict().items(), model2.state_dict().items()):
        assert k1 == k2 and torch.equal(v1, v2)
    assert json.loads((again / "config.json").read_text())["model"] == CFG.to_dict()
    # the policy built from either directory gives the same chunk for the same noise
    noise = np.random.default_rng(0).normal(size=(H, A)).astype(np.float32)
    obs = make_obs(np.ones(S))
    np.testing.assert_array_equal(
        FlowPolicy(checkpoint=str(checkpoint)).predict(obs, noise=noise),
        FlowPolicy(checkpoint=str(again)).predict(obs, noise=noise),
    )
    # and the normalizer stats sit next to it
    assert Normalizer.from_file(checkpoint / "stats.json").modes["action"] == "zscore"


@pytest.mark.parametrize(
    "key,value,shown",
    [
        ("action_dim", 7, "action_dim=7"),
        ("state_dim", 14, "state_dim=14"),
        ("chunk_size", 50, "chunk_size=50"),
        ("camera_names", ["head", "left"], "camera_names=('head', 'left')"),
        ("image_size", [96, 128], "image_size=(96, 128)"),
    ],
)
def test_config_checkpoint_mismatch_names_both_values(checkpoint: Path, key: str, value, shown: str) -> None:
    with pytest.raises(ValueError) as err:
        FlowPolicy(checkpoint=str(checkpoint), **{key: value})
    msg = str(err.value)
    assert shown in msg
    assert f"{key}={getattr(CFG, key)!r}" in msg


def test_matching_config_values_are_accepted_and_registry_builds_it(checkpoint: Path) -> None:
    p = build_policy(
        "flow",
        checkpoint=str(checkpoint),
        chunk_size=H,
        action_dim=A,
        state_dim=S,
        camera_names=["head"],
        image_size=[16, 16],
    )
    assert isinstance(p, FlowPolicy)


def test_seeded_noise_is_reproducible(checkpoint: Path) -> None:
    obs = make_obs(np.zeros(S))
    a = FlowPolicy(checkpoint=str(checkpoint), seed=3)
    b = FlowPolicy(checkpoint=str(checkpoint), seed=3)
    first = a.predict(obs)
    np.testing.assert_array_equal(first, b.predict(obs))
    assert not np.array_equal(first, a.predict(obs))  # the generator advances
    a.reset_noise()
    np.testing.assert_array_equal(first, a.predict(obs))


def test_beta_zero_guided_equals_unguided(policy: FlowPolicy) -> None:
    obs = make_obs(np.array([1.0, 0.0, -1.0, 0.5]))
    noise = np.random.default_rng(1).normal(size=(H, A)).astype(np.float32)
    prev = np.full((H, A), 3.0, np.float32)
    free = policy.predict(obs, noise=noise)
    guided = policy.guided_inference(obs, prev, delay=2, execute_horizon=3, max_guidance_weight=0.0, noise=noise)
    np.testing.assert_allclose(guided, free, atol=1e-6)
    none = policy.guided_inference(obs, prev, delay=2, execute_horizon=3, guidance="none", noise=noise)
    np.testing.assert_array_equal(none, free)


def test_vjp_guidance_pulls_prefix_onto_prev(policy: FlowPolicy) -> None:
    """prev is a plausible but unlikely chunk (offset +1.5): guided, the new chunk starts on it."""
    rng = np.random.default_rng(2)
    state = np.array([0.0, 0.5, -0.5, 1.0], np.float32)
    obs = make_obs(state)
    prev = (state[None, :A] + np.linspace(0, 1, H)[:, None] * state[3] + 1.5).astype(np.float32)
    d, s = 2, 3
    errs_free, errs_guided = [], []
    for _ in range(8):
        noise = rng.normal(size=(H, A)).astype(np.float32)
        free = policy.predict(obs, noise=noise)
        guided = policy.guided_inference(obs, prev, delay=d, execute_horizon=s, max_guidance_weight=5.0, noise=noise)
        errs_free.append(np.abs(free[:d] - prev[:d]).mean())
        errs_guided.append(np.abs(guided[:d] - prev[:d]).mean())
    # measured: free ~1.6, guided ~0.1
    assert np.mean(errs_guided) < 0.2 * np.mean(errs_free), (np.mean(errs_guided), np.mean(errs_free))


def test_guided_inference_under_outer_no_grad_and_inference_mode(policy: FlowPolicy) -> None:
    obs = make_obs(np.zeros(S))
    noise = np.zeros((H, A), np.float32)
    prev = np.ones((H, A), np.float32)
    ref = policy.guided_inference(obs, prev, 2, 3, noise=noise)
    with torch.no_grad():
        np.testing.assert_allclose(policy.guided_inference(obs, prev, 2, 3, noise=noise), ref, atol=1e-6)
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        policy.guided_inference(obs, prev, 2, 3, noise=noise)


def test_blend_guidance(policy: FlowPolicy) -> None:
    obs = make_obs(np.zeros(S))
    noise = np.random.default_rng(3).normal(size=(H, A)).astype(np.float32)
    prev = np.random.default_rng(4).normal(size=(H - 3, A)).astype(np.float32)  # shorter: zero-padded
    new = policy.predict(obs, noise=noise)
    out = policy.guided_inference(obs, prev, 2, 3, guidance="blend", schedule="linear", noise=noise)
    w = prefix_weights(H, 2, 3, "linear")[:, None]
    padded = np.concatenate([prev, np.zeros((3, A), np.float32)])
    np.testing.assert_allclose(out, w * padded + (1 - w) * new, atol=1e-6)
    with pytest.raises(ValueError, match="prev_chunk"):
        policy.guided_inference(obs, np.zeros((H + 1, A), np.float32), 2, 3)
    with pytest.raises(ValueError, match="guidance"):
        policy.guided_inference(obs, prev, 2, 3, guidance="magic")  # type: ignore[arg-type]


def test_select_keeps_the_sampled_mode_that_continues_prev(checkpoint: Path) -> None:
    """``guidance: select`` on the synthetic task's unobservable offset: of K plain samples it keeps
    the one whose offset continues ``prev``; with K = 1 it is ``predict`` on the same noise."""
    state = np.array([0.0, 0.5, -0.5, 1.0], np.float32)
    obs = make_obs(state)
    ramp = state[None, :A] + np.linspace(0, 1, H)[:, None] * state[3]
    prev = (ramp + 1.0).astype(np.float32)  # offset +1: one mode among many
    one = FlowPolicy(checkpoint=str(checkpoint), seed=5, select_samples=1)
    noise = np.random.default_rng(6).normal(size=(H, A)).astype(np.float32)
    np.testing.assert_array_equal(
        one.guided_inference(obs, prev, 2, 3, guidance="select", noise=noise), one.predict(obs, noise=noise)
    )
    many = FlowPolicy(checkpoint=str(checkpoint), seed=5, select_samples=16)
    plain, chosen = [], []
    for _ in range(8):
        plain.append(np.abs(one.predict(obs) - prev)[: H - 3].mean())
        out = many.guided_inference(obs, prev, 2, 3, guidance="select")
        chosen.append(np.abs(out - prev)[: H - 3].mean())
        assert np.abs(out - prev)[:2].max() > 1e-3  # a sample, not prev pasted in
    assert np.mean(chosen) < 0.5 * np.mean(plain), (np.mean(chosen), np.mean(plain))
    assert many.metadata.supports_select and FlowPolicy.supports_select_guidance({})
    with pytest.raises(ValueError, match="select_samples"):
        FlowPolicy(checkpoint=str(checkpoint), select_samples=0)


def test_select_stale_gate_runs_the_first_sample_for_a_stale_plan_and_says_so(checkpoint: Path) -> None:
    """``select_stale_gate``: a previous chunk that is one of the fresh samples is not stale (select
    keeps exactly it); one far from every sample (a plan for another world) is, and the chunk is the
    first sample, naive's chunk on the same noise. ``last_info`` reports the gate for that call only."""
    obs = make_obs(np.array([0.0, 0.5, -0.5, 1.0], np.float32))
    noise = np.random.default_rng(6).normal(size=(H, A)).astype(np.float32)
    gated = FlowPolicy(checkpoint=str(checkpoint), seed=5, select_samples=8, select_stale_gate=True)
    gated.reset_noise(11)
    samples = gated._candidates(obs, noise)
    gated.reset_noise(11)  # the same K samples again: prev is one of them
    out = gated.guided_inference(obs, samples[5], 2, 3, guidance="select", noise=noise)
    np.testing.assert_array_equal(out, samples[5])
    assert gated.last_info() == {"select_stale": 0.0}
    far = samples[5] + 50.0
    out = gated.guided_inference(obs, far, 2, 3, guidance="select", noise=noise)
    np.testing.assert_allclose(out, gated.predict(obs, noise=noise), atol=1e-5)  # K-batch vs 1: float noise
    gated.guided_inference(obs, far, 2, 3, guidance="select", noise=noise)
    assert gated.last_info() == {"select_stale": 1.0}
    gated.predict(obs, noise=noise)
    assert gated.last_info() == {}  # a later call without the gate reports nothing
    ungated = FlowPolicy(checkpoint=str(checkpoint), seed=5, select_samples=8)
    ungated.guided_inference(obs, far, 2, 3, guidance="select", noise=noise)
    assert ungated.last_info() == {}


def test_bad_inputs_are_refused(policy: FlowPolicy) -> None:
    with pytest.raises(ValueError, match="camera 'head' missing"):
        policy.predict(PolicyInput(state=np.zeros((1, S), np.float32)))
    with pytest.raises(ValueError, match="image shape"):
        policy.predict(PolicyInput(state=np.zeros((1, S), np.float32), images={"head": np.zeros((1, 3, 8, 8))}))
    with pytest.raises(ValueError, match="state has dim"):
        policy.predict(make_obs(np.zeros(S + 1)))


def test_warmup_and_options_run_on_cpu(checkpoint: Path) -> None:
    p = FlowPolicy(checkpoint=str(checkpoint), device="auto", autocast_bf16=True, cudnn_benchmark=True, num_steps=3)
    p.warmup()
    out = p.guided_inference(make_obs(np.zeros(S)), np.zeros((H, A), np.float32), 1, 2)
    assert out.shape == (H, A) and out.dtype == np.float32 and np.all(np.isfinite(out))


def test_warmup_serves_every_kind_and_leaves_the_noise_draws_alone(checkpoint: Path) -> None:
    """Warm-up runs select's K-chunk batch too (a compiled network would trace it there, not in the
    control loop) without drawing from the noise generator: a warmed policy samples what a cold one does."""
    warmed = FlowPolicy(checkpoint=str(checkpoint), seed=3, select_samples=4)
    calls = []
    real = warmed._candidates
    warmed._candidates = lambda obs, noise: calls.append(1) or real(obs, noise)  # type: ignore[method-assign]
    warmed.warmup()
    assert calls == [1]
    cold = FlowPolicy(checkpoint=str(checkpoint), seed=3, select_samples=4)
    obs = make_obs(np.zeros(S))
    np.testing.assert_array_equal(warmed.predict(obs), cold.predict(obs))


def test_bundled_checkpoint_loads() -> None:
    path = resolve_path(DEFAULT_CHECKPOINT)
    assert (path / "model.safetensors").stat().st_size < 8 * 2**20
    p = FlowPolicy(
        chunk_size=50, action_dim=14, state_dim=14, camera_names=["head", "left", "right"], image_size=[96, 128]
    )
    assert p.checkpoint == path
    norm = Normalizer.from_file(path / "stats.json")
    norm.require("state", 14)
    norm.require("action", 14)
    obs = PolicyInput(
        state=np.zeros((1, 14), np.float32),
        images={c: np.zeros((1, 3, 96, 128), np.float32) for c in ("head", "left", "right")},
    )
    assert np.all(np.isfinite(p.predict(obs)))


def test_policy_config_composes_into_the_app(tmp_path: Path) -> None:
    """conf/policy/flow.yaml builds through the run object: policy, normalizer, dims."""
    from inference.app import compose_run

    run = compose_run(["policy=flow", "robot.realtime=false"], tmp_path)
    p = run.make_policy()
    assert isinstance(p, FlowPolicy) and p.checkpoint == resolve_path(DEFAULT_CHECKPOINT)
    assert p.metadata.camera_names == tuple(run.cfg.cameras.devices)
    assert p.metadata.image_size == (run.cfg.cameras.height, run.cfg.cameras.width)
    norm = run.make_normalizer()
    assert norm.modes == {"state": "zscore", "action": "zscore"}
