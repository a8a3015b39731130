"""Making a Gymnasium environment from an id, whichever suite registers it.

Gymnasium 1.x finds its own environments (classic control, MuJoCo, ...) by id, but a third-party
suite registers its ids only when its module is imported. ``SUITES`` maps the namespaces we know to
that module and to the install that provides it (so a missing suite is named with its fix); any
other suite can be named Gymnasium's way, ``module:Namespace/Env-v0`` (the module is imported first).

MuJoCo-based suites render with MuJoCo's offscreen OpenGL, whose backend must be chosen before
``mujoco`` is first imported: ``robots.gl.select_backend()`` runs before any suite is imported.
"""

from __future__ import annotations

import contextlib
import importlib
import logging
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Suite:
    module: str  # imported to register the namespace's ids
    install: str  # what provides it
    rate: str = "dt"  # where its control period is read: ``dt`` (unwrapped.dt) or ``render_fps``


SUITES: dict[str, Suite] = {
    "dm_control": Suite("shimmy", "the `gym` extra: pip install -e '.[gym]' (shimmy[dm-control])"),
    "gym_aloha": Suite("gym_aloha", "gym-aloha (a base dependency)"),
    # gym-pusht's unwrapped.dt is its physics step (0.01 s); each env step runs 1/render_fps of them
    "gym_pusht": Suite("gym_pusht", "pip install --no-deps gym-pusht 'pymunk<7' shapely (docs/gym.md)", "render_fps"),
}


class SuiteError(ValueError):
    """The id names no environment that can be made here (the message says why and what to install)."""


def namespace(env_id: str) -> str | None:
    name = env_id.split(":", 1)[-1]
    return name.split("/", 1)[0] if "/" in name else None


def _import_suite(env_id: str) -> None:
    """Import the module that registers ``env_id``'s suite (a ``module:`` prefix, or a known namespace)."""
    from robots import gl

    gl.select_backend()  # before any suite imports mujoco
    if ":" in env_id:
        module = env_id.split(":", 1)[0]
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise SuiteError(f"{env_id!r}: cannot import its module {module!r} ({exc})") from None
        return
    ns = namespace(env_id)
    suite = SUITES.get(ns or "")
    if suite is None:
        return
    try:
        module = importlib.import_module(suite.module)
    except ImportError as exc:
        raise SuiteError(
            f"{env_id!r} is a {ns} environment and {suite.module} is not installed ({exc}); install {suite.install}"
        ) from None
    if suite.module == "shimmy":
        import gymnasium

        gymnasium.register_envs(module)


@contextlib.contextmanager
def root_logging_kept() -> Iterator[None]:
    """Undo what a suite does to the root logger while it is imported or made.

    dm_control (through shimmy) adds a plain stderr handler to the root logger when an env is first
    made. In a run that bypasses the console filter (services/logs.py: every start-up line twice, on a
    console meant to show warnings and progress only); under a test runner the handler keeps the
    runner's captured stream, which is closed after that test, and the next log record crashes the
    interpreter's stderr."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    try:
        yield
    finally:
        for handler in [h for h in root.handlers if h not in handlers]:
            root.removeHandler(handler)
        root.setLevel(level)


def make_env(env_id: str, env_kwargs: Mapping[str, Any] | None = None, render_mode: str | None = None) -> Any:
    """``gymnasium.make(env_id, render_mode=..., **env_kwargs)`` with its suite registered first.

    Raises ``SuiteError`` for an id nothing registers (with Gymnasium's suggestion) or a suite that is
    not installed; other errors from the environment's constructor propagate as they are."""
    import gymnasium
    from gymnasium import error

    kwargs = dict(env_kwargs or {})
    if render_mode is not None:
        kwargs["render_mode"] = render_mode
    try:
        with root_logging_kept():
            _import_suite(env_id)
            return gymnasium.make(env_id.split(":", 1)[-1] if ":" in env_id else env_id, **kwargs)
    except (
        error.NameNotFound,
        error.NamespaceNotFound,
        error.VersionNotFound,
        error.DeprecatedEnv,
        error.UnregisteredEnv,
    ) as exc:
        ns = namespace(env_id)
        hint = ""
        if ns and ns not in SUITES and ":" not in env_id:
            hint = f" (a suite outside Gymnasium: name its module first, e.g. robot.env_id=<module>:{env_id})"
        raise SuiteError(f"no environment {env_id!r} here: {exc}{hint}") from None
    except error.DependencyNotInstalled as exc:
        raise SuiteError(f"{env_id!r} needs a package that is not installed: {exc}") from None


def control_dt(env: Any) -> float:
    """Seconds of environment time one ``step`` advances (its control period): ``unwrapped.dt``
    (Gymnasium's MuJoCo and classic-control envs, shimmy's dm_control), else ``render_fps``, or what
    the suite's entry in ``SUITES`` says."""
    env_id = env.spec.id if env.spec is not None else ""
    rule = SUITES.get(namespace(env_id) or "", Suite("", "")).rate
    dt = getattr(env.unwrapped, "dt", None) if rule == "dt" else None
    if dt is None:
        fps = env.metadata.get("render_fps")
        if not fps:
            raise SuiteError(
                f"{env.spec.id if env.spec else env}: neither unwrapped.dt nor metadata['render_fps'] "
                "says its control rate"
            )
        return 1.0 / float(fps)
    return float(dt)
