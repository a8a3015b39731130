"""Every command the README and docs/ show for the app is one the app accepts.

Each ``python -m inference ...`` and ``make run [ARGS="..."]`` in a page (code blocks and inline code)
goes through the app's real entry point, ``inference.app.main``, in this process: Hydra parses the
command line and composes the config (``-m`` included: each job of a multirun), and the run object
validates it with the start-time checks. Only the launch is left out (the run is validated, never
started), so nothing here needs a robot, a policy server or a GPU.

A command's trailing comment may carry markers, separated from other remarks by ``;``:

- ``# fails: <text>``: the command is shown failing on purpose. It must exit 2 with one line
  ``config error: ...`` that contains ``<text>``.
- ``# needs: <what>``: the command needs something a fresh checkout does not have. ``<what>`` is an
  extra of ``pyproject.toml`` (checked installed), a side venv ``.venvs/<name>`` or a path such as
  ``~/.ray_token`` (checked present), or a thing the machine may lack (``server``, ``robot``): the
  command is skipped, with that reason, where it is missing, and checked where it exists.

Placeholders are the reader's to fill: an optional ``[key=value]`` and a trailing ``...`` are dropped
and the rest is checked; a command with a ``<value>`` or ``=...`` to fill in is skipped, saying so.
The shell's expansions that reach the app are applied (``~/x`` as a word of its own, ``$HOME``);
Hydra itself takes no ``~`` inside an override, so a page writes ``key=$HOME/x``.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
INLINE = re.compile(r"`((?:python3? -m inference|make run)(?=\s|`)[^`]*)`")
APP = re.compile(r"^(?:.*&&\s*)?(?:python3? -m inference|make run)(?=\s|$)")
OPTIONAL = re.compile(r"(?<![\S'\"])\[[^\]\s'\"]+\](?!\S)")  # [launcher.address=host:port]
EXTRA_REQUIREMENTS = None  # filled on first use from pyproject.toml


@dataclass(frozen=True)
class Command:
    page: str
    line: int
    text: str  # as the page shows it, continuation lines joined
    argv: tuple[str, ...]  # the app's arguments
    fails: str | None  # text the config-error line must contain
    needs: tuple[str, ...]

    @property
    def id(self) -> str:
        return f"{self.page}:{self.line}: {self.text}"


def _split_comment(line: str) -> tuple[str, str]:
    """``cmd  # remark`` -> (cmd, remark); a ``#`` inside quotes is part of the command."""
    quote = None
    for i, ch in enumerate(line):
        if quote:
            quote = None if ch == quote else quote
        elif ch in "'\"":
            quote = ch
        elif ch == "#" and (i == 0 or line[i - 1].isspace()):
            return line[:i].rstrip(), line[i + 1 :].strip()
    return line.rstrip(), ""


def _markers(remarks: list[str]) -> tuple[str | None, tuple[str, ...]]:
    fails, needs = None, []
    for remark in remarks:
        for clause in remark.split(";"):
            clause = clause.strip()
            if clause.startswith("fails:"):
                fails = clause[len("fails:") :].strip()
            elif clause.startswith("needs:"):
                needs += [w.strip() for w in clause[len("needs:") :].split(",") if w.strip()]
    return fails, tuple(needs)


def _app_argv(command: str) -> tuple[str, ...]:
    """The arguments ``python -m inference`` receives for ``command`` as a shell would pass them."""
    command = re.sub(r"^.*&&\s*", "", command)
    command = OPTIONAL.sub(" ", command)
    words = shlex.split(command)
    if words[0] == "make":  # make run [ARGS="..."]
        args = [w for w in words[2:] if w.startswith("ARGS=")]
        words = shlex.split(args[0][len("ARGS=") :]) if args else []
    else:
        words = words[3:]
    if words and words[-1] == "...":
        words = words[:-1]
    return tuple(os.path.expandvars(os.path.expanduser(w)) for w in words)


