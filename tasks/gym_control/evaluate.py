"""Closed-loop success of a gym control task's expert and of flow checkpoints, synchronous chunk
execution on the raw env (no inference delay): ``python -m tasks.gym_control.evaluate --task pendulum
--checkpoint policies/flow/checkpoints/gym_pendulum --episodes 50 --execute-horizon 1 4 8``.

Episodes use seeds 0..N-1 with the task's action noise (``--noise-std`` overrides it), all side by
side. The flow policy is asked for the episodes' chunks every ``s`` ticks in one batched sampling
call from the normalized states (its checkpoint's stats.json, as the engine normalizes), its
sampling noise drawn from a generator seeded once per (source, s); the expert runs one instance
per episode, reset with the episode seed. Prints one line per
(source, s): successes, success rate and mean return; ``--json`` also writes them.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from tasks.gym_control.experts import make_expert
from tasks.gym_control.rollout import BatchSource, run_episodes
from tasks.gym_control.tasks import get_task


def flow_source(checkpoint: str, seed: int = 0) -> BatchSource:
    """A batched chunk source for a flow checkpoint (plain sampling, action units)."""
    import torch

    from policies.flow.checkpoint import load_model, stats_path
    from policies.guidance import euler_sample
    from policies.normalize import Normalizer

    torch.set_num_threads(1)
    model, _ = load_model(checkpoint)
    model.eval().requires_grad_(False)
    norm = Normalizer.from_file(stats_path(checkpoint))
    gen = torch.Generator().manual_seed(seed)
    h, a = model.cfg.chunk_size, model.cfg.action_dim

    def chunks(states: np.ndarray, _: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            s = torch.from_numpy(norm.state_to_model(states))
            prefix = model.encode_prefix(s, torch.zeros((len(s), 0, 3, 0, 0)))
            out = euler_sample(
                lambda x, tau: model.velocity(prefix, x, tau), torch.randn((len(s), h, a), generator=gen), 10
            )
        return norm.action_to_robot(out.numpy())

    return chunks


def expert_source(task_name: str, seeds: list[int]) -> BatchSource:
    """One expert per episode (reset with its seed), asked one state at a time."""
    experts = [make_expert(task_name, chunk_size=8) for _ in seeds]
    for expert, seed in zip(experts, seeds):
        expert.reset(seed)
    return lambda states, rows: np.stack([experts[i].chunk(st) for st, i in zip(states, rows)])


def evaluate(
    task_name: str, source: BatchSource, seeds: list[int], execute_horizon: int, noise_std: float | None = None
) -> dict:
    eps = run_episodes(get_task(task_name), source, seeds, noise_std=noise_std, execute_horizon=execute_horizon)
    returns = np.array([e.episode_return for e in eps])
    successes = int(sum(e.success for e in eps))
    return {
        "successes": successes,
        "episodes": len(eps),
        "success_rate": successes / len(eps),
        "mean_return": float(returns.mean()),
        "min_return": float(returns.min()),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--task", required=True, help="pendulum | cartpole_swingup")
    ap.add_argument("--checkpoint", nargs="*", default=[], help="flow checkpoint dirs to evaluate")
    ap.add_argument("--no-expert", action="store_true", help="skip the expert's row")
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--execute-horizon", type=int, nargs="+", default=[1], help="s: actions run per chunk")
    ap.add_argument("--noise-std", type=float, default=None, help="action noise (default: the task's)")
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args(argv)
    seeds = list(range(args.episodes))
    names = ([] if args.no_expert else ["expert"]) + list(args.checkpoint)
    rows = []
    for name in names:
        for s in args.execute_horizon:
            t0 = time.monotonic()
            source = expert_source(args.task, seeds) if name == "expert" else flow_source(name)
            row = {
                "task": args.task,
                "source": name,
                "execute_horizon": s,
                **evaluate(args.task, source, seeds, s, args.noise_std),
            }
            rows.append(row)
            print(
                f"{args.task} {name} s={s}: {row['successes']}/{row['episodes']} ({row['success_rate']:.2f}), "
                f"mean return {row['mean_return']:.1f}, min {row['min_return']:.1f} "
                f"({time.monotonic() - t0:.0f} s)",
                flush=True,
            )
    if args.json is not None:
        args.json.write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
