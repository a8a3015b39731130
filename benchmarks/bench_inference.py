"""Latency of the flow policy: unguided predict vs RTC guided inference (VJP, and ``identity``: the
correction without the Jacobian) vs training-time RTC (``guidance=trained``: a clean action prefix,
no VJP) vs ``select`` (K plain samples in one batch, the most coherent kept) vs one bare velocity call.

    python benchmarks/bench_inference.py                      # CPU, H in 16 32 50, steps 5 10
    python benchmarks/bench_inference.py --device cuda --horizons 50 --steps 10

Models use the bundled architecture (from its config.json, with ``train_prefix_max = H // 4`` so
``guidance=trained`` is allowed; the bundled weights at its chunk size, random weights for other
chunk sizes: weights do not change the cost). Per case it reports the median (and p90)
wall time of: ``velocity`` (one action-expert call v(A, tau), prefix already encoded),
``prefix`` (observation encoding, done once per chunk), ``predict`` and ``guided_inference`` with
``guidance=vjp``, ``identity``, ``blend``, ``trained`` and ``select`` (``--select-samples`` K), and
each one's ratio to ``predict`` measured in the same rounds. Writes a markdown table to
``benchmarks/results/inference.md`` (``--out``) with the command line at the top.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from policies.base import PolicyInput  # noqa: E402
from policies.flow import FlowModel, FlowPolicy  # noqa: E402
from policies.flow.checkpoint import DEFAULT_CHECKPOINT, load_config, load_model, resolve_path, save_checkpoint  # noqa: E402

MODES = ("predict", "vjp", "identity", "blend", "trained", "select")  # predict, then guided_inference's kinds


def timed(fn, repeats: int, sync) -> tuple[float, float]:
    """(median, p90) in milliseconds after two warm-up calls."""
    for _ in range(2):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t) * 1e3)
    out.sort()
    return statistics.median(out), out[min(len(out) - 1, int(0.9 * len(out)))]


def timed_interleaved(fns, repeats: int, sync) -> list[tuple[float, float]]:
    """(median, p90) ms of each of ``fns``, called in turn (rotating the order every round) so a
    change in the machine's load hits every mode alike; two warm-up rounds."""
    for _ in range(2):
        for fn in fns:
            fn()
    sync()
    times: list[list[float]] = [[] for _ in fns]
    for r in range(repeats):
        for k in range(len(fns)):
            i = (k + r) % len(fns)
            t = time.perf_counter()
            fns[i]()
            sync()
            times[i].append((time.perf_counter() - t) * 1e3)
    out = []
    for t in times:
        t.sort()
        out.append((statistics.median(t), t[min(len(t) - 1, int(0.9 * len(t)))]))
    return out


def random_input(policy: FlowPolicy, rng: np.random.Generator) -> PolicyInput:
    """A random observation the policy takes (state and every camera; never zeros)."""
    m = policy.metadata
    return PolicyInput(
        state=rng.normal(size=(1, m.state_dim)).astype(np.float32),
        images={c: rng.random((1, 3, *m.image_size), dtype=np.float32) for c in m.camera_names},
    )


