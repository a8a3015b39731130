"""Our RTC guidance vs LeRobot's own RTC processor vs unguided, on one LeRobot flow checkpoint (SmolVLA).

Both guided modes run LeRobot 0.6.1's real SmolVLA code and its own velocity function (the model's
``denoise_step`` with the prefix KV cache): ours integrates it with the VJP of the one-step clean estimate
through the model (``policies.guidance.guided_euler_sample``); LeRobot's ``RTCProcessor.denoise_step`` is the
weighted error itself (its velocity is computed before gradients are switched on: an identity Jacobian).
Per trial (a random sim-sized observation): a first chunk, its unexecuted rest as the previous chunk
(shifted by ``--shift``), then the three modes in turn on the same observation and the same noise.
Reported: prefix agreement ``mean |new[:d] - prev[:d]|`` (robot units) and median ms per chunk, with the
ratio to unguided measured in the same run. The checkpoint is a tiny random-weight SmolVLA built with
LeRobot's classes (``policies/lerobot/tiny.py``): the figures say how each guidance pulls a flow model's
prefix, not how a trained policy behaves.

    .venv/bin/python benchmarks/bench_lerobot.py --trials 8 --out benchmarks/results/lerobot.md
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.side_envs import side_env_python  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--delays", default="2,4,8")
    parser.add_argument("--shift", type=int, default=5)
    parser.add_argument("--beta", type=float, default=5.0)
    parser.add_argument("--ckpt", default=None, help="a LeRobot flow checkpoint (default: build the tiny SmolVLA)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    python = side_env_python("lerobot")
    ckpt = args.ckpt
    if ckpt is None:
        ckpt = str(Path(tempfile.mkdtemp(prefix="bench_lerobot_")) / "smolvla")
        subprocess.run(
            [str(python), "-m", "policies.lerobot.tiny", "smolvla", ckpt], cwd=REPO, check=True, capture_output=True
        )
    rows = []
    for d in (int(v) for v in args.delays.split(",")):
        proc = subprocess.run(
            [
                str(python),
                str(REPO / "tests/lerobot_probe.py"),
                "gaps",
                ckpt,
                str(args.trials),
                str(d),
                str(args.shift),
                "20",
                str(args.beta),
            ],
            cwd=REPO,
            capture_output=True,
            text=True,
            check=True,
        )
        rows.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    command = "cd /work/main && .venv/bin/python " + " ".join([Path(sys.argv[0]).as_posix(), *sys.argv[1:]])
    lines = [
        "# LeRobot flow checkpoint: our VJP guidance vs LeRobot's RTC processor vs unguided",
        "",
        f"Command: `{command}`",
        "",
        f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at the end; "
        f"LeRobot 0.6.1 SmolVLA (tiny, random weights, built with LeRobot's classes), chunk 20, shift s={args.shift}, "
        f"beta={args.beta}, {args.trials} trials per delay, 1 torch thread; the three modes interleaved per trial "
        "on the same observation and noise.",
        "",
        "Prefix gap = mean |new[:d] - prev[:d]| over the first d actions (robot units, lower = the new chunk "
        "continues the previous one); ms = median per chunk; x = ratio to unguided in the same run.",
        "",
        "| d | gap unguided | gap ours (VJP) | gap LeRobot RTC | ms unguided | ms ours | ms LeRobot RTC |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        ms = r["ms"]
        lines.append(
            f"| {r['delay']} | {r['none']:.4f} | {r['vjp']:.4f} ({r['vjp'] / r['none']:.3f}x) | "
            f"{r['lerobot_rtc']:.4f} ({r['lerobot_rtc'] / r['none']:.3f}x) | {ms['none']:.0f} | "
            f"{ms['vjp']:.0f} ({ms['vjp'] / ms['none']:.2f}x) | {ms['lerobot_rtc']:.0f} "
            f"({ms['lerobot_rtc'] / ms['none']:.2f}x) |"
        )
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        args.out.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
