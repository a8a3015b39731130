"""Do two chunks sampled from the same observation pick different strategies? A K-sample probe.

    .venv/bin/python benchmarks/probe_multimodality.py --task transfer_cube_shift --episodes 20 --samples 8
    .venv/bin/python benchmarks/probe_multimodality.py --task transfer_cube_slide --episodes 20 --samples 8

RTC's premise is that consecutive chunks, sampled independently, can switch between the modes of a
multimodal policy (naive asynchronous execution then jerks between them) and that guidance keeps
one. This measures whether the premise holds for a checkpoint: for each episode (seeds 0..N-1, not
used in training) the scripted expert drives the lockstep sim to an early and a later tick of the
right arm's approach; there the policy samples K chunks from the same observation (K different
noises, no previous chunk). Each chunk's strategy is the expert plan it is closest to: the expert
comes down on the cube from either side (``approach_offsets_m``), so per episode there is one plan
per side (to the cube as the expert knows it: its start pose, its slide), compared on the right
arm's joints at the chunk index where the two plans differ most. A chunk closer to neither than
half the plans' distance is ``other``. Reported per probe tick: the pairwise disagreement (share of
the K(K-1)/2 pairs of one observation that pick different sides, mean over episodes), the share of
episodes where both sides appear among the K, and how often a chunk picks the side the expert drew.

The shift task's probe ticks stay before the cube's jump (the strategies are defined for one cube
pose): early = ``--early`` ticks, later = the tick before the jump (or ``--late`` if earlier). The
sliding task: early = ``--early``, later = ``--late``. Results: ``benchmarks/results/multimodality_<task>.md`` (or ``--name``).
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKPOINTS = {
    "transfer_cube_shift": "policies/flow/checkpoints/transfer_cube_shift",
    "transfer_cube_slide": "policies/flow/checkpoints/transfer_cube_slide",
}
CAMERAS = {"head": "top", "left": "left_wrist", "right": "right_wrist"}
OFFSETS_M = (-0.08, 0.08)
RIGHT_ARM = slice(7, 13)


def strategy_plans(expert, info: dict, hz: float) -> list[np.ndarray]:
    """One whole-episode expert plan per approach side, for the cube as this episode moves it."""
    cube = np.asarray(info["cube_init_pose"], np.float64)
    until = float(info.get("slide_until_s", 0.0))
    velocity = np.asarray(info.get("cube_velocity", np.zeros(3)), np.float64)
    return [
        expert.plan(cube, hz, approach_x=x, cube_velocity=velocity if until > 0 else None, slide_until_s=until)
        for x in OFFSETS_M
    ]


def classify(chunk: np.ndarray, plans: list[np.ndarray], step: int) -> int:
    """Index of the plan the chunk follows (right-arm joints where the plans differ most), or -1."""
    h = len(chunk)
    rows = np.minimum(np.arange(step, step + h), len(plans[0]) - 1)
    a, b = plans[0][rows][:, RIGHT_ARM], plans[1][rows][:, RIGHT_ARM]
    k = int(np.argmax(np.linalg.norm(a - b, axis=1)))
    gap = float(np.linalg.norm(a[k] - b[k]))
    d = [float(np.linalg.norm(chunk[k, RIGHT_ARM] - p[k])) for p in (a, b)]
    best = int(np.argmin(d))
    return best if d[best] < 0.5 * gap else -1


def pair_disagreement(labels: list[int]) -> float:
    """Share of the pairs of chunks whose strategies differ (``other`` counts as its own)."""
    pairs = list(itertools.combinations(labels, 2))
    return float(np.mean([x != y for x, y in pairs])) if pairs else 0.0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--task", choices=sorted(CHECKPOINTS), default="transfer_cube_shift")
    ap.add_argument("--checkpoint", default=None, help="default: the task's shipped checkpoint")
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--samples", type=int, default=8, help="K chunks per observation")
    ap.add_argument("--name", default=None, help="results file stem (default multimodality_<task>)")
    ap.add_argument("--early", type=int, default=2, help="early probe tick")
    ap.add_argument(
        "--late", type=int, default=24, help="later probe tick (shift task: at most the tick before the jump)"
    )
    args = ap.parse_args()

    from robots import gl

    gl.select_backend()
    import torch

    torch.set_num_threads(1)
    from policies.base import PolicyInput
    from policies.flow.checkpoint import resolve_path
    from policies.normalize import Normalizer
    from policies.registry import build_policy
    from tasks.transfer_cube.demos import make_sim_robot
    from tasks.transfer_cube.expert import ScriptedTransferCube

    ck = resolve_path(args.checkpoint or CHECKPOINTS[args.task])
    policy = build_policy(
        type="flow",
        checkpoint=str(ck),
        chunk_size=50,
        action_dim=14,
        state_dim=14,
        camera_names=list(CAMERAS),
        image_size=[96, 128],
    )
    norm = Normalizer.from_file(str(ck / "stats.json"))
    expert = ScriptedTransferCube(approach_offsets_m=OFFSETS_M)
    robot = make_sim_robot(cameras=CAMERAS, task=args.task)
    probes = ("early", "later")
    disagree = {p: [] for p in probes}
    both = {p: [] for p in probes}
    drawn = {p: [] for p in probes}
    other = {p: [] for p in probes}
    ticks = {p: [] for p in probes}
    for seed in range(args.episodes):
        robot.home(seed)
        obs = robot.read()
        info0 = obs.info
        hz = float(info0["hz"])
        shift_tick = int(info0.get("shift_tick", -1))
        late = args.late if shift_tick < 0 else max(args.early + 1, min(args.late, shift_tick - 1))
        plans = strategy_plans(expert, info0, hz)
        if float(info0.get("slide_until_s", 0.0)) > 0:
            side = expert.approach_for(info0["cube_init_pose"], info0["strategy_draw"])
        else:
            side = expert.approach_for(info0["cube_init_pose"])
        side_idx = OFFSETS_M.index(side)
        line = []
        for probe, tick in zip(probes, (args.early, late)):
            while obs.info["step"] < tick:
                robot.send(expert.predict(PolicyInput(state=obs.state[None], info=obs.info))[0])
                obs = robot.read()
            snap = robot.latest_snapshot()
            images = {n: robot.cameras[n].render_snapshot(snap).image for n in CAMERAS}
            inp = norm.policy_input(obs.state[None], {n: im[None] for n, im in images.items()}, obs.info)
            rng = np.random.default_rng(1000 * seed + tick)
            labels = []
            for _ in range(args.samples):
                noise = rng.standard_normal((50, 14)).astype(np.float32)
                chunk = norm.action_to_robot(policy.predict(inp, noise=noise))
                labels.append(classify(chunk, plans, int(obs.info["step"])))
            disagree[probe].append(pair_disagreement(labels))
            both[probe].append(0 in labels and 1 in labels)
            drawn[probe].append(float(np.mean([lab == side_idx for lab in labels])))
            other[probe].append(float(np.mean([lab == -1 for lab in labels])))
            ticks[probe].append(int(obs.info["step"]))
            line.append(f"{probe} t={obs.info['step']}: {''.join('LR?'[lab] for lab in labels)}")
        print(f"seed {seed} (expert side {'LR'[side_idx]}): " + "; ".join(line), flush=True)
    robot.stop()
    command = "cd /work/main && .venv/bin/python benchmarks/probe_multimodality.py " + " ".join(sys.argv[1:])
    lines = [
        f"# Do chunks sampled from one observation pick different strategies? (`{args.task}`)",
        "",
        f"Command: `{command}`",
        "",
        f"Checkpoint `{ck.relative_to(ROOT) if ck.is_relative_to(ROOT) else ck}`; {args.episodes} episodes "
        f"(seeds 0..{args.episodes - 1}), K = {args.samples} chunks per observation (different noise, no "
        "previous chunk), the scripted expert driving the lockstep sim up to each probe tick. A chunk's "
        f"strategy is the side (L = {OFFSETS_M[0]:+.2f} m, R = {OFFSETS_M[1]:+.2f} m pre-grasp offset) whose "
        "expert plan its right-arm joints are closest to, where the two plans differ most within the chunk; "
        "`?` = closer to neither than half their distance. Pairwise disagreement = share of the K(K-1)/2 "
        "pairs of one observation with different labels, mean over episodes.",
        "",
        "| probe | ticks (min-max) | pairwise disagreement | episodes with both sides | chunks on the expert's drawn side | chunks on neither |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for p in probes:
        lines.append(
            f"| {p} | {min(ticks[p])}-{max(ticks[p])} | {np.mean(disagree[p]):.2f} | "
            f"{sum(both[p])}/{len(both[p])} | {np.mean(drawn[p]):.2f} | {np.mean(other[p]):.2f} |"
        )
    out = ROOT / "benchmarks" / "results" / f"{args.name or 'multimodality_' + args.task}.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