def make_policy(
    horizon: int, steps: int, device: str, tmp: Path, bf16: bool, compile_: bool = False, compile_mode: str = "default"
) -> FlowPolicy:
    bundled = resolve_path(DEFAULT_CHECKPOINT)
    cfg, _ = load_config(bundled)
    ck = tmp / f"h{horizon}"
    if not ck.exists():
        if cfg.chunk_size == horizon:
            model, _ = load_model(bundled)
        else:
            cfg.chunk_size = horizon
            torch.manual_seed(0)
            model = FlowModel(cfg)
        model.cfg.train_prefix_max = max(1, horizon // 4)
        save_checkpoint(ck, model)
    return FlowPolicy(
        checkpoint=str(ck),
        device=device,
        num_steps=steps,
        autocast_bf16=bf16,
        compile=compile_,
        compile_mode=compile_mode,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizons", type=int, nargs="+", default=[16, 32, 50])
    ap.add_argument("--steps", type=int, nargs="+", default=[5, 10])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--bf16", action="store_true", help="autocast_bf16 in the policy")
    ap.add_argument("--select-samples", type=int, default=8, help="K for guidance=select")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference.md"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    dev = torch.device(args.device)
    sync = (lambda: torch.cuda.synchronize()) if dev.type == "cuda" else (lambda: None)

    rows = []
    with tempfile.TemporaryDirectory() as tmpdir:
        for horizon in args.horizons:
            for steps in args.steps:
                p = make_policy(horizon, steps, args.device, Path(tmpdir), args.bf16)
                p.select_samples = args.select_samples
                m = p.metadata
                rng = np.random.default_rng(0)
                obs = random_input(p, rng)
                prev = rng.normal(size=(m.chunk_size, m.action_dim)).astype(np.float32)
                d, s = max(1, horizon // 10), horizon // 2
                with torch.inference_mode():
                    prefix = p._encode_prefix(obs)
                    a = torch.randn(1, m.chunk_size, m.action_dim, device=dev)
                    tau = torch.tensor(0.5, device=dev)
                    vel = p._velocity_fn(prefix)
                    t_vel = timed(lambda: vel(a, tau), args.repeats, sync)
                    t_pre = timed(lambda: p._encode_prefix(obs), args.repeats, sync)
                times = dict(
                    zip(
                        MODES,
                        timed_interleaved(
                            [lambda: p.predict(obs)]
                            + [lambda g=g: p.guided_inference(obs, prev, d, s, guidance=g) for g in MODES[1:]],
                            args.repeats,
                            sync,
                        ),
                    )
                )
                rows.append((horizon, steps, t_vel, t_pre, times))
                print(
                    f"H={horizon:3d} steps={steps:2d}: velocity {t_vel[0]:.2f} ms, prefix {t_pre[0]:.2f} ms, "
                    + ", ".join(f"{k} {t[0]:.2f} ms ({t[0] / times['predict'][0]:.2f}x)" for k, t in times.items()),
                    flush=True,
                )

    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    cmd = " ".join(["python", shown, *sys.argv[1:]])
    lines = [
        "# Flow policy inference latency",
        "",
        f"Command: `{cmd}`",
        "",
        f"Device: {args.device} ({platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{args.threads} threads{', bf16 autocast' if args.bf16 else ''}); {args.repeats} timed calls per cell "
        f"after 2 warm-up calls, {' / '.join(MODES)} interleaved (one of each per round, the "
        "order rotating); median (p90) in ms. Bundled architecture "
        "(3 cameras 96x128, 14-dim); delay d = max(1, H/10), execute horizon s = H/2.",
        "",
        "`velocity` = one action-expert call v(A, tau) with the observation prefix already encoded; "
        "`prefix` = observation encoding (once per chunk); `predict` = prefix + n Euler steps "
        "(inference_mode); `vjp` = RTC guided inference (prefix + n steps of forward + reverse pass); "
        "`identity` = RTC guidance without the Jacobian (no reverse pass); "
        "`blend` = predict + W*prev + (1-W)*new; `trained` = training-time RTC (the first d actions of prev "
        f"clean at flow time 1, n Euler steps over the rest, inference_mode); `select` = K = {args.select_samples} "
        "plain chunks in one batch (prefix encoded once), the most coherent with prev kept.",
        "",
        "| H | steps | velocity | prefix | "
        + " | ".join(MODES)
        + " | "
        + " | ".join(f"{k} / predict" for k in MODES[1:])
        + " |",
        "|---|---|---|---|" + "---|" * (2 * len(MODES) - 1),
    ]
    fmt = lambda t: f"{t[0]:.2f} ({t[1]:.2f})"  # noqa: E731
    for h, n, tv, tp, times in rows:
        lines.append(
            f"| {h} | {n} | {fmt(tv)} | {fmt(tp)} | "
            + " | ".join(fmt(times[k]) for k in MODES)
            + " | "
            + " | ".join(f"{times[k][0] / times['predict'][0]:.2f}" for k in MODES[1:])
            + " |"
        )
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text("\n".join(lines) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
