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

# Hypothesis fails an example that takes longer than its 200 ms deadline, and an example slow only the
# first time (a cold import, a loaded machine) as "flaky": a wall-clock assertion in every property
# test. The suite runs on shared 2-core hosts, so the deadline is off and so is the too-slow check;
# examples and shrinking are unchanged.
try:
    from hypothesis import HealthCheck
    from hypothesis import settings as _hypothesis_settings
except ImportError:
    pass
else:
    _hypothesis_settings.register_profile("shared_machine", deadline=None, suppress_health_check=[HealthCheck.too_slow])
    _hypothesis_settings.load_profile("shared_machine")

# absl's logging handler (imported by dm_control, which robot=gym makes through shimmy) writes to the
# sys.stderr of the moment absl is first imported: under pytest, one test's capture stream. Hydra's
# logging set-up in a later in-process app run closes every handler ever made, and absl's close()
# closes its stream unless it is the process's own stderr: the capture stream of a running test, and
# the interpreter loses stderr (CI crashed in test_config_errors after the gym experiment test). Point
# absl at the real stderr once, before any test imports a suite. A command-line run is not affected:
# there absl's stream is the real stderr, which it never closes.
try:
    import absl.logging as _absl_logging
except ImportError:
    pass
else:
    _absl_logging.get_absl_handler().python_handler.setStream(sys.__stderr__)
