"""Success rate of the flow checkpoint vs the scripted expert over lockstep sim episodes.

    python -m tasks.transfer_cube.evaluate --episodes 50            # flow policy and scripted expert
    python -m tasks.transfer_cube.evaluate --episodes 50 --runner local --no-expert

``--runner app`` (default) runs the project's app in-process (``inference.app.compose_run`` with
``robot.realtime=false algorithm=sequential``): the same code path as ``python -m inference``.
``--runner local`` is a minimal lockstep loop of its own (observe, normalize, predict, execute
``execute_horizon`` actions under the robot's slew limit), for when the app is unavailable.
Episode e uses seed ``seed + e`` (training demonstrations use seeds >= 10000).
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def evaluate_app(policy: str, episodes: int, seed: int, max_steps: int, extra: list[str]) -> dict[str, Any]:
    from inference.app import compose_run

    overrides = [
        f"policy={policy}",
        "robot.realtime=false",
        "algorithm=sequential",
        f"episodes={episodes}",
        f"seed={seed}",
        f"max_steps={max_steps}",
        "logger=none",
        *extra,
    ]
    run_dir = tempfile.mkdtemp(prefix=f"flow-eval-{policy}-")
    summary = compose_run(overrides, run_dir).execute()
    summary = dict(summary)
    summary["run_dir"] = run_dir
    summary["overrides"] = overrides
    return summary


def evaluate_local(
    policy_name: str, episodes: int, seed: int, max_steps: int, execute_horizon: int = 25, checkpoint: str | None = None
) -> dict[str, Any]:
    """Sequential lockstep loop without the app (same semantics: robot holds during inference)."""
    from policies.flow.checkpoint import DEFAULT_CHECKPOINT, stats_path
    from policies.normalize import Normalizer
    from tasks.transfer_cube.demos import make_sim_robot

    if policy_name == "flow":
        from policies.flow import FlowPolicy

        ck = checkpoint or DEFAULT_CHECKPOINT
        policy: Any = FlowPolicy(checkpoint=ck)
        norm = Normalizer.from_file(stats_path(ck))
        robot = make_sim_robot()
    else:
        from tasks.transfer_cube.expert import ScriptedTransferCube

        policy = ScriptedTransferCube()
        norm = Normalizer.identity()
        robot = make_sim_robot(render=False)
    policy.warmup()
    successes, lengths = [], []
    try:
        for e in range(episodes):
            robot.home(seed + e)
            obs = robot.read()
            last = obs.state.astype(np.float64)
            done, t = False, 0
            while t < max_steps and not done:
                names = policy.metadata.camera_names
                snap = robot.latest_snapshot()  # render only when the policy looks (lockstep)
                images = {n: robot.cameras[n].render_snapshot(snap).image[None] for n in names}
                pin = norm.policy_input(obs.state[None], images, obs.info)
                chunk = norm.action_to_robot(policy.predict(pin))
                for a in chunk[:execute_horizon]:
                    cmd = last + np.clip(a - last, -robot.spec.max_delta, robot.spec.max_delta)
                    cmd = np.clip(cmd, robot.spec.lower, robot.spec.upper)
                    robot.send(cmd)
                    last = cmd
                    t += 1
                    obs = robot.read()
                    if obs.info["success"]:
                        done = True
                        break
                    if t >= max_steps:
                        break
            successes.append(done)
            lengths.append(t)
            logger.info(
                "%s episode %d seed %d: %s at tick %d", policy_name, e, seed + e, "success" if done else "fail", t
            )
    finally:
        robot.stop()
    return {
        "success_rate": float(np.mean(successes)),
        "successes": int(np.sum(successes)),
        "episodes": episodes,
        "mean_ticks": float(np.mean(lengths)),
    }


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--episodes", type=int, default=50)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--max-steps", type=int, default=200)
    ap.add_argument("--runner", choices=("app", "local"), default="app")
    ap.add_argument("--checkpoint", default=None, help="flow checkpoint dir (default: the bundled one)")
    ap.add_argument("--no-expert", action="store_true", help="skip the scripted-expert baseline")
    ap.add_argument(
        "--policies",
        nargs="+",
        choices=("flow", "scripted"),
        default=None,
        help="which to evaluate (default: flow and scripted)",
    )
    ap.add_argument("--json", default=None, help="write the results here")
    ap.add_argument("overrides", nargs="*", help="extra app overrides (runner app)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    from robots import gl

    gl.select_backend()  # MUJOCO_GL before mujoco is imported

    results: dict[str, Any] = {}
    policies = args.policies or (["flow"] + ([] if args.no_expert else ["scripted"]))
    for name in policies:
        t0 = time.monotonic()
        if args.runner == "app":
            extra = list(args.overrides)
            if name == "flow" and args.checkpoint:
                ck = args.checkpoint
                extra += [f"policy.checkpoint={ck}", f"policy.normalizer.path={Path(ck) / 'stats.json'}"]
            summary = evaluate_app(name, args.episodes, args.seed, args.max_steps, extra)
        else:
            summary = evaluate_local(name, args.episodes, args.seed, args.max_steps, checkpoint=args.checkpoint)
        summary["wall_s"] = round(time.monotonic() - t0, 1)
        results[name] = summary
        print(
            f"{name}: success_rate {summary['success_rate']:.3f} over {args.episodes} lockstep episodes "
            f"(seeds {args.seed}..{args.seed + args.episodes - 1}, runner {args.runner}, {summary['wall_s']} s)"
        )
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=2, default=str))


if __name__ == "__main__":
    main()
