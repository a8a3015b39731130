"""The flow policy's CUDA paths on a GPU: accuracy and latency of eager float32, bf16 autocast,
``torch.compile`` (``compile``: mode default; ``graphs``: mode reduce-overhead, i.e. CUDA graphs;
each alone and with bf16), and batched guided inference (the fleet's path) against one call per
request.

    python benchmarks/bench_cuda.py                     # needs a CUDA device
    python benchmarks/bench_cuda.py --variants eager bf16 --batch-sizes 1 8 --repeats 50

Sections of the report (``--out``, default ``benchmarks/results/inference_cuda.md``, rewritten
after each section so an interrupted run keeps what it measured):

1. **Accuracy**: each variant's chunk against the same policy on the CPU in float32 (same inputs,
   same noise; three random observations and previous chunks, never zeros), as
   ``max ||chunk - ref|| / ||ref||`` for predict, VJP, identity and trained guidance; and whether
   anything non-finite came out.
2. **Warm-up**: the wall time of ``FlowPolicy.warmup`` per variant (compilation happens there).
3. **Latency**: after ``--burn-in-s`` of plain chunks, per guidance kind, the variants called in turn (order rotating each round), so
   their ratios are measured in one window; medians (p90) in ms with a device synchronize per call.
4. **Batching**: B VJP requests (each its own observation, delay, horizon, previous chunk) in one
   ``guided_inference_batch`` call vs B ``guided_inference`` calls, interleaved; the first call at a
   new batch size is reported apart (a compiled network traces each new shape).
"""

from __future__ import annotations

import argparse
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.bench_inference import make_policy, random_input, timed_interleaved  # noqa: E402
from policies.base import Guidance, PolicyInput  # noqa: E402
from policies.batched import BatchRequest  # noqa: E402
from policies.flow import FlowPolicy  # noqa: E402
from policies.runner import Guide  # noqa: E402

# name: (bf16 autocast, torch.compile mode or None for eager)
VARIANTS = {
    "eager": (False, None),
    "bf16": (True, None),
    "compile": (False, "default"),
    "compile+bf16": (True, "default"),
    "graphs": (False, "reduce-overhead"),
    "graphs+bf16": (True, "reduce-overhead"),
}
ACCURACY_KINDS = ("predict", "vjp", "identity", "trained")
LATENCY_KINDS = ("predict", "vjp", "identity", "trained", "select")


def chunk(
    policy: FlowPolicy, kind: str, obs: PolicyInput, prev: np.ndarray, d: int, s: int, noise: np.ndarray | None = None
) -> np.ndarray:
    if kind == "predict":
        return policy.predict(obs, noise=noise)
    return policy.guided_inference(obs, prev, d, s, guidance=kind, noise=noise)


