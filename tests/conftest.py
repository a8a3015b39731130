"""Shared test set-up: headless rendering, offline W&B, the repo root importable, Ctrl-C deliverable."""

from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("PYOPENGL_PLATFORM", os.environ["MUJOCO_GL"])
os.environ["WANDB_MODE"] = "offline"
os.environ.setdefault("WANDB_SILENT", "true")
os.environ.setdefault("HYDRA_FULL_ERROR", "1")

# The suite's Ctrl-C tests (the app's process group, the Ray launcher, the rclpy engine) need SIGINT
# to reach Python. A shell without job control starts a background command (`make test &` from a
# script, or `(cmd &)`) with SIGINT ignored; Python then keeps it ignored, and so does every process
# the suite starts, so those tests fail for a reason that is not the code's. Restore Python's handler
# here; a process the suite starts gets the default disposition at exec and installs its own.
if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)
