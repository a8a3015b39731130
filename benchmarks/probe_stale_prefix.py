"""Does a stale prefix override what the cameras show? A probe of the shift task's flow policy.

    .venv/bin/python benchmarks/probe_stale_prefix.py --episodes 20

For each episode (seeds 0..N-1) the scripted expert drives the lockstep sim of
``transfer_cube_shift`` to ``lag`` ticks after the cube's jump; there the policy is asked for a chunk
from that observation (which shows the cube in its new place), given as the previous chunk the
expert's plan *without* the jump (what a chunk computed before it still holds). Per guidance mode it
reports where the chunk's right arm is 1 s later: closer to the plan for the new cube pose
("reacts") or to the stale one. Same noise per episode for every mode. Results:
``benchmarks/results/stale_prefix.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CHECKPOINT = "policies/flow/checkpoints/transfer_cube_shift"
CAMERAS = {"head": "top", "left": "left_wrist", "right": "right_wrist"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--episodes", type=int, default=20)
    ap.add_argument("--lag", type=int, default=2, help="ticks after the jump at which the policy is asked")
    ap.add_argument("--ahead", type=int, default=20, help="chunk index compared (ticks after the request)")
    ap.add_argument("--execute-horizon", type=int, default=12)
    args = ap.parse_args()

    from robots import gl

    gl.select_backend()
    from policies.base import PolicyInput
    from policies.flow.checkpoint import resolve_path
    from policies.normalize import Normalizer
    from policies.registry import build_policy
    from tasks.transfer_cube.demos import make_sim_robot
    from tasks.transfer_cube.expert import ScriptedTransferCube

    ck = resolve_path(CHECKPOINT)
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
    expert = ScriptedTransferCube(approach_offsets_m=(-0.08, 0.08))
    robot = make_sim_robot(cameras=CAMERAS, task="transfer_cube_shift")
    modes = [
        ("predict (naive)", "none", 0),
        *[(f"trained d={d}", "trained", d) for d in (1, 4, 8, 12)],
        *[(f"vjp d={d}", "vjp", d) for d in (0, 4, 8)],
    ]
    reacts = {name: [] for name, _, _ in modes}
    margin = {name: [] for name, _, _ in modes}
    arm = slice(7, 13)
    for seed in range(args.episodes):
        robot.home(seed)
        obs = robot.read()
        target = obs.info["shift_tick"] + args.lag
        while obs.info["step"] < target:
            robot.send(expert.predict(PolicyInput(state=obs.state[None], info=obs.info))[0])
            obs = robot.read()
        t = obs.info["step"]
        informed = expert.predict(PolicyInput(state=obs.state[None], info=obs.info))
        stale = expert.predict(PolicyInput(state=obs.state[None], info=dict(obs.info, shift_tick=-1)))
        snap = robot.latest_snapshot()
        images = {n: robot.cameras[n].render_snapshot(snap).image for n in CAMERAS}
        inp = norm.policy_input(obs.state[None], {n: im[None] for n, im in images.items()}, obs.info)
        prev_model = norm.action_to_model(stale)
        for name, guidance, d in modes:
            policy.reset_noise(seed)
            chunk_model = policy.guided_inference(inp, prev_model, d, args.execute_horizon, guidance)
            chunk = norm.action_to_robot(chunk_model)
            k = args.ahead
            to_new = float(np.linalg.norm(chunk[k, arm] - informed[k, arm]))
            to_old = float(np.linalg.norm(chunk[k, arm] - stale[k, arm]))
            reacts[name].append(to_new < to_old)
            margin[name].append(to_old - to_new)
        print(
            f"seed {seed} (tick {t}): " + ", ".join(f"{n}: {'new' if reacts[n][-1] else 'OLD'}" for n, _, _ in modes),
            flush=True,
        )
    robot.stop()
    command = "cd /work/main && .venv/bin/python benchmarks/probe_stale_prefix.py " + " ".join(sys.argv[1:])
    lines = [
        "# Does a stale prefix override the cameras? (shift task, flow checkpoint `transfer_cube_shift`)",
        "",
        f"Command: `{command}`",
        "",
        f"{args.episodes} episodes (seeds 0..{args.episodes - 1}); the scripted expert drives the lockstep sim "
        f"to {args.lag} ticks after the cube's jump, where the policy is asked for a chunk from that observation "
        "with, as the previous chunk, the expert's plan without the jump. `reacts` = the right arm's joints "
        f"{args.ahead} ticks into the chunk are closer to the expert's plan for the new cube pose than to the "
        "stale plan; margin = |chunk - stale| - |chunk - informed| (rad, mean). Execute horizon "
        f"{args.execute_horizon}; the same noise per episode for every mode.",
        "",
        "| mode | reacts to the jump | mean margin (rad) |",
        "|---|---:|---:|",
    ]
    for name, _, _ in modes:
        lines.append(f"| {name} | {sum(reacts[name])}/{len(reacts[name])} | {np.mean(margin[name]):+.3f} |")
    out = ROOT / "benchmarks" / "results" / "stale_prefix.md"
    out.write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
