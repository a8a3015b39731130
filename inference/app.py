"""``python -m inference``: Hydra composes the config once, the run object checks it, a launcher runs it.

Hydra owns the command line, so every Hydra flag works as Hydra documents it (``--config-dir``,
``--config-path``, ``--config-name``, ``-m``, ``--cfg``, ``--info``, ``--shell-completion``,
``hydra.*`` overrides). This module adds only the exit contract:

- a config the run cannot use -- refused by Hydra while composing (an option that does not exist,
  a YAML error in any config file, including one found through ``--config-dir``, an override it
  cannot parse) or by start-time validation -- is one stderr line ``config error: <key>: <why>``,
  exit 2, before anything starts;
- a fault exits 3, Ctrl-C / SIGTERM 130, success 0.

How Hydra's errors reach us: Hydra wraps each of its steps in ``run_and_report``, which prints a
multi-line report and exits 1 unless ``HYDRA_FULL_ERROR=1``, in which case it re-raises the
original exception. ``main`` sets that documented switch for the duration of the Hydra call and
turns what comes out into our line. Exceptions that escape the job itself (bugs in a run, not
config problems) are recorded as they pass and re-raised untouched. The alternatives were worse:
composing a second time first (two compositions, and a command line re-parsed by us, which must
then agree with Hydra's own parser on every flag such as ``--config-dir <dir>``) or patching
Hydra's private ``run_and_report``. The variable
stays set while the run executes (a multirun composes each job between runs), so processes the run
spawns inherit it; it only changes how Hydra reports errors. (Hydra itself composes once more,
quietly, to read ``hydra.mode`` before a run; that is Hydra's, not ours.)
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import signal
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from omegaconf import DictConfig

from inference.help_groups import register_resolver
from inference.hydra_errors import config_error_line, search_roots
from inference.schemas import register
from services import logs
from services.errors import AlgorithmFault, ConfigError

log = logging.getLogger("inference")

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")
EXIT_CONFIG = 2
EXIT_FAULT = 3
EXIT_STOPPED = 130


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
    from hydra.utils import instantiate

    from inference.run import Run

    run = Run(cfg, run_dir)
    log.info("outputs in %s", run_dir, extra=logs.SHOW)
    launcher = instantiate(run.cfg.launcher, _partial_=True)()
    return launcher.launch(run)


def compose_run(overrides: Sequence[str] = (), run_dir: str | Path | None = None) -> Any:
    """Compose the app's config with ``overrides`` outside of ``python -m inference``.

    For tests, evaluation scripts and sweeps run in-process; returns a validated ``Run``. Extra
    config directories come in as Hydra's own override, ``hydra.searchpath=[file:///my/conf]``.
    """
    from hydra import compose, initialize_config_dir

    from inference.run import Run

    _prepare_env()
    register()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        cfg = compose(config_name="config", overrides=list(overrides))
    if run_dir is None:
        import tempfile

        run_dir = tempfile.mkdtemp(prefix="inference-run-")
    return Run(cfg, run_dir)


# exceptions that escaped the job (the run itself), so that main() re-raises them as they are
_job_errors: list[BaseException] = []


@contextlib.contextmanager
def _hydra_raises() -> Iterator[None]:
    """``HYDRA_FULL_ERROR=1`` while Hydra runs: it re-raises instead of printing and exiting 1."""
    before = os.environ.get("HYDRA_FULL_ERROR")
    os.environ["HYDRA_FULL_ERROR"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("HYDRA_FULL_ERROR", None)
        else:
            os.environ["HYDRA_FULL_ERROR"] = before


def main() -> None:
    """``python -m inference`` / the ``inference`` console script."""
    register()
    register_resolver()  # --help lists the run's own groups (conf/config.yaml's hydra.help.template)
    _job_errors.clear()
    try:
        with _hydra_raises():
            _main()
    except Exception as exc:  # noqa: BLE001 - what Hydra raised before or between jobs is a config error
        if any(exc is e for e in _job_errors):
            raise
        line = config_error_line(exc, search_roots(CONF_DIR, sys.argv[1:]))
        print(f"config error: {line}", file=sys.stderr)
        sys.exit(EXIT_CONFIG)
    except KeyboardInterrupt:  # Ctrl-C while Hydra composed (the job handles its own)
        print("stopped", file=sys.stderr)
        sys.exit(EXIT_STOPPED)
    finally:
        _job_errors.clear()


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="config")
def _main(cfg: DictConfig) -> Any:
    try:
        return run_job(cfg)
    except Exception as exc:
        _job_errors.append(exc)
        raise


def run_job(cfg: DictConfig) -> Any:
    """One composed config: build the run object (it validates), launch it, report.

    The console shows ``log_level`` and up (WARNING by default), the progress lines and the few INFO
    lines marked for it (``services.logs``); the run's log file keeps INFO and up. The one line a
    config error or a fault ends with is printed on stderr and written to the log file, once each."""
    level = cfg.get("log_level", "WARNING")
    if isinstance(level, str) and level in logging.getLevelNamesMapping():
        logs.configure(logging.getLevelNamesMapping()[level])  # else validation names the key
    _prepare_env()
    install_signal_handlers()
    run_dir = Path(HydraConfig.get().runtime.output_dir)
    try:
        summary = build_and_execute(cfg, run_dir)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        log.error("config error: %s", exc, extra=logs.FILE_ONLY)
        sys.exit(EXIT_CONFIG)
    except AlgorithmFault as exc:
        log.error("%s", exc.line(), extra=logs.FILE_ONLY)
        print(f"{exc.line()} (outputs in {run_dir})", file=sys.stderr)
        sys.exit(EXIT_FAULT)
    except KeyboardInterrupt as exc:
        log.warning("stopped by %s; robot held, files flushed in %s", exc or "Ctrl-C", run_dir, extra=logs.FILE_ONLY)
        print(f"stopped; outputs in {run_dir}", file=sys.stderr)
        sys.exit(EXIT_STOPPED)
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
