"""policy=openpi: the t = 1 - tau / v = -v_openpi mapping, guidance through openpi's denoising
step, the blend fallback, and the install error where openpi is missing.

openpi cannot be installed here, so a tiny torch module stands in for openpi's *model* only: it
has ``PI0Pytorch``'s ``denoise_step(state, prefix_pad_masks, past_key_values, x_t, timestep)``
signature and convention (x_t = t * noise + (1 - t) * actions, it predicts noise - actions) and a
``sample_actions`` written exactly like openpi's loop (t from 1 down by dt = -1/n).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from inference.validation import ConfigError
from policies.guidance import prefix_weights
from policies.openpi import INSTALL_HINT, OpenPINotInstalledError, OpenPIPolicy
from policies.openpi.local import locate_prev, shift_model_chunk
from policies.openpi.sampler import OpenPIFlowSampler, OpenPIPrefix

H, D, S = 8, 3, 4


class OpenPIConventionDenoiser(torch.nn.Module):
    """Exact flow for Gaussian data ``actions ~ N(mu(state), sigma^2)`` in openpi's convention."""

    def __init__(self, sigma: float = 0.5) -> None:
        super().__init__()
        self.mu = torch.nn.Linear(S, H * D)
        torch.nn.init.normal_(self.mu.weight, std=0.5)
        self.sigma2 = sigma * sigma

    def denoise_step(self, state, prefix_pad_masks, past_key_values, x_t, timestep):
        t = timestep[:, None, None]
        mu = self.mu(state).reshape(-1, H, D)
        # E[actions | x_t] for x_t = t * eps + (1 - t) * actions
        gain = (1 - t) * self.sigma2 / ((1 - t) ** 2 * self.sigma2 + t**2)
        x0 = mu + gain * (x_t - (1 - t) * mu)
        return (x_t - x0) / t  # = E[noise - actions | x_t]

    @torch.no_grad()
    def sample_actions(self, state, noise, num_steps=10):
        """openpi's PI0Pytorch.sample_actions loop, verbatim in structure."""
        bsize = state.shape[0]
        dt = torch.tensor(-1.0 / num_steps, dtype=torch.float32)
        x_t = noise
        time = torch.tensor(1.0, dtype=torch.float32)
        while time >= -dt / 2:
            v_t = self.denoise_step(state, None, None, x_t, time.expand(bsize))
            x_t = x_t + dt * v_t
            time += dt
        return x_t


def fake_prefix(model, observation) -> OpenPIPrefix:
    return OpenPIPrefix(state=observation, prefix_pad_masks=None, past_key_values=None, batch_size=observation.shape[0])


@pytest.fixture
def model():
    torch.manual_seed(0)
    return OpenPIConventionDenoiser()


def test_mapping_reproduces_openpis_sampler(model):
    state = torch.randn(2, S)
    noise = torch.randn(2, H, D)
    sampler = OpenPIFlowSampler(model, num_steps=10, prefix_fn=fake_prefix)
    ours = sampler.sample(state, noise)
    ref = model.sample_actions(state, noise, num_steps=10)
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def test_unmapped_conventions_do_not_reproduce_it(model):
    """Each half of the mapping matters: no sign flip, or t = tau, gives a different chunk."""
    from policies.guidance import euler_sample

    state, noise = torch.randn(1, S), torch.randn(1, H, D)
    ref = model.sample_actions(state, noise, num_steps=10)
    no_flip = euler_sample(lambda a, tau: model.denoise_step(state, None, None, a, (1 - tau).expand(1)), noise, 10)
    tau_as_t = euler_sample(
        lambda a, tau: -model.denoise_step(state, None, None, a, tau.clamp_min(1e-3).expand(1)), noise, 10
    )
    assert (no_flip - ref).abs().max() > 0.1
    assert not torch.isfinite(tau_as_t).all() or (tau_as_t - ref).abs().max() > 0.1


