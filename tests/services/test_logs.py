"""The run's quiet console and complete log file (``services/logs.py``): what each shows, and that a
child process started with the parent's ``LogSetup`` logs the same way."""

from __future__ import annotations

import io
import logging
import multiprocessing as mp

import pytest

from services import logs


@pytest.fixture
def root_handlers():
    """A console (StringIO stream) and a log file on the root logger; the root restored afterwards."""
    root = logging.getLogger()
    saved_handlers, saved_level = list(root.handlers), root.level
    console_text = io.StringIO()
    console = logging.StreamHandler(console_text)
    root.handlers[:] = [console]
    yield root, console_text
    for h in root.handlers:
        if h is not console and h not in saved_handlers:
            h.close()
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)


def _say_everything(log: logging.Logger) -> None:
    log.debug("debug detail")
    log.info("start-up detail")
    log.info("outputs in /x", extra=logs.SHOW)
    log.warning("a warning")
    log.error("the one error line", extra=logs.FILE_ONLY)


def test_default_console_shows_warnings_and_marked_lines_the_file_keeps_info(root_handlers, tmp_path):
    root, console = root_handlers
    file = logging.FileHandler(tmp_path / "app.log")
    root.addHandler(file)
    logs.configure(logging.WARNING)
    _say_everything(logging.getLogger("t.default"))
    file.flush()
    shown = console.getvalue().splitlines()
    kept = (tmp_path / "app.log").read_text().splitlines()
    assert shown == ["outputs in /x", "a warning"]
    assert kept == ["start-up detail", "outputs in /x", "a warning", "the one error line"]
    assert logs.console_level() == logging.WARNING


def test_log_level_info_shows_the_start_up_detail_and_debug_reaches_the_file(root_handlers, tmp_path):
    root, console = root_handlers
    file = logging.FileHandler(tmp_path / "app.log")
    root.addHandler(file)
    logs.configure(logging.INFO)
    logs.configure(logging.INFO)  # idempotent: one filter per console handler
    _say_everything(logging.getLogger("t.info"))
    assert console.getvalue().splitlines() == ["start-up detail", "outputs in /x", "a warning"]
    logs.configure(logging.DEBUG)
    logging.getLogger("t.debug").debug("debug detail")
    file.flush()
    assert "debug detail" in console.getvalue() and "debug detail" in (tmp_path / "app.log").read_text()


def _child(setup: logs.LogSetup) -> None:
    setup.apply("%(message)s")
    _say_everything(logging.getLogger("t.child"))


def test_a_child_process_logs_like_its_parent(root_handlers, tmp_path, capfd):
    root, _ = root_handlers
    file = logging.FileHandler(tmp_path / "app.log")
    root.addHandler(file)
    logs.configure(logging.WARNING)
    setup = logs.LogSetup.current()
    assert setup == logs.LogSetup(logging.WARNING, logging.INFO, (str(tmp_path / "app.log"),))
    proc = mp.get_context("spawn").Process(target=_child, args=(setup,))
    proc.start()
    proc.join(120)
    assert proc.exitcode == 0
    err = capfd.readouterr().err.splitlines()
    assert err == ["outputs in /x", "a warning"]
    assert (tmp_path / "app.log").read_text().splitlines() == [
        "start-up detail",
        "outputs in /x",
        "a warning",
        "the one error line",
    ]


def test_file_handlers_are_not_consoles(tmp_path):
    handler = logging.FileHandler(tmp_path / "x.log")
    try:
        assert not logs.is_console(handler)
        assert logs.is_console(logging.StreamHandler())
    finally:
        handler.close()
