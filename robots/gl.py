"""Choose MuJoCo's offscreen OpenGL backend before ``mujoco`` is imported.

MuJoCo reads ``MUJOCO_GL`` once, when ``mujoco`` is first imported, so the choice must be made
before that import. Order: an existing ``MUJOCO_GL`` value is respected as is; otherwise EGL is
tried (headless, works on CPU with Mesa's software EGL), then OSMesa. Each candidate is probed in
a short child process (``import mujoco`` + one 8x8 render), because a backend that fails to load
can not be swapped afterwards in this process. The result is written to ``os.environ`` so that
child processes (``spawn``) inherit it and do not probe again.

``select_backend()`` never raises (a sim without cameras needs no OpenGL);
``require_rendering()`` raises ``RobotError`` naming what was tried when nothing renders.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys

from robots.base import RobotError

log = logging.getLogger(__name__)

CANDIDATES: tuple[str, ...] = ("egl", "osmesa")
PROBE_TIMEOUT_S = 30.0

_PROBE = (
    "import mujoco\n"
    "m = mujoco.MjModel.from_xml_string('<mujoco><worldbody><geom size=\".1\"/></worldbody></mujoco>')\n"
    "r = mujoco.Renderer(m, 8, 8)\n"
    "r.update_scene(mujoco.MjData(m))\n"
    "r.render()\n"
    "r.close()\n"
)

_selected: str | None = None
_failures: dict[str, str] = {}


def probe(backend: str, timeout_s: float = PROBE_TIMEOUT_S) -> str | None:
    """Try one backend in a child process; return None if it renders, else the error text."""
    env = dict(os.environ, MUJOCO_GL=backend)
    if backend in ("egl", "osmesa"):
        env["PYOPENGL_PLATFORM"] = backend
    try:
        proc = subprocess.run(
            [sys.executable, "-c", _PROBE], env=env, capture_output=True, text=True, timeout=timeout_s
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"{type(exc).__name__}: {exc}"
    if proc.returncode == 0:
        return None
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def select_backend() -> str | None:
    """Set ``MUJOCO_GL`` if unset and return the backend in use (None: nothing renders).

    Idempotent and cheap after the first call. If ``mujoco`` is already imported the choice is
    frozen; then the current environment value is reported as is.
    """
    global _selected
    existing = os.environ.get("MUJOCO_GL")
    if existing:
        _selected = existing
        return existing
    if _selected is not None or _failures:
        return _selected
    if "mujoco" in sys.modules:
        # Too late to choose: mujoco already settled on its default (GLFW, which needs a
        # display). Report that; a failing renderer then raises its own RobotError.
        log.warning(
            "mujoco was imported before robots.gl.select_backend() was called and MUJOCO_GL is unset; "
            "using glfw (call robots.gl.select_backend() first, or set MUJOCO_GL=egl|osmesa)"
        )
        _selected = "glfw"
        return _selected
    for backend in CANDIDATES:
        error = probe(backend)
        if error is None:
            os.environ["MUJOCO_GL"] = backend
            os.environ.setdefault("PYOPENGL_PLATFORM", backend)
            _selected = backend
            log.info("MUJOCO_GL=%s (probed)", backend)
            return backend
        _failures[backend] = error
        log.info("MUJOCO_GL=%s does not render here: %s", backend, error)
    return None


def require_rendering() -> str:
    """Return the backend in use, or raise ``RobotError`` saying why nothing can render."""
    backend = select_backend()
    if backend:
        return backend
    tried = "; ".join(f"{name}: {err}" for name, err in _failures.items()) or "nothing probed"
    raise RobotError(
        "no offscreen OpenGL backend renders MuJoCo cameras here "
        f"(tried {tried}). Install Mesa EGL (libegl1, libgl1-mesa-dri) or OSMesa "
        "(libosmesa6), or set MUJOCO_GL explicitly, or run the sim without cameras."
    )
