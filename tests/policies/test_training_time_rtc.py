"""Training-time RTC (Black, Ren, Equi, Levine 2025, arXiv 2512.05964): per-token flow times, the
prefix-conditioned loss, prefix-conditioned sampling, ``guidance: trained`` in the policy and runner.

The functional test trains a tiny flow model (300 steps, a few seconds of CPU) on the synthetic task
of ``test_flow_policy``: a ramp read from the state plus an *unobservable* whole-chunk offset ~ N(0, 1),
so two chunks sampled from one observation disagree. A model trained with clean action prefixes must
then continue a given prefix (pick the offset it implies) with no VJP, where plain sampling picks a
fresh offset.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from inference.app import compose_run
from policies.base import Guidance, PolicyInput
from policies.flow import FlowModel, FlowPolicy
from policies.flow.checkpoint import DEFAULT_CHECKPOINT, resolve_path, save_checkpoint
from policies.guidance import euler_sample, prefix_conditioned_sample
from policies.normalize import Normalizer
from policies.runner import Guide, PolicyRunner
from tests.policies.test_flow_policy import CFG, A, H, S, make_obs, synthetic_batch

D_MAX = 4


def _train(prefix_max: int, steps: int = 300) -> FlowModel:
    torch.manual_seed(0)
    gen = torch.Generator().manual_seed(0)
    cfg = dataclasses.replace(CFG, train_prefix_max=prefix_max)
    model = FlowModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=3e-3)
    for _ in range(steps):  # a fixed count keeps the result deterministic
        loss = model.loss(*synthetic_batch(64, gen), generator=gen)
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval().requires_grad_(False)


@pytest.fixture(scope="module")
def trained_checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    model = _train(D_MAX)
    gen = torch.Generator().manual_seed(1)
    state, _, actions = synthetic_batch(256, gen)
    stats = Normalizer.compute_stats({"state": state.numpy(), "action": actions.reshape(-1, A).numpy()})
    out = tmp_path_factory.mktemp("prefix_ckpt")
    save_checkpoint(out, model, Normalizer(stats, {"state": "zscore", "action": "zscore"}))
    return out


def test_per_token_flow_times_equal_to_a_shared_time_give_the_same_velocity() -> None:
    model = FlowModel(CFG).eval()
    torch.nn.init.normal_(model.action_out.weight, std=0.1)  # a non-zero output
    gen = torch.Generator().manual_seed(3)
    state, images, actions = synthetic_batch(2, gen)
    with torch.no_grad():
        prefix = model.encode_prefix(state, images)
        shared = model.velocity(prefix, actions, torch.tensor([0.3, 0.7]))
        per_token = model.velocity(prefix, actions, torch.tensor([[0.3] * H, [0.7] * H]))
        mixed = model.velocity(prefix, actions, torch.tensor([[1.0] * 2 + [0.3] * (H - 2), [0.7] * H]))
    torch.testing.assert_close(shared, per_token)
    assert not torch.allclose(mixed[0], shared[0])  # the per-token time does reach the expert
    torch.testing.assert_close(mixed[1], shared[1])


def test_prefix_conditioned_sampling_keeps_the_prefix_exactly_and_d0_is_plain_euler() -> None:
    model = FlowModel(CFG).eval()
    torch.nn.init.normal_(model.action_out.weight, std=0.1)
    gen = torch.Generator().manual_seed(4)
    state, images, prev = synthetic_batch(1, gen)
    noise = torch.randn(1, H, A, generator=gen)
    seen: list[torch.Tensor] = []
    with torch.no_grad():
        prefix = model.encode_prefix(state, images)

        def velocity(a: torch.Tensor, tau: torch.Tensor) -> torch.Tensor:
            seen.append(tau.clone())
            return model.velocity(prefix, a, tau)

        out = prefix_conditioned_sample(velocity, noise, prev, 3, num_steps=5)
        torch.testing.assert_close(out[0, :3], prev[0, :3], rtol=0, atol=0)
        assert all(t.shape == (1, H) and torch.all(t[0, :3] == 1.0) for t in seen)
        assert [round(float(t[0, -1]), 6) for t in seen] == [0.0, 0.2, 0.4, 0.6, 0.8]
        plain = euler_sample(lambda a, tau: model.velocity(prefix, a, tau), noise, 5)
        torch.testing.assert_close(prefix_conditioned_sample(velocity, noise, prev, 0, 5), plain)
    with pytest.raises(ValueError, match="prefix length"):
        prefix_conditioned_sample(velocity, noise, prev, H, 5)


def test_prefix_loss_covers_only_the_actions_after_the_clean_prefix() -> None:
    """With ``train_prefix_max = H - 1`` and a velocity that is exact except on the prefix, the loss
    is 0 whenever the drawn prefix covers every wrong action."""
    cfg = dataclasses.replace(CFG, train_prefix_max=H - 1)
    model = FlowModel(cfg)
    gen = torch.Generator().manual_seed(5)
    state, images, actions = synthetic_batch(1, gen)
    calls: list[torch.Tensor] = []

    def exact_but_first(prefix, x, tau):  # v = A - eps wherever tau < 1, garbage on the clean prefix
        calls.append(tau)
        clean = tau >= 1.0
        eps = (x - tau[..., None] * actions) / (1.0 - tau[..., None]).clamp_min(1e-6)
        v = actions - eps
        return torch.where(clean[..., None], torch.full_like(v, 1e3), v)

    model.velocity = exact_but_first  # type: ignore[method-assign]
    losses = [float(model.loss(state, images, actions, generator=gen)) for _ in range(20)]
    assert all(c.shape == (1, H) for c in calls)
    assert max(losses) < 1e-6, losses


def test_a_prefix_trained_policy_continues_the_given_prefix_without_vjp(trained_checkpoint: Path) -> None:
    policy = FlowPolicy(checkpoint=str(trained_checkpoint), num_steps=10, seed=0)
    assert policy.metadata.supports_trained and FlowPolicy.supports_trained_guidance(
        {"checkpoint": str(trained_checkpoint)}
    )
    d, gaps_trained, gaps_free = 3, [], []
    rng = np.random.default_rng(0)
    for k in range(12):
        state = rng.standard_normal(S).astype(np.float32)
        obs = make_obs(state, seed=k)
        ramp = np.linspace(0, 1, H, dtype=np.float32)[:, None]
        offset = rng.standard_normal((1, A)).astype(np.float32) * 1.5  # one of many chunks this state allows
        # the model was trained on raw synthetic chunks: its model space is theirs
        prev_model = (state[None, :A] + ramp * state[3] + offset).astype(np.float32)
        trained = policy.guided_inference(obs, prev_model, delay=d, execute_horizon=2, guidance="trained")
        free = policy.predict(obs)
        np.testing.assert_array_equal(trained[:d], prev_model[:d])
        gaps_trained.append(np.abs(trained[d : d + 2] - prev_model[d : d + 2]).mean())
        gaps_free.append(np.abs(free[d : d + 2] - prev_model[d : d + 2]).mean())
    # the offset is unobservable: only the prefix can tell the model which one to continue
    assert np.mean(gaps_trained) < 0.5 * np.mean(gaps_free), (np.mean(gaps_trained), np.mean(gaps_free))


def test_trained_guidance_is_refused_where_the_model_was_not_trained_with_prefixes(trained_checkpoint: Path) -> None:
    plain = FlowPolicy(checkpoint=DEFAULT_CHECKPOINT, num_steps=2)
    assert not plain.metadata.supports_trained
    assert not FlowPolicy.supports_trained_guidance({"checkpoint": DEFAULT_CHECKPOINT})
    assert not FlowPolicy.supports_trained_guidance({"checkpoint": "no/such/checkpoint"})
    m = plain.metadata
    obs = PolicyInput(
        state=np.zeros((1, m.state_dim), np.float32),
        images={c: np.zeros((1, 3, *m.image_size), np.float32) for c in m.camera_names},
    )
    prev = np.zeros((m.chunk_size, m.action_dim), np.float32)
    with pytest.raises(ValueError, match="guidance=trained needs a checkpoint trained with action-prefix"):
        plain.guided_inference(obs, prev, delay=2, execute_horizon=5, guidance="trained")

    class Blender:  # a policy that would silently treat an unknown mode as blending
        metadata = m

        def guided_inference(self, *args, **kwargs):
            raise AssertionError("must not be called")

    runner = PolicyRunner(Blender(), Normalizer.identity())
    with pytest.raises(ValueError, match="does not support guidance=trained"):
        runner.infer(obs, Guide(prev, 2, 5, Guidance.TRAINED))


# ------------------------------------------------------------------ the modes that carry it
def _declared_prefix_checkpoint(tmp_path: Path) -> Path:
    """The bundled weights with ``train_prefix_max`` declared: for the plumbing below, whose checks
    (the mode reaches the policy; the chunk's first d actions are the given ones) hold for any weights."""
    ck = tmp_path / "flow_prefix"
    shutil.copytree(resolve_path(DEFAULT_CHECKPOINT), ck)
    data = json.loads((ck / "config.json").read_text())
    data["model"]["train_prefix_max"] = 10
    (ck / "config.json").write_text(json.dumps(data))
    return ck


@pytest.mark.slow
def test_rtc_and_lockstep_run_trained_guidance_end_to_end(tmp_path: Path) -> None:
    ck = _declared_prefix_checkpoint(tmp_path)
    common = [
        f"policy.checkpoint={ck}",
        "episodes=1",
        "report=false",
        "algorithm.max_chunk_jump=null",
        "algorithm.stop_on_success=false",
    ]
    summary = compose_run(["algorithm.guidance=trained", "max_steps=60", *common], run_dir=tmp_path / "rtc").execute()
    assert summary.get("fault") is None and summary["ticks"] >= 60
    rows = list(csv.DictReader((tmp_path / "rtc" / "inferences.csv").open()))
    assert any(r["guidance"] == "trained" for r in rows), {r["guidance"] for r in rows}
    lock = compose_run(
        [
            "algorithm=lockstep_eval",
            "algorithm.methods=[rtc_trained]",
            "algorithm.delays_ticks=[3]",
            "max_steps=40",
            *common,
        ],
        run_dir=tmp_path / "lock",
    ).execute()
    (row,) = lock["table"]
    assert row["method"] == "rtc_trained" and row["guidance"] == "trained" and row["inferences"] >= 2


def test_the_policy_server_runs_trained_guidance_for_a_client_that_asks(tmp_path: Path) -> None:
    from policies.openpi import OpenPIRemotePolicy, RemotePolicyError
    from tests.policies.test_openpi_remote import _in_process_server

    ck = _declared_prefix_checkpoint(tmp_path)
    for checkpoint, supported in ((ck, True), (resolve_path(DEFAULT_CHECKPOINT), False)):
        srv = _in_process_server("policy=flow", "cameras=sim", f"policy.checkpoint={checkpoint}")
        meta = srv.metadata
        client = OpenPIRemotePolicy(
            chunk_size=meta["chunk_size"],
            action_dim=meta["action_dim"],
            state_dim=14,
            camera_names=meta["camera_names"],
            port=srv.port,
            connect_timeout_s=5,
        )
        try:
            assert meta["supports_trained"] is supported and client.metadata.supports_trained is supported
            rng = np.random.default_rng(0)
            h, w = meta["image_size"]
            obs = PolicyInput(
                state=np.zeros((1, 14), np.float32),
                images={c: rng.random((1, 3, h, w), dtype=np.float32) for c in meta["camera_names"]},
            )
            prev = client.predict(obs) + 0.05  # robot space, a chunk the model would not draw itself
            if supported:
                out = client.guided_inference(obs, prev, delay=4, execute_horizon=25, guidance="trained")
                np.testing.assert_allclose(out[:4], prev[:4], atol=1e-4)  # the prefix, given clean
                assert np.abs(out[4:] - prev[4:]).max() > 1e-3  # the rest is the model's
            else:
                with pytest.raises(RemotePolicyError, match="guidance=trained"):
                    client.guided_inference(obs, prev, delay=4, execute_horizon=25, guidance="trained")
        finally:
            client.close()
            srv.stop()


# --- the stale-prefix-robust recipe: prefixes from an earlier chunk, labels that re-plan after them ---
from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from policies.flow.model import replan_labels  # noqa: E402
from tasks.transfer_cube.demos import Demos, earlier_counts, sample_steps, stale_prefixes  # noqa: E402


@settings(max_examples=200, deadline=None)
@given(st.integers(2, 12), st.integers(1, 3), st.integers(0, 8), st.integers(0, 2**31 - 1))
def test_replan_labels_keep_the_prefix_then_return_to_the_plan(h: int, a: int, replan: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    b = 4
    actions = torch.from_numpy(rng.normal(size=(b, h, a)))
    prefix = torch.from_numpy(rng.normal(size=(b, h, a)))
    d = torch.from_numpy(rng.integers(0, h, size=b))
    out = replan_labels(actions, prefix, d, replan).numpy()
    act, pre = actions.numpy(), prefix.numpy()
    for i in range(b):
        k = int(d[i])
        np.testing.assert_array_equal(out[i, :k], pre[i, :k])  # the committed actions
        np.testing.assert_allclose(out[i, k + replan :], act[i, k + replan :], atol=1e-12)  # back on the plan
        if k > 0:
            offset = pre[i, k - 1] - act[i, k - 1]
            for j in range(k, min(h, k + replan)):  # in between: the offset fades linearly
                fade = 1 - (j - k + 1) / (replan + 1)
                np.testing.assert_allclose(out[i, j], act[i, j] + fade * offset, atol=1e-12)
        else:
            np.testing.assert_allclose(out[i], act[i], atol=1e-12)
    # a prefix equal to the plan changes nothing (the paper's recipe)
    np.testing.assert_allclose(replan_labels(actions, actions.clone(), d, replan).numpy(), act, atol=1e-12)


@st.composite
def demo_layouts(draw):
    lengths = draw(st.lists(st.integers(1, 12), min_size=1, max_size=5))
    every = draw(st.integers(1, 3))
    episode = np.concatenate([np.full(n, e, np.int32) for e, n in enumerate(lengths)])
    return episode, every, draw(st.integers(1, 12)), draw(st.integers(0, 2**31 - 1))


@settings(max_examples=200, deadline=None)
@given(demo_layouts())
def test_stale_prefixes_continue_an_earlier_chunk_of_the_same_episode(layout) -> None:
    episode, every, max_ticks, seed = layout
    n, h, a = len(episode), 6, 2
    # each sample's label encodes (sample, row) so a continuation can be traced back
    actions = np.stack([np.stack([np.full(a, 100 * i + r, np.float64) for r in range(h)]) for i in range(n)])
    demos = Demos(
        states=np.zeros((n, 14), np.float32),
        images=np.zeros((n, 1, 3, 2, 2), np.uint8),
        actions=actions,
        episode=episode,
        camera_names=("c",),
        successes=1,
        attempts=1,
    )
    steps = sample_steps(demos, every)
    counts = earlier_counts(episode, steps, max_ticks)
    for i in range(n):  # candidates: exactly the earlier samples of the episode within max_ticks
        earlier = [k for k in range(n) if episode[k] == episode[i] and 1 <= steps[i] - steps[k] <= max_ticks]
        assert counts[i] == len(earlier)
        assert all(i - k <= counts[i] for k in earlier)
    rng = np.random.default_rng(seed)
    idx = np.arange(n)
    out = stale_prefixes(actions, steps, counts, idx, rng)
    for i in range(n):
        src, row0 = divmod(int(out[i, 0, 0]), 100)
        if counts[i] == 0:
            np.testing.assert_array_equal(out[i], actions[i])  # no earlier chunk: its own
            continue
        assert episode[src] == episode[i] and 1 <= steps[i] - steps[src] <= max_ticks
        assert row0 == min(steps[i] - steps[src], h - 1)  # continued to the current tick
        rows = np.minimum(np.arange(row0, row0 + h), h - 1)
        np.testing.assert_array_equal(out[i], actions[src][rows])  # padded with its last action


def test_sample_steps_prefers_recorded_steps() -> None:
    episode = np.array([0, 0, 0, 1, 1], np.int32)
    demos = Demos(
        states=np.zeros((5, 14), np.float32),
        images=np.zeros((5, 1, 3, 2, 2), np.uint8),
        actions=np.zeros((5, 4, 2)),
        episode=episode,
        camera_names=("c",),
        successes=1,
        attempts=1,
    )
    np.testing.assert_array_equal(sample_steps(demos, 2), [0, 2, 4, 0, 2])
    demos.step = np.array([1, 3, 5, 0, 2], np.int32)
    np.testing.assert_array_equal(sample_steps(demos, 2), [1, 3, 5, 0, 2])


def test_robust_loss_with_its_own_labels_as_prefix_is_the_papers_loss() -> None:
    cfg = dataclasses.replace(CFG, train_prefix_max=D_MAX)
    torch.manual_seed(0)
    model = FlowModel(cfg)
    torch.nn.init.normal_(model.action_out.weight, std=0.1)
    batch = synthetic_batch(16, torch.Generator().manual_seed(5))

    def loss(**kw) -> torch.Tensor:
        torch.manual_seed(6)  # the flow times come from torch's global generator
        return model.loss(*batch, generator=torch.Generator().manual_seed(6), **kw)

    paper = loss()
    same = loss(prefix_actions=batch[2].clone(), replan_ticks=3)
    torch.testing.assert_close(paper, same)
    stale = batch[2] + 1.0  # a prefix from another plan changes what is learned
    other = loss(prefix_actions=stale, replan_ticks=3)
    assert not torch.allclose(paper, other)


def test_robust_recipe_draws_stale_prefixes_for_its_share_of_the_batch() -> None:
    from omegaconf import OmegaConf

    from tasks.transfer_cube.train import StalePrefixRecipe

    n, h = 40, 5
    episode = np.repeat(np.arange(4, dtype=np.int32), 10)
    actions = np.stack([np.full((h, 2), float(i)) for i in range(n)])
    demos = Demos(
        states=np.zeros((n, 14), np.float32),
        images=np.zeros((n, 1, 3, 2, 2), np.uint8),
        actions=actions,
        episode=episode,
        camera_names=("c",),
        successes=1,
        attempts=1,
    )
    assert StalePrefixRecipe.from_cfg(OmegaConf.create({"stale_prefix_prob": 0.0}), demos, 2, 0) is None
    with pytest.raises(ValueError, match="stale_prefix_prob"):
        StalePrefixRecipe.from_cfg(OmegaConf.create({"stale_prefix_prob": 1.5}), demos, 2, 0)
    recipe = StalePrefixRecipe.from_cfg(
        OmegaConf.create({"stale_prefix_prob": 0.5, "stale_prefix_max_ticks": 4}), demos, 2, 0
    )
    idx = np.tile(np.arange(n), 50)
    out = recipe.draw(actions, idx)
    stale = out[:, 0, 0] != actions[idx, 0, 0]
    has_earlier = recipe.counts[idx] > 0
    assert not stale[~has_earlier].any()  # episode starts keep their own chunk
    assert 0.4 < stale[has_earlier].mean() < 0.6
    lag = actions[idx, 0, 0][stale] - out[stale, 0, 0]
    assert set(np.unique(lag)) <= {1.0, 2.0}  # 1..2 samples back (4 ticks at one sample in 2)
