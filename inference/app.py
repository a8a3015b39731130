"""Hydra entry point: compose -> validate -> build the run object -> run -> report.

Kept thin on purpose (STYLE.md habit 2): all logic lives in the run object and the algorithms.
"""

from __future__ import annotations

import logging
import math
import os
import re
import signal
import sys
from pathlib import Path
from typing import Any, Sequence

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from algorithms.common import AlgorithmFault
from inference.validation import ConfigError

log = logging.getLogger("inference")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXIT_CONFIG = 2
EXIT_FAULT = 3


class Shutdown(KeyboardInterrupt):
    """SIGTERM, treated like Ctrl-C: stop, hold the robot, flush files."""


def _raise_shutdown(signum: int, frame: Any) -> None:
    raise Shutdown(f"signal {signum}")


def install_signal_handlers() -> None:
    signal.signal(signal.SIGTERM, _raise_shutdown)


def _prepare_env() -> None:
    os.environ.setdefault("WANDB_SILENT", "true")
    from robots import gl

    gl.select_backend()  # MUJOCO_GL before anything imports mujoco; spawned processes inherit it


def build_and_execute(cfg: DictConfig, run_dir: str | Path) -> dict[str, Any]:
    from inference.run import Run

    from hydra.utils import instantiate

    run = Run(cfg, run_dir)
    launcher = instantiate(run.cfg.launcher, _partial_=True)()
    return launcher.launch(run)


def compose_run(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Any:
    """Compose the app's config with ``overrides`` outside of ``python -m inference``.

    For tests, evaluation scripts and sweeps run in-process; returns a validated ``Run``.
    """
    from hydra import compose, initialize_config_dir

    from inference.run import Run

    _prepare_env()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if run_dir is None:
        import tempfile

        run_dir = tempfile.mkdtemp(prefix="inference-run-")
    return Run(cfg, run_dir)


# Hydra's own flags: these runs do not execute the app, so nothing is checked before them
_HYDRA_ONLY_FLAGS = ("--help", "-h", "--hydra-help", "--cfg", "-c", "--info", "-i", "--shell-completion", "-sc",
                     "--resolve", "--package", "-p", "--version")
_MULTIRUN_FLAGS = ("--multirun", "-m")


def hydra_error_line(exc: BaseException) -> str:
    """Hydra/OmegaConf's message (unknown option, bad override, YAML syntax, interpolation) as
    ``<key>: <why>`` on one line."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    key = getattr(exc, "full_key", None) or None
    missing = re.search(r"Could not find '([\w.-]+)/", text)
    if missing:
        key = missing.group(1)
    if key is None:
        found = re.search(r"(?:override|key|Key|option|group)\s+'([^']+)'", text) or re.search(r"'([\w./+~-]+)'", text)
        key = found.group(1) if found else None
    return f"{key}: {text}" if key else text


def precheck(argv: Sequence[str]) -> None:
    """Compose (and resolve) the config of a plain run before Hydra starts it, so that Hydra's own
    errors come out like ours: one line ``config error: <key>: <why>`` on stderr, exit 2."""
    if any(a in _HYDRA_ONLY_FLAGS or a.startswith(("--cfg=", "--info=", "--package=", "-sc=")) for a in argv):
        return
    if any(a in _MULTIRUN_FLAGS for a in argv):
        return  # sweep syntax (a=1,2) is Hydra's to expand; each job validates itself
    from hydra import compose, initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra
    from omegaconf import OmegaConf

    overrides = [a for a in argv if not a.startswith("-")]
    try:
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            cfg = compose(config_name="config", overrides=overrides)
        container = OmegaConf.to_container(cfg, resolve=False)
        container.pop("hydra", None)
        OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    except Exception as exc:  # noqa: BLE001 - every composition error is a config error
        print(f"config error: {hydra_error_line(exc)}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    finally:
        GlobalHydra.instance().clear()


def main() -> Any:
    """``python -m inference`` / the ``inference`` console script."""
    precheck(sys.argv[1:])
    return _main()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> Any:
    _prepare_env()
    install_signal_handlers()
    level = cfg.get("log_level", "INFO")
    if isinstance(level, str) and level in logging.getLevelNamesMapping():
        logging.getLogger().setLevel(level)  # else validation names the key
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = build_and_execute(cfg, run_dir)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        log.error("config error: %s", exc)
        sys.exit(EXIT_CONFIG)
    except AlgorithmFault as exc:
        log.error("%s", exc.line())
        print(f"{exc.line()} (outputs in {run_dir})", file=sys.stderr)
        sys.exit(EXIT_FAULT)
    except KeyboardInterrupt as exc:
        log.warning("stopped by %s; robot held, files flushed in %s", exc or "Ctrl-C", run_dir)
        print(f"stopped; outputs in {run_dir}", file=sys.stderr)
        sys.exit(130)
    print(f"run finished: outputs in {run_dir}")
    if cfg.get("report", True) and (run_dir / "ticks.csv").is_file():
        from inference.report import make_report

        print(f"report: {make_report(run_dir) / 'report.md'}")
    if cfg.get("objective") is not None:
        return objective_values(summary, cfg.objective)
    return summary


def objective_values(summary: dict[str, Any], objective: Any) -> float | list[float] | None:
    """The number(s) an optimising sweeper (``hydra/sweeper=optuna``) minimises/maximises: the
    summary keys named by ``objective`` (checked at start to be summary metrics), in order; a
    single name gives a float. When this run could not measure one (no chunk boundary, so no
    discontinuity; NaN) the answer is None, which the Optuna sweeper records as a failed trial
    (NaN itself would abort hydra-optuna-sweeper 1.3 with optuna 2.10)."""
    names = [objective] if isinstance(objective, str) else list(objective)
    values = [summary.get(name) for name in names]
    bad = [n for n, v in zip(names, values) if not isinstance(v, (int, float)) or math.isnan(v)]
    if bad:
        log.warning("objective %s: not measured in this run; the trial counts as failed", bad)
        return None
    floats = [float(v) for v in values]
    return floats[0] if len(floats) == 1 else floats