def _block_commands(page: Path, text: str) -> list[Command]:
    out = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            start = i
            cmd, remark = _split_comment(lines[i])
            parts, remarks = [cmd], [remark]
            while parts[-1].endswith("\\") and i + 1 < len(lines):
                parts[-1] = parts[-1][:-1]
                i += 1
                cmd, remark = _split_comment(lines[i])
                parts.append(cmd)
                remarks.append(remark)
            i += 1
            joined = " ".join(p.strip() for p in parts)
            if APP.match(joined):
                fails, needs = _markers(remarks)
                out.append(
                    Command(str(page.relative_to(REPO)), first_line + start, joined, _app_argv(joined), fails, needs)
                )
    return out


def _inline_commands(page: Path, text: str) -> list[Command]:
    prose = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
    out = []
    for m in INLINE.finditer(prose):
        joined = " ".join(m.group(1).split())
        if joined.endswith(" group=option key=value ..."):
            continue  # the syntax itself, not a command
        out.append(
            Command(
                str(page.relative_to(REPO)), prose.count("\n", 0, m.start()) + 1, joined, _app_argv(joined), None, ()
            )
        )
    return out


def doc_commands() -> list[Command]:
    out = []
    for page in PAGES:
        text = page.read_text()
        out += _block_commands(page, text) + _inline_commands(page, text)
    return out


COMMANDS = doc_commands()


def _extra_requirements() -> dict[str, list[str]]:
    import tomllib

    return tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def _missing_extra(extra: str) -> str | None:
    """None when every requirement of ``extra`` is installed, else the first one that is not."""
    from packaging.requirements import Requirement

    for spec in _extra_requirements()[extra]:
        req = Requirement(spec)
        if req.name == "rt-inference-engine":
            continue
        try:
            version = metadata.version(req.name)
        except metadata.PackageNotFoundError:
            return f"{req.name} is not installed"
        if req.specifier and not req.specifier.contains(version, prereleases=True):
            return f"{req.name} {version} does not satisfy {req.specifier}"
    return None


def missing(need: str) -> str | None:
    """Why ``need`` (a ``# needs:`` word) is not met here, or None when it is."""
    if need in _extra_requirements():
        problem = _missing_extra(need)
        return f"the {need} extra: {problem}" if problem else None
    if "/" in need or need.startswith("~"):
        path = REPO / os.path.expanduser(need)  # a relative path is the repository's, like the app's
        return None if path.exists() else f"{need} does not exist here"
    if need.isidentifier():
        import importlib.util

        return None if importlib.util.find_spec(need) is not None else f"the Python package {need} is not installed"
    return f"{need}, which this machine does not have"


def validate_only(monkeypatch) -> list[str]:
    """The app as it is, except that a job builds the run object (composition checked, start-time
    validation run) and returns without launching it. Returns the run dirs of the jobs validated."""
    from inference import app
    from inference.run import Run

    validated: list[str] = []

    def build_and_validate(cfg, run_dir):
        Run(cfg, run_dir)
        validated.append(str(run_dir))
        return {}

    monkeypatch.setattr(app, "build_and_execute", build_and_validate)
    return validated