def rel_err(x: np.ndarray, ref: np.ndarray) -> float:
    return float(np.linalg.norm(x - ref) / np.linalg.norm(ref))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--horizon", type=int, default=50)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--repeats", type=int, default=30)
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 2, 4, 8, 16])
    ap.add_argument("--batch-variants", nargs="+", default=["eager", "bf16", "compile"], choices=list(VARIANTS))
    ap.add_argument("--select-samples", type=int, default=8)
    ap.add_argument(
        "--burn-in-s",
        type=float,
        default=5.0,
        help="seconds of plain chunks before the latency rows (an idle GPU's clocks ramp up; the first "
        "row of a run without it was inflated)",
    )
    ap.add_argument("--device", default="cuda", help="cuda[:N]; cpu only to try the script where no GPU is")
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "inference_cuda.md"))
    args = ap.parse_args()
    dev = torch.device(args.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("bench_cuda: torch.cuda.is_available() is False on this machine")
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    h, steps = args.horizon, args.steps
    d, s = max(1, h // 10), h // 2
    script = Path(sys.argv[0]).resolve()
    shown = str(script.relative_to(ROOT)) if script.is_relative_to(ROOT) else sys.argv[0]
    gpu = (
        f"{torch.cuda.get_device_name(dev)} ({torch.cuda.get_device_properties(dev).total_memory / 2**30:.0f} GiB)"
        if dev.type == "cuda"
        else f"cpu ({torch.get_num_threads()} threads)"
    )
    lines = [
        "# Flow policy on CUDA: bf16 autocast, torch.compile, batched guided inference",
        "",
        f"Command: `{' '.join(['python', shown, *sys.argv[1:]])}`",
        "",
        f"Device: {gpu}, "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}, host {platform.machine()}; "
        f"cudnn.allow_tf32={torch.backends.cudnn.allow_tf32}, matmul.allow_tf32={torch.backends.cuda.matmul.allow_tf32}. "
        f"Bundled architecture, H = {h}, {steps} Euler steps, d = {d}, s = {s}, select K = {args.select_samples}; "
        f"trained guidance with train_prefix_max = H/4 (weights do not change the cost). Measured "
        f"{time.strftime('%Y-%m-%dT%H:%MZ', time.gmtime())}.",
        "",
    ]
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)

    printed = 0

    def flush() -> None:
        nonlocal printed
        out.write_text("\n".join(lines) + "\n")
        print("\n".join(lines[printed:]), flush=True)
        printed = len(lines)

    with tempfile.TemporaryDirectory() as tmpdir:
        tmp = Path(tmpdir)
        cpu = make_policy(h, steps, "cpu", tmp, False)
        policies: dict[str, FlowPolicy] = {}
        warm_s: dict[str, str] = {}
        for name in args.variants:
            bf16, mode = VARIANTS[name]
            comp = mode is not None
            p = make_policy(h, steps, args.device, tmp, bf16, comp, mode or "default")
            p.select_samples = args.select_samples
            sync()
            t = time.perf_counter()
            p.warmup()
            sync()
            fell_back = comp and not p.compiled
            warm_s[name] = f"{time.perf_counter() - t:.1f}" + (" (compile failed: ran eagerly)" if fell_back else "")
            policies[name] = p

        # 1. accuracy against the CPU in float32
        rng = np.random.default_rng(0)
        m = cpu.metadata
        cases = [
            (
                random_input(cpu, rng),
                rng.normal(size=(h, m.action_dim)).astype(np.float32),
                rng.normal(size=(h, m.action_dim)).astype(np.float32),
            )
            for _ in range(3)
        ]
        refs = {
            (k, i): chunk(cpu, k, obs, prev, d, s, noise)
            for k in ACCURACY_KINDS
            for i, (obs, prev, noise) in enumerate(cases)
        }
        lines += [
            "## Accuracy against the CPU in float32",
            "",
            "max over 3 random cases of ||chunk - cpu|| / ||cpu||; `finite` = every output finite.",
            "",
            "| variant | " + " | ".join(ACCURACY_KINDS) + " | finite |",
            "|---|" + "---|" * (len(ACCURACY_KINDS) + 1),
        ]
        for name, p in policies.items():
            errs, finite = [], True
            for k in ACCURACY_KINDS:
                e = 0.0
                for i, (obs, prev, noise) in enumerate(cases):
                    x = chunk(p, k, obs, prev, d, s, noise)
                    finite &= bool(np.isfinite(x).all())
                    e = max(e, rel_err(x, refs[(k, i)]))
                errs.append(f"{e:.1e}")
            lines.append(f"| {name} | " + " | ".join(errs) + f" | {'yes' if finite else 'NO'} |")
        lines += ["", "## Warm-up (compilation included)", "", "| variant | warmup() s |", "|---|---|"]
        lines += [f"| {n} | {w} |" for n, w in warm_s.items()]
        lines.append("")
        flush()

        # 3. latency per guidance kind, variants interleaved
        obs, prev, _ = cases[0]
        t_end = time.perf_counter() + args.burn_in_s
        while time.perf_counter() < t_end:
            for p in policies.values():
                p.predict(obs)
        sync()
        names = list(policies)
        lines += [
            "## Latency (ms, median (p90))",
            "",
            f"{args.repeats} timed calls per cell after 2 warm-up rounds; per row the variants are called in "
            "turn, so the ratios to `eager` share one window.",
            "",
            "| kind | " + " | ".join(names) + " | " + " | ".join(f"{n} / eager" for n in names if n != "eager") + " |",
            "|---|" + "---|" * (2 * len(names) - ("eager" in names)),
        ]
        for k in LATENCY_KINDS:
            times = timed_interleaved(
                [lambda p=p, k=k: chunk(p, k, obs, prev, d, s) for p in policies.values()], args.repeats, sync
            )
            t = dict(zip(names, times))
            ratios = [f"{t[n][0] / t['eager'][0]:.2f}" for n in names if n != "eager" and "eager" in t]
            lines.append(
                f"| {k} | "
                + " | ".join(f"{t[n][0]:.2f} ({t[n][1]:.2f})" for n in names)
                + " | "
                + " | ".join(ratios)
                + " |"
            )
        lines.append("")
        flush()

        # 4. batched guided inference vs one call per request
        lines += [
            "## Batched VJP guidance vs one call per request",
            "",
            "B requests with their own observation, delay (1..H/5), horizon and previous chunk; `batched` = one "
            "`guided_inference_batch` call, `one by one` = B `guided_inference` calls; both interleaved, "
            f"{args.repeats} rounds. `first call` = the first batched call at that B (a compiled network "
            "traces each new batch shape).",
            "",
            "| variant | B | first call ms | batched ms | one by one ms | batched ms / chunk | speed-up |",
            "|---|---|---|---|---|---|---|",
        ]
        for name in args.batch_variants:
            if name not in policies:
                continue
            p = policies[name]
            for b in args.batch_sizes:
                brng = np.random.default_rng(b)
                reqs = []
                for _ in range(b):
                    dd = int(brng.integers(1, h // 5 + 1))
                    ss = int(brng.integers(dd, h - dd))
                    reqs.append(
                        BatchRequest(
                            random_input(p, brng),
                            Guide(brng.normal(size=(h - ss, m.action_dim)).astype(np.float32), dd, ss, Guidance.VJP),
                        )
                    )
                sync()
                t0 = time.perf_counter()
                p.guided_inference_batch(reqs)
                sync()
                first = (time.perf_counter() - t0) * 1e3
                one_by_one = lambda reqs=reqs, p=p: [  # noqa: E731
                    p.guided_inference(r.inp, r.prev_model, r.d, r.s, guidance=r.guidance) for r in reqs
                ]
                (tb, _), (ts, _) = timed_interleaved(
                    [lambda reqs=reqs, p=p: p.guided_inference_batch(reqs), one_by_one], args.repeats, sync
                )
                lines.append(f"| {name} | {b} | {first:.1f} | {tb:.2f} | {ts:.2f} | {tb / b:.2f} | {ts / tb:.2f} |")
                flush()
        lines.append("")
        flush()
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
