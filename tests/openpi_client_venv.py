"""A separate virtual environment with openpi's own client, for interop tests and benchmarks.

``openpi-client`` 0.1.2 pins ``numpy<2``, which cannot share our environment (NumPy 2), so the
interop test runs openpi's ``WebsocketClientPolicy`` in ``.venv-openpi-client/`` (repo root,
git-ignored), created once with ``python -m venv`` + ``pip install openpi-client==0.1.2 typing_extensions`` and
reused while its marker file says it is complete. A file lock keeps parallel test processes from
building it twice. ``python tests/openpi_client_venv.py`` builds it by hand.
"""

from __future__ import annotations

import fcntl
import hashlib
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
VENV = REPO / ".venv-openpi-client"
REQUIREMENT = "openpi-client==0.1.2"
# openpi-client 0.1.2 imports typing_extensions without declaring it
EXTRA = ("typing_extensions",)
_STAMP = " ".join((REQUIREMENT, *EXTRA))
_MARKER = VENV / ".complete"


def venv_python() -> Path:
    return VENV / "bin" / "python"


def ensure_openpi_client_venv(timeout_s: float = 600.0) -> Path:
    """Create (once) and return the interpreter of the openpi-client venv."""
    python = venv_python()
    if _MARKER.is_file() and _MARKER.read_text().strip() == _STAMP and python.exists():
        return python
    VENV.parent.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / f"openpi-client-venv-{hashlib.sha1(str(VENV).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if _MARKER.is_file() and _MARKER.read_text().strip() == _STAMP and python.exists():
                return python
            if not python.exists():
                subprocess.run([sys.executable, "-m", "venv", "--clear", str(VENV)], check=True, timeout=timeout_s)
            result = subprocess.run(
                [str(python), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REQUIREMENT, *EXTRA],
                capture_output=True, text=True, timeout=timeout_s,
            )
            if result.returncode != 0:
                raise RuntimeError(f"pip install {REQUIREMENT} into {VENV} failed:\n{result.stdout}\n{result.stderr}")
            _MARKER.write_text(_STAMP)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


if __name__ == "__main__":
    print(ensure_openpi_client_venv())
