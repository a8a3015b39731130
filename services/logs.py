"""The run's two log destinations: a quiet console and a complete log file.

A run's start-up says a lot that matters only when something is wrong (the GL backend, each child
process's CPU placement, the shared block's size, how long the policy took to build). On the console
that buries what a user needs: the progress lines, where the outputs go, and warnings. So the console
shows records at or above ``log_level`` (WARNING by default) plus the few INFO records marked
``extra=SHOW`` (the outputs folder, the live view's URL, an episode's result), while the log file in
the run directory keeps everything from INFO up (DEBUG too when ``log_level=DEBUG``). A record the
process also prints itself (the one ``config error`` / fault line on stderr) is marked
``extra=FILE_ONLY``, so it is said once on the console and still kept in the file.

Child processes get the same split (:class:`LogSetup`): their console is filtered the same way and
they append to the same log file.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

SHOW = {"show": True}  # an INFO record the console shows at the default level
FILE_ONLY = {"file_only": True}  # a record the process has printed itself: the log file only
FILE_LEVEL = logging.INFO  # the log file keeps at least this much, whatever the console shows


class ConsoleFilter(logging.Filter):
    """Passes what the console shows: ``level`` and above, and records marked SHOW; never FILE_ONLY."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = int(level)

    def filter(self, record: logging.LogRecord) -> bool:
        if getattr(record, "file_only", False):
            return False
        return record.levelno >= self.level or bool(getattr(record, "show", False))


def is_console(handler: logging.Handler) -> bool:
    """A handler writing to a stream (stdout/stderr), not to a file."""
    return isinstance(handler, logging.StreamHandler) and not isinstance(handler, logging.FileHandler)


def configure(console_level: int) -> None:
    """Split the root logger's handlers: console handlers show ``console_level`` and up (plus SHOW),
    file handlers keep ``min(FILE_LEVEL, console_level)`` and up (the root logger's level)."""
    root = logging.getLogger()
    root.setLevel(min(FILE_LEVEL, int(console_level)))
    for handler in root.handlers:
        if is_console(handler):
            for old in [f for f in handler.filters if isinstance(f, ConsoleFilter)]:
                handler.removeFilter(old)
            handler.addFilter(ConsoleFilter(console_level))


def console_level() -> int:
    """The level this process's console shows (the root logger's level where nothing was configured)."""
    for handler in logging.getLogger().handlers:
        for f in handler.filters:
            if isinstance(f, ConsoleFilter):
                return f.level
    return logging.getLogger().getEffectiveLevel()


@dataclass(frozen=True)
class LogSetup:
    """This process's split, handed to a child process (picklable) so it logs the same way."""

    console_level: int
    file_level: int
    log_files: tuple[str, ...]

    @classmethod
    def current(cls) -> LogSetup:
        root = logging.getLogger()
        files = tuple(h.baseFilename for h in root.handlers if isinstance(h, logging.FileHandler))
        return cls(console_level(), root.getEffectiveLevel(), files)

    def apply(self, console_format: str) -> None:
        """In the child: stderr at the console level (plus SHOW), and the parent's log files appended
        to from ``file_level`` up."""
        root = logging.getLogger()
        root.handlers.clear()
        root.setLevel(min(self.file_level, self.console_level))
        console = logging.StreamHandler()
        console.setFormatter(logging.Formatter(console_format))
        console.addFilter(ConsoleFilter(self.console_level))
        root.addHandler(console)
        for path in self.log_files:
            handler = logging.FileHandler(path, mode="a")
            handler.setFormatter(logging.Formatter(console_format))
            root.addHandler(handler)
