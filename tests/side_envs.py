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
import concurrent.futures
import fcntl
import hashlib
import os
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
        return " | ".join(" ".join(step) for step in self.steps) + (
            f" | post:{self.post.__qualname__}" if self.post else ""
        )

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
register(
    SideEnv(
        "ros2-jazzy",
        steps=[
            [
                "ros-jazzy-rclpy==7.1.6",
                "ros-jazzy-sensor-msgs",
                "ros-jazzy-std-msgs",
                "ros-jazzy-rmw-fastrtps-cpp",
                "numpy<3",
            ]
        ],
    )
)

# openpi itself (tests/policies/test_openpi_real.py, benchmarks/bench_openpi.py): $OPENPI_SRC (default ../shared/openpi,
# read-only) installed --no-deps beside torch 2.13 CPU and openpi's pins (NumPy 1.x, jax 0.5.3 CPU, flax 0.10.2,
# transformers 4.53.2), plus what our app needs to run policy=openpi in the same interpreter, and this project
# (-e --no-deps). Post: openpi's transformers patch, a placeholder for the lerobot module openpi imports at
# import time (policies/openpi/install.py), and a small local tokenizer in openpi's download cache
# (OPENPI_DATA_HOME=.venvs/openpi/openpi_data; policies/openpi/tiny.py). ~3 GB, ~2-3 min.
OPENPI_SRC = Path(os.environ.get("OPENPI_SRC", REPO.parent / "shared" / "openpi")).resolve()
OPENPI_DATA_HOME = ENVS / "openpi" / "openpi_data"
OPENPI_PINS = [
    "numpy<2",
    "jax==0.5.3",
    "jaxlib==0.5.3",
    "flax==0.10.2",
    "transformers==4.53.2",
    "augmax>=0.3.4",
    "dm-tree>=0.1.8",
    "einops>=0.8.0",
    "equinox>=0.11.8",
    "flatbuffers>=24.3.25",
    "fsspec[gcs]>=2024.6.0",
    "imageio>=2.36.1",
    "jaxtyping==0.2.36",
    "ml_collections==1.0.0",
    "numpydantic>=1.6.6",
    "orbax-checkpoint==0.11.13",
    "pillow>=11.0.0",
    "sentencepiece>=0.2.0",
    "tqdm-loggable>=0.2",
    "typing-extensions>=4.12.2",
    "tyro>=0.9.5",
    "filelock>=3.16.1",
    "beartype==0.19.0",
    "chex==0.1.90",
    "treescope>=0.1.7",
    "rich>=14.0.0",
    "polars>=1.30.0",
    "ml-dtypes==0.4.1",
    "tensorstore==0.1.74",
    "safetensors>=0.4",
    "msgpack>=1.0.5",
    "websockets>=13.1",
    # our app (pyproject dependencies at versions that hold NumPy 1.x) + pytest for the probes
    "hydra-core==1.3.8",
    "omegaconf>=2.3",
    "mujoco>=3.1,<3.9",
    "gym-aloha==0.1.5",
    "opencv-python-headless>=4.9",
    "wandb>=0.18",
    "pyarrow>=15",
    "matplotlib>=3.8",
    "mcap>=1.1",
    "cyclonedds==11.0.1",
    "rosbags==0.11.9",
    "pytest>=8",
    "pytest-timeout>=2.3",
]


def _openpi_missing() -> str | None:
    return None if (OPENPI_SRC / "pyproject.toml").is_file() else f"no openpi source at {OPENPI_SRC} (set OPENPI_SRC)"


def _openpi_post(python: Path) -> None:
    for args in (
        ["-m", "policies.openpi.install", "--openpi-src", str(OPENPI_SRC)],
        ["-m", "policies.openpi.tiny", "tokenizer", str(OPENPI_DATA_HOME)],
    ):
        result = subprocess.run([str(python), *args], cwd=REPO, capture_output=True, text=True, timeout=600)
        if result.returncode != 0:
            raise RuntimeError(f"{' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")


register(
    SideEnv(
        "openpi",
        available=_openpi_missing,
        post=_openpi_post,
        steps=[
            ["torch==2.13.0"],
            OPENPI_PINS,
            ["--no-deps", str(OPENPI_SRC), str(OPENPI_SRC / "packages" / "openpi-client")],
            ["--no-deps", "-e", str(REPO)],
        ],
    )
)


