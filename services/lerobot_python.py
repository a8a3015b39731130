"""LeRobot's interpreter, found and checked before a run starts.

LeRobot 0.6 needs its own Python (>= 3.12), so two parts of this engine run their code under another
interpreter with this repository on its path: ``policy=lerobot`` (its policy host process,
``policy.python``) and ``record=lerobot`` (its dataset writer, ``record.python``). Both resolve that
interpreter and probe it the same way; the probe lives here, below both, so neither imports the other.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PROBE_TIMEOUT_S = 120  # a cold interpreter on a busy machine is slow to start


def resolve_python(python: str | None) -> str | None:
    """``python`` as an absolute path (relative paths are taken from the repository root); None for none."""
    if not python:
        return None
    p = Path(os.path.expanduser(str(python)))
    if not p.is_absolute():
        p = REPO / p
    return str(p)


def probe_python(python: str, engine_module: str) -> str:
    """LeRobot's version in ``python``, or ValueError saying why not.

    ``python`` must import lerobot, torch and ``engine_module`` (the engine's code it is to run) with this
    repository on its path. Modules are found (``find_spec``), not imported: importing lerobot takes
    seconds to a minute on a busy machine.
    """
    if not os.access(python, os.X_OK):
        raise ValueError(f"{python} is not an executable interpreter")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep))
    code = (
        "import importlib.util as u, importlib.metadata as m, sys\n"
        f"missing = [n for n in ('lerobot', 'torch', {engine_module!r}) if u.find_spec(n) is None]\n"
        "if missing: sys.exit('cannot import ' + ', '.join(missing))\n"
        "print(m.version('lerobot'))"
    )
    try:
        res = subprocess.run(
            [python, "-c", code], capture_output=True, text=True, timeout=PROBE_TIMEOUT_S, env=env, cwd=str(REPO)
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise ValueError(f"{python} could not be run ({exc})") from None
    if res.returncode != 0:
        last = (res.stderr.strip().splitlines() or ["no output"])[-1]
        raise ValueError(f"{python} cannot import lerobot and this engine's {engine_module} ({last})")
    return res.stdout.strip()