def test_guidance_through_denoise_step_pulls_the_prefix_to_prev(model):
    state, noise = torch.randn(1, S), torch.randn(1, H, D)
    sampler = OpenPIFlowSampler(model, num_steps=10, prefix_fn=fake_prefix)
    free = sampler.sample(state, noise)[0].numpy()
    prev = free + 1.5  # a previous chunk far from what this observation would give
    w = prefix_weights(H, d=3, s=2, schedule="exp")
    guided = sampler.guided_sample(state, noise, prev, w, beta=10.0)[0].numpy()
    err_free = np.abs(free[:3] - prev[:3]).mean()
    err_guided = np.abs(guided[:3] - prev[:3]).mean()
    assert err_guided < 0.5 * err_free
    # the free tail (W = 0) stays near the unguided sample
    assert np.abs(guided[-2:] - free[-2:]).mean() < np.abs(guided[:3] - free[:3]).mean()
    # beta = 0 is the unguided sampler exactly
    np.testing.assert_allclose(sampler.guided_sample(state, noise, prev, w, beta=0.0)[0].numpy(), free, atol=1e-6)


def test_non_differentiable_model_raises_for_the_blend_fallback(model):
    class Frozen(OpenPIConventionDenoiser):
        def denoise_step(self, *args):
            with torch.no_grad():
                return super().denoise_step(*args)

    frozen = Frozen()
    sampler = OpenPIFlowSampler(frozen, num_steps=4, prefix_fn=fake_prefix)
    state, noise = torch.randn(1, S), torch.randn(1, H, D)
    with pytest.raises(RuntimeError):
        sampler.guided_sample(state, noise, np.zeros((H, D), np.float32), prefix_weights(H, 2, 2), beta=5.0)


def test_only_a_detached_denoiser_is_not_differentiable_a_shape_bug_raises_as_itself(model):
    from policies.openpi.local import model_space_target
    from policies.openpi.sampler import NotDifferentiableError

    class Frozen(OpenPIConventionDenoiser):
        def denoise_step(self, *args):
            with torch.no_grad():
                return super().denoise_step(*args)

    state, noise = torch.randn(1, S), torch.randn(1, H, D)
    with pytest.raises(NotDifferentiableError):
        OpenPIFlowSampler(Frozen(), 4, prefix_fn=fake_prefix).guided_sample(
            state, noise, np.zeros((H, D), np.float32), prefix_weights(H, 2, 2), beta=5.0
        )
    sampler = OpenPIFlowSampler(model, 4, prefix_fn=fake_prefix)
    with pytest.raises(ValueError, match="weights shape"):  # a bug, not a differentiability failure
        sampler.guided_sample(state, noise, np.zeros((H, D), np.float32), prefix_weights(H - 1, 2, 2), beta=5.0)
    # chunk_size < horizon: the target is padded to the model's horizon with zero weight
    target, w = model_space_target(np.ones((5, 2), np.float32), prefix_weights(5, 2, 1), horizon=H, width=D)
    assert target.shape == (H, D) and w.shape == (H,) and not w[5:].any() and not target[5:].any()
    assert (target[w > 0, :2] == 1).all() and not target[:, 2:].any()


def test_locate_prev_finds_the_engines_shift():
    rng = np.random.default_rng(0)
    returned = rng.normal(size=(H, D)).astype(np.float32)
    raw = rng.normal(size=(H, D)).astype(np.float32)
    for s in (0, 3, 5):
        prev = shift_model_chunk(returned, s)  # what the RTC engine hands back: chunk[s:], zero-padded
        assert locate_prev(prev, returned, hint=s) == s
        assert locate_prev(prev, returned, hint=0) == s
        np.testing.assert_array_equal(shift_model_chunk(raw, s)[: H - s], raw[s:])
    assert locate_prev(rng.normal(size=(H, D)).astype(np.float32), returned, hint=2) is None
    assert locate_prev(returned, None, hint=0) is None


def test_missing_openpi_gives_the_named_install_error():
    with pytest.raises(OpenPINotInstalledError) as err:
        OpenPIPolicy(train_config_name="pi05_igris", ckpt_dir="/nonexistent")
    assert "pip install --no-deps -e openpi" in str(err.value) and "Physical-Intelligence/openpi" in str(err.value)
    assert str(err.value).startswith(INSTALL_HINT)


def test_missing_openpi_is_a_config_error_at_start():
    from inference.app import compose_run

    with pytest.raises(
        ConfigError, match=r"^policy: policy=openpi needs the openpi package.*pip install --no-deps -e openpi"
    ):
        compose_run(["policy=openpi", "cameras=sim"])