# LeRobot 0.6.1 (tests/test_lerobot*.py, benchmarks/bench_lerobot.py, policy=lerobot, record=lerobot): it needs
# Python >= 3.12 and torch < 2.12, so it cannot share our 3.11 venv. Its extras: dataset (LeRobotDataset v3,
# video), training (lerobot-train), diffusion (diffusers), pi and smolvla (transformers). PyPI's torch 2.11
# for x86_64 Linux is the CUDA build (~5 GB with its nvidia-* wheels); no CPU build of a torch < 2.12 is on
# the registries this machine reaches, so it is accepted. Then what our modules import in the policy host,
# the RTC inference process and the LeRobot recorder, and this project (-e --no-deps).
LEROBOT_VERSION = "0.6.1"
LEROBOT_PYTHON_MINOR = (3, 12)


def find_python_312() -> str | None:
    """A Python 3.12 to build the LeRobot env from: $LEROBOT_BASE_PYTHON, python3.12 on PATH, then pyenv's."""
    import glob
    import shutil

    candidates = [os.environ.get("LEROBOT_BASE_PYTHON", ""), shutil.which("python3.12") or ""]
    pyenv_root = Path(os.environ.get("PYENV_ROOT", Path.home() / ".pyenv"))
    candidates += sorted(glob.glob(str(pyenv_root / "versions" / "3.12.*" / "bin" / "python3.12")), reverse=True)
    candidates += ["/usr/bin/python3.12", "/usr/local/bin/python3.12"]
    for candidate in candidates:
        if not candidate or not os.access(candidate, os.X_OK):
            continue
        probe = subprocess.run(
            [candidate, "-c", "import sys, venv; print(sys.version_info[:2] == (3, 12))"],
            capture_output=True,
            text=True,
            timeout=30,
        )
        if probe.returncode == 0 and probe.stdout.strip() == "True":
            return candidate
    return None


_LEROBOT_BASE_PYTHON = find_python_312()


def _lerobot_missing() -> str | None:
    if _LEROBOT_BASE_PYTHON is None:
        return (
            "no Python 3.12 found (LeRobot 0.6 needs >= 3.12): set LEROBOT_BASE_PYTHON, put python3.12 on PATH "
            "or install one with pyenv (`pyenv install 3.12`)"
        )
    return None


register(
    SideEnv(
        "lerobot",
        available=_lerobot_missing,
        python=_LEROBOT_BASE_PYTHON or sys.executable,
        steps=[
            [f"lerobot[dataset,training,diffusion,pi,smolvla]=={LEROBOT_VERSION}"],
            ["hydra-core==1.3.8", "omegaconf>=2.3", "msgpack>=1.0", "mcap>=1.1", "pytest>=8", "pytest-timeout>=2.3"],
            ["--no-deps", "-e", str(REPO)],
        ],
    )
)


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
                    capture_output=True,
                    text=True,
                    timeout=timeout_s,
                )
                if result.returncode != 0:
                    raise RuntimeError(
                        f"pip install {' '.join(step)} into {env.path} failed:\n{result.stdout}\n{result.stderr}"
                    )
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
        raise RuntimeError(
            f"side env {name!r} is not built and could not be built now ({exc}); "
            f"run `python -m tests.side_envs {name}` (or `make test-envs`) with network access first"
        ) from exc


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help=f"envs to build (default: all of {sorted(SIDE_ENVS)})")
    args = parser.parse_args(argv)
    todo = []
    for name in args.names or sorted(SIDE_ENVS):
        env = SIDE_ENVS[name]
        reason = env.available()
        if reason is not None and not env.is_built():
            print(f"side env {name}: not built ({reason})", flush=True)
            continue
        state = "up to date" if env.is_built() else "building"
        print(f"side env {name}: {state} ({env.path})", flush=True)
        todo.append(env)
    # Side by side: a build is mostly pip waiting on downloads and unpacking, so on a fresh machine
    # the envs together take about as long as the largest one instead of their sum.
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, len(todo))) as pool:
        for env, future in [(env, pool.submit(build, env)) for env in todo]:
            future.result()
            print(f"side env {env.name}: ready", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
