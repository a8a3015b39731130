"""Lists of options in the README and docs/ against what exists: the config groups and their options
(``conf/``), the guidance values, schedules and lockstep methods (their declarations in code), the
extras (``pyproject.toml``) and the benchmark scripts that run in the network namespace.

A list that names only some options is checked where the page enumerates a group: a table row that
names two or more of a group's options must name every one, and a bare name in an options cell must
be an option that exists. New options fail here until a page lists them.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from tests.test_docs_commands import _run_groups_in_conf
from tests.test_docs_links import _table_rows

REPO = Path(__file__).resolve().parents[1]
CODE = re.compile(r"`([^`\n]+)`")
NAME = re.compile(r"[a-z_][a-z0-9_]*")
RUN_GROUPS = _run_groups_in_conf(REPO / "conf")


def _names(cell: str, group: str) -> set[str]:
    """The option names a cell writes in code: bare (`sim`) or as a choice (`+experiment=rtc_paper`)."""
    out = set()
    for code in CODE.findall(cell):
        code = re.sub(rf"^\+?{group}=", "", code)
        if NAME.fullmatch(code):
            out.add(code)
    return out


def _rows(page: str, heading: str) -> dict[str, list[str]]:
    rows = _table_rows(REPO / page, heading)
    return {k: v for k, v in rows.items() if k not in ("group", "guidance", "method", "extra")}


def test_readme_lists_every_group_and_option():
    rows = _rows("README.md", "## Configuration groups")
    assert set(rows) == set(RUN_GROUPS), "README's group table against the run's groups in conf/"
    for group, options in RUN_GROUPS.items():
        named = _names(rows[group][0], group)
        assert not set(options) - named, f"README, group {group}: {sorted(set(options) - named)} not listed"
        assert not named - set(options), f"README, group {group}: {sorted(named - set(options))} are no options"


def test_configuration_page_lists_every_group_and_the_options_it_enumerates():
    rows = _rows("docs/configuration.md", "## Groups")
    assert set(rows) == set(RUN_GROUPS), "docs/configuration.md's group table against the run's groups in conf/"
    for group, options in RUN_GROUPS.items():
        named = _names(" ".join(rows[group]), group) & set(options)
        if len(named) >= 2:
            missing = sorted(set(options) - named)
            assert not missing, f"docs/configuration.md, group {group}: names some options but not {missing}"


def test_rtc_page_lists_every_guidance_schedule_and_method():
    from algorithms.lockstep_eval import METHODS
    from policies.base import Guidance, Schedule

    modes = _rows("docs/rtc.md", "## Guidance modes")
    assert {NAME.match(m).group(0) for m in modes} == {str(g) for g in Guidance}
    knobs = _table_rows(REPO / "docs" / "rtc.md", "## The RTC knobs")
    assert _names(knobs["guidance"][1], "guidance") == {str(g) for g in Guidance}
    assert _names(knobs["schedule"][1], "schedule") == {str(s) for s in Schedule}
    methods = _rows("docs/rtc.md", "## Lockstep evaluation")
    assert set(methods) == set(METHODS)


def test_install_page_has_a_row_per_extra():
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    rows = _rows("docs/install.md", "## What each machine installs")
    shown = {k for k in rows if k != "(base)"}
    assert shown == set(extras) - {"all"}, "docs/install.md's extras table against pyproject.toml"
    text = (REPO / "docs" / "install.md").read_text()
    assert "`.[all]`" in text


def test_install_page_names_what_all_leaves_out():
    """The table says which extras ``all`` leaves out; pyproject.toml decides."""
    extras = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]
    in_all = set(re.search(r"\[([^\]]+)\]", extras["all"][0]).group(1).split(","))
    rows = _rows("docs/install.md", "## What each machine installs")
    for extra in set(extras) - {"all"}:
        says_not_in_all = "not part of `all`" in " ".join(rows[extra])
        assert says_not_in_all == (extra not in in_all), f"docs/install.md, extra {extra}"


def test_benchmarks_page_names_the_scripts_that_run_in_the_namespace():
    text = (REPO / "docs" / "benchmarks.md").read_text()
    sentence = next(p for p in text.split("\n\n") if "scripts/netns.py" in p)
    named = set(re.findall(r"`(bench_\w+\.py)`", sentence))
    reexec = {
        p.name
        for p in (REPO / "benchmarks").glob("*.py")
        if re.search(r"^\s*_?reexec_in_netns\(\)", p.read_text(), re.MULTILINE)
    }
    assert reexec, "no benchmark re-runs itself in the namespace: the check below would pass on nothing"
    assert named == reexec
