"""The README and the pages under docs/ refer only to what is in the repository.

Checked, in README.md and every docs/*.md:

- every relative Markdown link resolves to a file or directory of the repository, and its
  ``#anchor`` (if any) to a heading of the target page;
- every repository path written in inline code (``conf/realtime/default.yaml``) exists;
- every dotted name of one of our packages written in inline code (``policies.base.Policy``)
  resolves to a module, and the name after the module is defined there;
- every ``python -m <module>`` and ``python <file>.py`` in a page names a module or file we have;
- no page cites documents that are not part of the repository, nor tracker numbers or the
  system this engine replaced, instead of saying what a thing is.

The same wording rule is checked over the tracked source, config and result files.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
PACKAGES = ("algorithms", "inference", "policies", "robots", "services", "tasks", "scripts", "benchmarks", "tests")
TOP_LEVEL = (*PACKAGES, "conf", "docs", ".ci")
THIRD_PARTY_MODULES = {"pip", "venv", "pytest", "ensurepip"}

# Mentions a reader of the repository cannot follow.
BANNED = [
    (re.compile(r"\b(?:DESIGN|STYLE)\.md\b"), "cites a document that is not in the repository"),
    (re.compile(r"\bissues? ?#?\d+", re.IGNORECASE), "cites a tracker issue instead of saying what the thing is"),
    # ("the seed" alone is also a random seed: "reproducible from the seed" is fine)
    (
        re.compile(
            r"\bthe seed(?:'s| system| file| code| repo)\b|\b(?:as in|beyond|replaces) the seed\b|\bseed system\b",
            re.IGNORECASE,
        ),
        "refers to the system this engine replaced instead of saying what the thing is",
    ),
]
# Pages also name no directory outside the repository (code may default to a checkout's neighbour).
OUTSIDE = [(re.compile(r"\.\./shared\b|/work/\w+"), "refers to a directory outside the repository")]

FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
INLINE_CODE = re.compile(r"`([^`\n]+)`")
PY_MODULE = re.compile(r"python3?(?:\.\d+)? -m ([A-Za-z_][\w.]*)")
FILE_NAME = re.compile(r"\.(?:md|py|ya?ml|json|jsonl|csv|png|npz|txt|toml|mcap|safetensors)$")
PY_FILE = re.compile(r"python3?(?:\.\d+)? ((?:[\w.-]+/)*[\w-]+\.py)\b")


def _slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to dashes."""
    text = re.sub(r"`|\*\*|\*|_(?=\w)|\[|\]\([^)]*\)", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = FENCE.sub("", page.read_text())
    return {_slug(m.group(1)) for m in re.finditer(r"^#{1,6}\s+(.+?)\s*#*\s*$", text, re.MULTILINE)}


def _module_file(dotted: str) -> tuple[Path | None, list[str]]:
    """The longest prefix of ``dotted`` that is one of our modules, and the names after it."""
    parts = dotted.split(".")
    for n in range(len(parts), 0, -1):
        base = REPO.joinpath(*parts[:n])
        for candidate in (base.with_suffix(".py"), base / "__init__.py"):
            if candidate.is_file():
                return candidate, parts[n:]
    return None, parts


def _defines(module: Path, name: str) -> bool:
    text = module.read_text()
    return (
        re.search(
            rf"^\s*(?:class|def|async def)\s+{re.escape(name)}\b|^\s*{re.escape(name)}\s*[:=]"
            rf"|\bimport\b[^\n]*\b{re.escape(name)}\b",
            text,
            re.MULTILINE,
        )
        is not None
    )


def _problems(page: Path) -> list[str]:
    rel = page.relative_to(REPO)
    raw = page.read_text()
    prose = FENCE.sub("", raw)
    out: list[str] = []
    for pattern, why in BANNED + OUTSIDE:
        for m in pattern.finditer(raw):
            out.append(f"{rel}: {m.group(0)!r} {why}")
    for m in LINK.finditer(prose):
        target = m.group(1)
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        dest = (page.parent / path_part).resolve() if path_part else page
        if not dest.exists():
            out.append(
                f"{rel}: link {target!r}: {dest.relative_to(REPO) if dest.is_relative_to(REPO) else dest} does not exist"
            )
        elif REPO not in dest.parents and dest != REPO:
            out.append(f"{rel}: link {target!r} leaves the repository")
        elif anchor and dest.suffix == ".md" and anchor not in _anchors(dest):
            out.append(f"{rel}: link {target!r}: no heading with anchor #{anchor} in {dest.relative_to(REPO)}")
    for m in INLINE_CODE.finditer(prose):
        code = m.group(1).strip()
        if re.search(r"[<>*{}$ =,|]", code):
            continue  # a pattern, a placeholder or a command, not one path
        first = code.split("/")[0]
        if "/" in code and first in TOP_LEVEL:
            path = code.split(":")[0].rstrip("/")
            if not (REPO / path).exists():
                out.append(f"{rel}: `{code}`: no such path in the repository")
        elif (
            re.fullmatch(r"[A-Za-z_][\w.]*(?::[A-Za-z_]\w*)?", code)
            and code.split(".")[0] in PACKAGES
            and "." in code
            and not FILE_NAME.search(code)
        ):
            dotted = code.split(":")[0]
            module, rest = _module_file(dotted)
            if module is None:
                out.append(f"{rel}: `{code}`: no module {dotted.split('.')[0]}... of that name")
            elif rest and not _defines(module, rest[0]):
                out.append(f"{rel}: `{code}`: {module.relative_to(REPO)} defines no {rest[0]!r}")
    for m in PY_MODULE.finditer(raw):
        name = m.group(1)
        if name.split(".")[0] in THIRD_PARTY_MODULES or name.split(".")[0] not in PACKAGES:
            continue
        module, rest = _module_file(name)
        main_file = REPO.joinpath(*name.split("."), "__main__.py")
        if (module is None or rest) and not main_file.is_file():
            out.append(f"{rel}: `python -m {name}`: no such module in the repository")
    for m in PY_FILE.finditer(raw):
        if m.group(1).split("/")[0] in TOP_LEVEL and not (REPO / m.group(1)).is_file():
            out.append(f"{rel}: `python {m.group(1)}`: no such file in the repository")
    return out


def test_pages_exist():
    names = {p.name for p in PAGES}
    for topic in (
        "rtc.md",
        "realtime.md",
        "ros2.md",
        "openpi.md",
        "distributed.md",
        "telemetry.md",
        "faults.md",
        "benchmarks.md",
        "extending.md",
        "configuration.md",
    ):
        assert topic in names, f"docs/{topic} is missing"


def test_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    lines = text.count("\n")
    assert lines <= 150, f"README.md has {lines} lines; depth belongs in docs/"
    for must in ("make run", "make test", "## Data flow", "## Configuration groups"):
        assert must in text, f"README.md lacks {must!r}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_page_refers_only_to_the_repository(page: Path):
    problems = _problems(page)
    assert not problems, "\n".join(problems)


def _tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    keep = (".py", ".yaml", ".yml", ".md", ".toml", ".txt", ".cfg", ".sh")
    out = []
    for name in filter(None, listed.split("\0")):
        path = REPO / name
        if (path.suffix in keep or path.name in ("Makefile", "run")) and path.is_file():
            out.append(path)
    return out


def test_code_and_results_say_what_things_are():
    """Comments, docstrings, messages and result files name the thing, not a document or ticket
    outside the repository (this file's own patterns excepted)."""
    problems = []
    for path in _tracked_text_files():
        if path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for pattern, why in BANNED:
            for m in pattern.finditer(text):
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(REPO)}:{line}: {m.group(0)!r} {why}")
    assert not problems, "\n".join(problems)