def run_app(argv: tuple[str, ...], tmp: Path) -> tuple[int, str, str]:
    """``inference.app.main`` with ``argv``; the run and sweep dirs in ``tmp``, Hydra's logging off."""
    from inference import app
    from tests.inference.test_config_errors import logging_restored

    ours = [
        f"hydra.run.dir={tmp / 'run'}",
        f"hydra.sweep.dir={tmp / 'multirun'}",
        "hydra/job_logging=disabled",
        "hydra/hydra_logging=disabled",
    ]
    # beside the command's own overrides: Hydra's parser takes one run of them (``robot=gym --cfg job``)
    first = next((i for i, w in enumerate(argv) if "=" in w and not w.startswith("-")), len(argv) - 1)
    old = sys.argv
    sys.argv = ["inference", *argv[: first + 1], *ours, *argv[first + 1 :]]
    out, err = io.StringIO(), io.StringIO()
    try:
        with logging_restored(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            app.main()
        code = 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    finally:
        sys.argv = old
    return code, out.getvalue(), err.getvalue()


def test_the_pages_show_commands():
    """The extraction finds the pages' commands (a changed page layout would otherwise pass silently)."""
    pages = {c.page for c in COMMANDS}
    assert {"README.md", "docs/configuration.md", "docs/rtc.md"} <= pages
    assert any(c.text == 'make run ARGS="algorithm=sequential policy=scripted"' for c in COMMANDS)
    assert any(c.fails for c in COMMANDS), "no command is shown failing on purpose"


@pytest.mark.parametrize("command", COMMANDS, ids=[c.id for c in COMMANDS])
def test_doc_command_is_accepted_by_the_app(command: Command, tmp_path, monkeypatch):
    reasons = [r for r in (missing(n) for n in command.needs) if r]
    if reasons:
        pytest.skip(f"{command.id}: needs {'; '.join(reasons)}")
    placeholders = [w for w in command.argv if re.search(r"<[^>]*>|=\.\.\.$", w)]
    if placeholders:
        pytest.skip(f"{command.id}: the reader fills in {' '.join(placeholders)}")
    validated = validate_only(monkeypatch)
    code, out, err = run_app(command.argv, tmp_path)
    said = f"exit {code}\nstdout: {out[-2000:]}\nstderr: {err[-2000:]}"
    if command.fails is not None:
        lines = err.strip().splitlines()
        assert code == 2 and len(lines) == 1 and lines[0].startswith("config error: "), said
        assert command.fails in lines[0], f"the error does not say {command.fails!r}: {lines[0]}"
        return
    assert code == 0, said
    job = not any(flag in command.argv for flag in ("--help", "-h", "--cfg", "-c", "--info", "--hydra-help"))
    if job:
        assert validated, f"no job was validated: {said}"


def _run_groups_in_conf(conf: Path) -> dict[str, list[str]]:
    """The run's groups read from the files: those conf/config.yaml's defaults list chooses, and those
    whose options are all ``# @package _global_`` (added with ``+group=option``)."""
    import yaml

    defaults = yaml.safe_load((conf / "config.yaml").read_text())["defaults"]
    chosen = {next(iter(entry)).split("@")[0] for entry in defaults if isinstance(entry, dict)}
    groups = {}
    for folder in sorted(p for p in conf.iterdir() if p.is_dir()):
        options = sorted(folder.glob("*.yaml"))
        global_only = options and all(o.read_text().startswith("# @package _global_") for o in options)
        if folder.name in chosen or global_only:
            groups[folder.name] = [o.stem for o in options]
    return groups


def _help_groups(stdout: str) -> dict[str, list[str]]:
    section = stdout.split("== Configuration groups ==", 1)[1].split("== Config ==", 1)[0]
    rows = [line.split(": ", 1) for line in section.splitlines() if re.match(r"^[\w/]+: ", line)]
    return {group: options.split(", ") for group, options in rows}


def test_help_lists_the_runs_own_groups(tmp_path):
    """``--help`` lists each group of the run with its options, and not the other entry points'
    configs that share ``conf/`` (``cluster``, ``fleet``, ``train``) nor the algorithm schemas."""
    code, out, err = run_app(("--help",), tmp_path)
    assert code == 0, err
    shown = _help_groups(out)
    expected = _run_groups_in_conf(REPO / "conf")
    assert shown == expected
    assert {"robot", "policy", "algorithm", "experiment"} <= set(shown)
    assert not {"cluster", "fleet", "train", "schema/algorithm"} & set(shown)


def test_help_lists_the_options_of_a_config_dir(tmp_path):
    """A lab's ``--config-dir`` adds its options to the run's groups in the help as in the run."""
    lab = tmp_path / "lab"
    (lab / "robot").mkdir(parents=True)
    (lab / "robot" / "mine.yaml").write_text((REPO / "conf" / "robot" / "igris_b.yaml").read_text())
    (lab / "train").mkdir()
    (lab / "train" / "mine.yaml").write_text("lr: 0.1\n")
    code, out, err = run_app(("--config-dir", str(lab), "--help"), tmp_path)
    assert code == 0, err
    shown = _help_groups(out)
    assert "mine" in shown["robot"]
    assert "train" not in shown
