"""One line for an error that came back from a remote policy (a Ray actor, a Serve replica).

Ray wraps what a remote call raised (``RayTaskError``) and its ``str`` is the remote traceback, many
lines with terminal colour codes. A fault's message is one line (``run FAILED (<kind> ...): <message>``
on the console, ``fault.message`` in summary.json), so the message names the original exception's type
and text; the traceback stays in the actor's or replica's log.
"""

from __future__ import annotations

import re

_ANSI = re.compile(r"\x1b\[[0-9;]*m")


def error_line(exc: BaseException) -> str:
    """``<Type>: <message>`` of the exception the remote side raised (``exc`` itself where Ray did
    not wrap one), on one line without colour codes. Where the text carries a remote traceback (an
    actor whose constructor raised), its last line, the original exception, is kept beside the first."""
    cause = getattr(exc, "cause", None)
    original = cause if isinstance(cause, BaseException) else exc
    text = _ANSI.sub("", str(original))
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    name = type(original).__name__
    if not lines:
        return name
    line = f"{name}: {lines[0]}"
    if len(lines) > 1 and any(entry.startswith('File "') for entry in lines):
        line += f" ({lines[-1]})"
    return line
