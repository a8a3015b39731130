"""What Hydra raises while composing, said as our one config-error line: ``<key>: <why>``.

Hydra reports a composition problem (an option that does not exist, a YAML syntax error in a
config file, an override it cannot parse, a value of the wrong type) as a multi-line message with
the config search path; a user needs the one key to fix and why. Each exception type carries the
key in its own place (``full_key`` on OmegaConf errors, ``override`` on parse errors,
``missing_cfg_file`` on missing options, the file's mark on YAML errors), so each is read from
there rather than from the text.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import yaml
from hydra.errors import MissingConfigException, OverrideParseException, SearchPathException
from omegaconf.errors import OmegaConfBaseException


def _squash(text: str) -> str:
    return " ".join(str(text).split())


def _group_of(file: str, roots: Sequence[str]) -> str:
    """``<root>/robot/mine.yaml`` -> ``robot`` (``hydra/launcher/x.yaml`` -> ``hydra/launcher``);
    a primary config at a root -> its name. A file under none of ``roots`` -> its parent folder."""
    path = Path(file).resolve()
    for root in roots:
        try:
            rel = path.relative_to(Path(root).resolve())
        except ValueError:
            continue
        return rel.parent.as_posix() if rel.parent.as_posix() != "." else rel.with_suffix("").as_posix()
    return path.parent.name


def _yaml_line(exc: yaml.MarkedYAMLError, roots: Sequence[str]) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f"{mark.name}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else "a config file"
    what = _squash(exc.problem or "")
    if exc.context:
        context = _squash(exc.context)
        start = exc.context_mark
        if start is not None and mark is not None and (start.line, start.column) != (mark.line, mark.column):
            context += f" that starts at line {start.line + 1}, column {start.column + 1}"
        what = f"{what} ({context})" if what else context
    key = _group_of(mark.name, roots) if mark is not None else "config"
    return f"{key}: YAML error in {where}: {what}"


def _override_key(override: str) -> str:
    """``+robot.hz=1`` -> ``robot.hz``; a string with no ``=`` is its own key."""
    key = override.split("=", 1)[0].lstrip("+~")
    return key or override


def _missing_line(exc: MissingConfigException) -> str:
    text = _squash(str(exc).split("\n\n", 1)[0])
    missing = exc.missing_cfg_file or ""
    if text.startswith("Cannot find primary config"):
        return f"--config-name: {text}"
    group = missing.rsplit("/", 1)[0] if "/" in missing else missing
    options = f" (available: {', '.join(exc.options)})" if exc.options else ""
    return f"{group or 'config'}: {text}{options}"


def config_error_line(exc: BaseException, roots: Sequence[str] = ()) -> str:
    """``<key>: <why>`` (one line) for an exception raised while Hydra composed the config.
    ``roots``: the config directories searched (the app's and ``--config-dir``), to name a file's group."""
    cause = exc.__cause__ if exc.__cause__ is not None else exc.__context__
    if isinstance(exc, yaml.MarkedYAMLError):
        return _yaml_line(exc, roots)
    if isinstance(cause, yaml.MarkedYAMLError):
        return _yaml_line(cause, roots)
    if isinstance(exc, MissingConfigException):
        return _missing_line(exc)
    if isinstance(exc, SearchPathException):
        return f"--config-dir: {_squash(exc)}"
    if isinstance(exc, OverrideParseException):
        detail = _squash(str(exc).replace(f"Error parsing override '{exc.override}'", ""))
        detail = re.sub(r"\s*See https?://\S+ for details\.?", "", detail)
        return f"{_override_key(exc.override)}: cannot parse override {exc.override!r}: {detail}"
    for err in (exc, cause):
        key = getattr(err, "full_key", None)
        if isinstance(err, OmegaConfBaseException) and key:
            from inference.validation import RENAMED_KEYS

            if key in RENAMED_KEYS:
                return f"{key}: renamed: use {RENAMED_KEYS[key]}"
            first = _squash(str(err).split("\n")[0]) or type(err).__name__
            outer = _squash(exc) if err is not exc else ""
            return f"{key}: {first}" + (f" ({outer})" if outer and outer != first else "")
    text = _squash(exc) or type(exc).__name__
    quoted = re.search(r"'([\w./+~-]+)'", text)
    if quoted:
        return f"{_override_key(quoted.group(1))}: {text}"
    return f"config: {text}"


def search_roots(app_conf_dir: str, argv: Sequence[str]) -> list[str]:
    """The config directories of this command line: the app's and the ``--config-dir`` /
    ``--config-path`` that Hydra's own argument parser finds in ``argv``."""
    from hydra._internal.utils import get_args_parser

    roots = [app_conf_dir]
    try:
        args, _ = get_args_parser().parse_known_args(list(argv))
    except SystemExit:
        return roots
    for extra in (args.config_dir, args.config_path):
        if extra:
            roots.insert(0, os.path.abspath(os.path.expanduser(extra)))
    return roots
