"""The flow policy's CUDA paths: float32, bf16 autocast, torch.compile and batched guided inference
give the chunks the CPU gives (same inputs, same noise), and compilation does not fall back.

Skipped where torch sees no CUDA device (CI has none); run on a GPU machine with
``python -m pytest tests/policies/test_flow_cuda.py``. Tolerances are relative errors of a whole
chunk, ``||x - ref|| / ||ref||``: float32 on the GPU differs from the CPU by summation order and
cuDNN's TF32 convolutions, bf16 by its 8-bit mantissa in the network (the Euler state stays float32).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from test_batched_inference import _alone, _request

from policies.base import Guidance, PolicyInput
from policies.flow.policy import FlowPolicy

pytestmark = [pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"), pytest.mark.timeout(600)]

PREFIX_CKPT = "policies/flow/checkpoints/transfer_cube_prefix"
FLOAT32_TOL = 5e-3
BF16_TOL = 5e-2
KINDS = ("predict", "vjp", "identity", "blend", "trained")


def _cases(policy: FlowPolicy, n: int = 3, seed: int = 0) -> list[tuple[PolicyInput, np.ndarray, np.ndarray]]:
    m, rng = policy.metadata, np.random.default_rng(seed)
    h, w = m.image_size
    return [
        (
            PolicyInput(
                state=rng.normal(size=(1, m.state_dim)).astype(np.float32),
                images={c: rng.uniform(size=(1, 3, h, w)).astype(np.float32) for c in m.camera_names},
            ),
            rng.normal(size=(m.chunk_size, m.action_dim)).astype(np.float32),
            rng.normal(size=(m.chunk_size, m.action_dim)).astype(np.float32),
        )
        for _ in range(n)
    ]


def _chunk(policy: FlowPolicy, kind: str, obs: PolicyInput, prev: np.ndarray, noise: np.ndarray) -> np.ndarray:
    if kind == "predict":
        return policy.predict(obs, noise=noise)
    return policy.guided_inference(obs, prev, 4, 20, guidance=kind, noise=noise)


def _max_rel_err(policy: FlowPolicy, ref: FlowPolicy, kinds=KINDS) -> dict[str, float]:
    errs = {}
    for kind in kinds:
        worst = 0.0
        for obs, prev, noise in _cases(ref):
            want = _chunk(ref, kind, obs, prev, noise)
            got = _chunk(policy, kind, obs, prev, noise)
            assert np.isfinite(got).all(), f"{kind}: non-finite chunk"
            worst = max(worst, float(np.linalg.norm(got - want) / np.linalg.norm(want)))
        errs[kind] = worst
    return errs


@pytest.fixture(scope="module")
def cpu() -> FlowPolicy:
    return FlowPolicy(checkpoint=PREFIX_CKPT, device="cpu", num_steps=10)


@pytest.fixture(scope="module")
def cuda() -> FlowPolicy:
    p = FlowPolicy(checkpoint=PREFIX_CKPT, device="cuda", num_steps=10)
    p.warmup()
    return p


def test_auto_device_picks_the_gpu():
    assert FlowPolicy(device="auto").device.type == "cuda"


def test_float32_chunks_on_the_gpu_match_the_cpu(cpu, cuda):
    errs = _max_rel_err(cuda, cpu)
    assert max(errs.values()) < FLOAT32_TOL, errs


def test_bf16_autocast_chunks_stay_near_float32_and_finite(cpu):
    p = FlowPolicy(checkpoint=PREFIX_CKPT, device="cuda", num_steps=10, autocast_bf16=True)
    p.warmup()
    errs = _max_rel_err(p, cpu)
    assert max(errs.values()) < BF16_TOL, errs
    # bf16 really ran: the chunks are not the float32 ones bit for bit
    assert min(errs.values()) > 0.0, errs


@pytest.mark.parametrize("mode", ["default", "reduce-overhead"])
def test_compiled_policy_serves_every_guidance_without_falling_back(cuda, mode):
    """``reduce-overhead`` replays CUDA graphs: each Euler step's output buffer is reused by the next
    replay, so this also checks that no chunk reads a buffer a later step overwrote."""
    p = FlowPolicy(checkpoint=PREFIX_CKPT, device="cuda", num_steps=10, compile=True, compile_mode=mode)
    p.warmup()
    assert p.compiled, "torch.compile fell back to eager at warm-up"
    errs = _max_rel_err(p, cuda)
    assert max(errs.values()) < FLOAT32_TOL, errs
    obs, prev, _ = _cases(p, 1, seed=9)[0]
    chosen = p.guided_inference(obs, prev, 4, 20, guidance="select")
    assert chosen.shape == (p.metadata.chunk_size, p.metadata.action_dim) and np.isfinite(chosen).all()


@pytest.mark.parametrize("bf16", [False, True], ids=["float32", "bf16"])
def test_batched_guided_inference_on_the_gpu_equals_each_request_alone(bf16):
    p = FlowPolicy(checkpoint=PREFIX_CKPT, device="cuda", num_steps=5, autocast_bf16=bf16)
    rng = np.random.default_rng(3)
    reqs = [
        _request(p, rng, Guidance.VJP, d=3, s=20),
        _request(p, rng, Guidance.IDENTITY, d=6, s=12),
        _request(p, rng, Guidance.NONE, d=0, s=25),
        _request(p, rng, Guidance.TRAINED, d=5, s=25),
        _request(p, rng, Guidance.BLEND, d=2, s=25),
        _request(p, rng, Guidance.VJP, d=8, s=10, beta=2.0),
    ]
    tol = BF16_TOL if bf16 else FLOAT32_TOL
    for i, (req, got) in enumerate(zip(reqs, p.guided_inference_batch(reqs))):
        want = _alone(p, req)
        err = float(np.linalg.norm(got - want) / np.linalg.norm(want))
        assert np.isfinite(got).all() and err < tol, f"row {i} ({req.kind}): relative error {err:.2e}"