README_SECTION = re.compile(r"\bREADME(?:'s)? ['\"]([^'\"\n]+)['\"]")


def test_code_points_at_readme_sections_that_exist():
    """A message or comment that sends the reader to a README section names one the README has."""
    headings = {
        m.group(1).strip().lower()
        for m in re.finditer(r"^#{1,6}\s+(.+?)\s*$", FENCE.sub("", (REPO / "README.md").read_text()), re.MULTILINE)
    }
    problems = []
    for path in _tracked_text_files():
        if path.suffix == ".md" or path == Path(__file__).resolve():
            continue
        text = path.read_text(errors="replace")
        for m in README_SECTION.finditer(text):
            if m.group(1).strip().lower() not in headings:
                line = text.count("\n", 0, m.start()) + 1
                problems.append(f"{path.relative_to(REPO)}:{line}: README has no section {m.group(1)!r} (see docs/)")
    assert not problems, "\n".join(problems)


def _table_rows(page: Path, heading: str) -> dict[str, list[str]]:
    """``{first cell without backticks: other cells}`` of the first table under ``heading``."""
    text = page.read_text()
    section = text.split(heading, 1)[1]
    rows: dict[str, list[str]] = {}
    started = False
    for line in section.splitlines():
        if line.startswith("|"):
            started = True
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            if set(cells[0]) <= set("-: ") or cells[0] in ("key", "kind"):
                continue
            rows[cells[0].strip("`")] = cells[1:]
        elif started:
            break
    return rows


def test_faults_page_lists_every_fault_kind():
    from services.errors import FaultKind

    rows = _table_rows(REPO / "docs" / "faults.md", "## Fault kinds")
    assert set(rows) == {str(k) for k in FaultKind}


def test_rtc_page_lists_every_rtc_knob_with_its_default():
    """The knob table of docs/rtc.md against the one declaration of the knobs (``RTCConfig``)."""
    import dataclasses
    import importlib

    found = [
        p for p in (REPO / "algorithms").rglob("*.py") if re.search(r"^class RTCConfig\b", p.read_text(), re.MULTILINE)
    ]
    assert len(found) == 1, f"RTCConfig is declared in {found}"
    module = importlib.import_module(".".join(found[0].relative_to(REPO).with_suffix("").parts))
    rows = _table_rows(REPO / "docs" / "rtc.md", "## The RTC knobs")
    knobs = {f.name: f.default for f in dataclasses.fields(module.RTCConfig)}
    assert set(rows) == set(knobs)
    for name, default in knobs.items():
        shown = rows[name][0].strip("`")
        value = "null" if default is None else str(getattr(default, "value", default))
        assert shown == value, f"docs/rtc.md shows {name} = {shown}, RTCConfig says {value}"
