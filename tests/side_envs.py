"""Side virtual environments for interop tests: real counterparts that cannot share our venv.

Some counterparts pin what our environment cannot hold (openpi-client pins NumPy 1.x; a ROS 2 distro's
wheels provide the same modules as another distro's; openpi pins jax, transformers and NumPy 1.x). Each
gets its own venv under ``.venvs/<name>/`` (repo root, git-ignored), described by one ``SideEnv`` below.

They are built by the test set-up step *before* the suite runs, because the suite itself runs inside a
network namespace with only loopback (no package registry): ``python -m tests.side_envs`` builds every
env (idempotent: an env whose marker matches its recipe is skipped), ``python -m tests.side_envs NAME``
builds one. Tests ask for an interpreter with ``side_env_python(NAME)``, which builds it where the
network allows (a developer running one test by hand) and otherwise fails with the command to run.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
ENVS = REPO / ".venvs"


@dataclass(frozen=True)
class SideEnv:
    """One side venv: pip requirement sets installed in order, then an optional post-install step.

    ``steps`` are pip argument lists (e.g. ``["--no-deps", "-e", "/path"]``); ``post`` runs with the
    env's interpreter after them. ``stamp`` identifies the recipe: change it and the env is rebuilt.
    ``available`` returns ``None`` when the env can be built here, else the reason it cannot.
    """

    name: str
    steps: Sequence[Sequence[str]]
    post: Callable[[Path], None] | None = None
    available: Callable[[], str | None] = field(default=lambda: None)
    python: str = sys.executable

    @property
    def path(self) -> Path:
        return ENVS / self.name

    @property
    def interpreter(self) -> Path:
        return self.path / "bin" / "python"

    @property
    def stamp(self) -> str:
        return " | ".join(" ".join(step) for step in self.steps) + (f" | post:{self.post.__qualname__}" if self.post else "")

    @property
    def marker(self) -> Path:
        return self.path / ".complete"

    def is_built(self) -> bool:
        return self.interpreter.exists() and self.marker.is_file() and self.marker.read_text().strip() == self.stamp


SIDE_ENVS: dict[str, SideEnv] = {}


def register(env: SideEnv) -> SideEnv:
    SIDE_ENVS[env.name] = env
    return env


# openpi's own websocket client (openpi-client 0.1.2 pins numpy<2; it imports typing_extensions undeclared).
register(SideEnv("openpi-client", steps=[["openpi-client==0.1.2", "typing_extensions"]]))

# ROS 2 Jazzy (rclpy 7.1.6, Fast DDS 2.14) as a counterpart node: its wheels provide the same modules
# (rclpy, sensor_msgs, ...) as the Kilted wheels in our venv (the ``ros2`` extra), so it lives apart.
register(SideEnv("ros2-jazzy", steps=[[
    "ros-jazzy-rclpy==7.1.6", "ros-jazzy-sensor-msgs", "ros-jazzy-std-msgs", "ros-jazzy-rmw-fastrtps-cpp",
    "numpy<3",
]]))


def build(env: SideEnv, timeout_s: float = 1800.0) -> Path:
    """Create (once) and return the interpreter of ``env``; a file lock keeps parallel builders apart."""
    if env.is_built():
        return env.interpreter
    reason = env.available()
    if reason is not None:
        raise RuntimeError(f"side env {env.name} cannot be built here: {reason}")
    ENVS.mkdir(parents=True, exist_ok=True)
    lock_path = Path(tempfile.gettempdir()) / f"side-env-{hashlib.sha1(str(env.path).encode()).hexdigest()[:12]}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            if env.is_built():
                return env.interpreter
            subprocess.run([env.python, "-m", "venv", "--clear", str(env.path)], check=True, timeout=timeout_s)
            for step in env.steps:
                result = subprocess.run(
                    [str(env.interpreter), "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *step],
                    capture_output=True, text=True, timeout=timeout_s,
                )
                if result.returncode != 0:
                    raise RuntimeError(f"pip install {' '.join(step)} into {env.path} failed:\n{result.stdout}\n{result.stderr}")
            if env.post is not None:
                env.post(env.interpreter)
            env.marker.write_text(env.stamp)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return env.interpreter


def side_env_python(name: str) -> Path:
    """The interpreter of side env ``name``; builds it if missing (needs the package registry)."""
    env = SIDE_ENVS[name]
    if env.is_built():
        return env.interpreter
    try:
        return build(env)
    except (RuntimeError, subprocess.SubprocessError, OSError) as exc:
        raise RuntimeError(f"side env {name!r} is not built and could not be built now ({exc}); "
                           f"run `python -m tests.side_envs {name}` (or `make test-envs`) with network access first") from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"envs to build (default: all of {sorted(SIDE_ENVS)})")
    args = parser.parse_args(argv)
    for name in args.names or sorted(SIDE_ENVS):
        env = SIDE_ENVS[name]
        reason = env.available()
        if reason is not None and not env.is_built():
            print(f"side env {name}: not built ({reason})", flush=True)
            continue
        state = "up to date" if env.is_built() else "building"
        print(f"side env {name}: {state} ({env.path})", flush=True)
        build(env)
    return 0


if __name__ == "__main__":
    sys.exit(main())
