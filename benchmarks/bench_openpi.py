"""policy=openpi latency vs openpi's own ``Policy.infer`` on the same input (small pi0 / pi0.5, CPU or GPU).

Runs in an env where openpi is importable (here: ``.venvs/openpi``, built by ``python -m tests.side_envs openpi``):

    OPENPI_DATA_HOME=.venvs/openpi/openpi_data .venvs/openpi/bin/python -m benchmarks.bench_openpi \
        [--device cpu] [--repeats 20] [--out benchmarks/results/openpi.md]

Per model (``policies/openpi/tiny.py`` checkpoints, written fresh into a temp dir): openpi's ``Policy.infer``
(input transforms, ``PI0Pytorch.sample_actions``, output transforms), our ``predict`` (the same transforms,
our Euler loop over openpi's ``denoise_step``) and our ``guided_inference`` (VJP guidance: one reverse pass
per flow step; the previous chunk through openpi's input transforms). Median and p90 of ``--repeats`` calls
after ``--warmup`` rounds (calls interleaved), and each as a ratio to ``Policy.infer``'s median.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

CAMERAS = ("head", "left", "right")
HOME = [0, -0.96, 1.16, 0, -0.3, 0, 0.5] * 2


def timed(calls: dict, repeats: int, warmup: int) -> dict[str, list[float]]:
    """Milliseconds per call, the calls interleaved round-robin so a load change on the machine hits all alike."""
    out: dict[str, list[float]] = {name: [] for name in calls}
    for i in range(warmup + repeats):
        for name, fn in calls.items():
            t0 = time.perf_counter()
            fn()
            if i >= warmup:
                out[name].append((time.perf_counter() - t0) * 1e3)
    return out


def bench(name: str, ckpt: Path, device: str, repeats: int, warmup: int, keys: dict) -> dict:
    import torch

    from policies.base import PolicyInput
    from policies.openpi.local import OpenPIPolicy
    from policies.openpi.obs_map import images_to_uint8

    policy = OpenPIPolicy(
        f"policies.openpi.tiny:{name}",
        str(ckpt),
        chunk_size=50,
        action_dim=14,
        state_dim=14,
        camera_names=CAMERAS,
        prompt="transfer the cube",
        device=device,
        obs_keys=keys,
    )
    rng = np.random.default_rng(0)
    obs = PolicyInput(
        state=np.asarray(HOME, np.float32)[None],
        images={c: rng.random((1, 3, 96, 128)).astype(np.float32) for c in CAMERAS},
    )
    noise = torch.randn(50, 32, generator=torch.Generator().manual_seed(0)).numpy()

    def infer() -> None:
        policy._policy.infer(
            policy.obs_map.encode(obs.state, images_to_uint8(obs.images), "transfer the cube"), noise=noise
        )

    chunk = policy.predict(obs)
    prev = np.zeros_like(chunk)
    prev[:40] = chunk[10:]
    rows = timed(
        {
            "openpi Policy.infer": infer,
            "ours predict": lambda: policy.predict(obs),
            "ours guided (vjp, d=5, s=10)": lambda: policy.guided_inference(obs, prev, 5, 10, "vjp"),
        },
        repeats,
        warmup,
    )
    params = sum(p.numel() for p in policy._model.parameters())
    return {"params": params, "rows": {k: (statistics.median(v), float(np.percentile(v, 90))) for k, v in rows.items()}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import torch

    from policies.openpi import tiny
    from tests.policies.test_openpi_real import KEYS

    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        tiny.build(Path(tmp), ("pi0_aloha_tiny", "pi05_aloha_tiny"))
        results = {
            name: bench(name, Path(tmp) / name, args.device, args.repeats, args.warmup, KEYS[name])
            for name in ("pi0_aloha_tiny", "pi05_aloha_tiny")
        }
    lines = [
        f"device {args.device} ({platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch "
        f"{torch.__version__}, {torch.get_num_threads()} threads), {args.repeats} calls after {args.warmup} warm-up, "
        "10 flow steps, chunk 50 x 14 (model 50 x 32), 3 cameras 96x128 -> 224x224; 1-min load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after",
        "",
        "| model | params | call | median ms | p90 ms | / Policy.infer |",
        "|---|---|---|---|---|---|",
    ]
    for name, res in results.items():
        base = res["rows"]["openpi Policy.infer"][0]
        for call, (med, p90) in res["rows"].items():
            lines.append(
                f"| {name} | {res['params'] / 1e6:.1f} M | {call} | {med:.1f} | {p90:.1f} | {med / base:.2f} |"
            )
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")


if __name__ == "__main__":
    main()
