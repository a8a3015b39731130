"""Every measured number in the README and docs/ is one its results file holds.

A page states a speed or quality figure only next to the results file it comes from: in the same
paragraph, list item or table row, a link to ``benchmarks/results/<name>`` (or the path in inline
code); the items of a list also cite what the paragraph that introduces them (ending in ``:``) cites. The figure must be one of that file's numbers (or of its ``.csv`` / ``.json`` twin) as the
file rounds it, or rounded further: ``2.4x`` matches a file's ``2.38``, ``1.02x`` does not match
``1.01``. A ratio (``0.79x``) must be one the file states as a ratio: a number written with ``x``, or
in a table column of ratios (a header with ``/``, ``x``, "ratio" or "speed-up"), so a ratio worked out
from a table is not quoted until the file states it. A block that links no results file states no
figures: it links the file instead.

Measured figures are recognised by their form: ratios (``3.3x``), times in ms or µs and seconds with
decimals (``4.4 s``), rates and distances below 1 (``0.87``, ``1.00``), counts of episodes (``9/10``)
and percentages. Numbers in code (config values, commands) and in a table's ``default`` column are
not figures. The few numbers of those forms that are not measurements are listed in
``NOT_MEASURED`` with what they are.

The check finds a figure among its file's numbers, not in a named cell: a rate that drifted to
another value the same table also holds (a 0.93 in a table full of rates) still passes. Ratios are
held tighter (they must be stated as ratios), since a ratio worked out from a table by hand is the
figure that drifts when the table is rerun.
"""

from __future__ import annotations

import re
from decimal import ROUND_HALF_UP, Decimal
from functools import cache
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
PAGES = sorted([REPO / "README.md", *(REPO / "docs").glob("*.md")])
FENCE = re.compile(r"^```.*?^```", re.MULTILINE | re.DOTALL)

NUM = r"\d+(?:\.\d+)?"
RANGE = rf"({NUM})(?:\s*(?:-|–|to)\s*({NUM}))?"
FIGURE = re.compile(
    rf"(?<![\w.\-/])(?:{RANGE}(?:(x)\b|\s?(ms|µs)\b|(%)|\s(s)\b)"  # ratio, ms, %, seconds
    rf"|(\d+)/(\d+)(?![\d/]|\sHz)"  # a count of episodes
    rf"|(0\.\d{{2,3}}|1\.00)(?:\s*(?:-|–|to)\s*(0\.\d{{2,3}}|1\.00))?)(?![\w.]*\d)"  # a rate or a distance
)
RESULT_REF = re.compile(r"(?:\]\(|`)((?:\.\./)*benchmarks/results/[\w./-]+?)(?:#[^)]*)?[)`]")

# (page, text) -> what the number is, when it has a figure's form but measures nothing
NOT_MEASURED: dict[tuple[str, str], str] = {
    ("docs/rtc.md", "95%"): "the confidence level of the Wilson intervals",
    ("docs/benchmarks.md", "95%"): "the confidence level of the Wilson intervals",
    ("docs/flow-policy.md", "1/9"): "1/(K + 1) for K = 8: the gate's expected rate, arithmetic",
    ("docs/rtc.md", "1/9"): "1/(K + 1) for K = 8: the gate's expected rate, arithmetic",
    ("docs/benchmarks.md", "1/9"): "1/(K + 1) for K = 8: the gate's expected rate, arithmetic",
    ("docs/flow-policy.md", "0.4-1.5 s"): "the shift task's definition: when the cube jumps",
    ("docs/flow-policy.md", "0.3 s"): "the hovering expert's design: how long its drop takes",
    ("docs/flow-policy.md", "0.05 s"): "a setting: the cart-pole's control timestep",
    ("docs/flow-policy.md", "10%"): "a setting: the gym tasks' action noise",
    ("docs/evaluate-your-benchmark.md", "95%"): "the confidence level of the Wilson intervals",
    ("docs/evaluate-your-benchmark.md", "10%"): "a setting: the action noise",
    ("docs/gym.md", "0.01 s"): "a fact of gym-pusht: its physics step",
}


def _without_defaults(text: str) -> str:
    """``text`` with the cells of every table's ``default`` column emptied: settings, not figures."""
    out, column = [], None
    for line in text.splitlines():
        if not line.startswith("|"):
            column = None
        else:
            cells = line.split("|")
            if column is None:
                names = [c.strip() for c in cells]
                column = names.index("default") if "default" in names else -1
            elif 0 < column < len(cells):
                cells[column] = " "
                line = "|".join(cells)
        out.append(line)
    return "\n".join(out)


def _blocks(text: str) -> list[tuple[int, str]]:
    """(first line, text) of each paragraph, list item and table row, code blocks left out."""
    text = _without_defaults(FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text))
    out, start, lines = [], 0, []
    for i, line in enumerate(text.splitlines() + [""]):
        starts_item = re.match(r"\s*(?:[-*]|\d+\.)\s", line) or line.startswith("|")
        if not line.strip() or starts_item or (lines and lines[-1].startswith("|")):
            if lines:
                out.append((start + 1, "\n".join(lines)))
            lines, start = ([line], i) if line.strip() else ([], i + 1)
        else:
            lines.append(line)
    return out


def _prose(block: str) -> str:
    """The block without inline code and link targets: numbers there are config or addresses."""
    block = re.sub(r"\]\([^)]*\)", "]", block)
    return re.sub(r"`[^`]*`", "", block)


def figures(block: str) -> list[tuple[str, list[str]]]:
    """(as written, [the numbers to find]) of each figure in the block."""
    out = []
    for m in FIGURE.finditer(_prose(block)):
        a, b, ratio, ms, pct, sec, k, n, frac, frac_b = m.groups()
        if k:
            out.append((m.group(0), [f"{k}/{n}"]))
        elif frac:
            out.append((m.group(0), [frac] + ([frac_b] if frac_b else [])))
        elif sec and "." not in a + (b or ""):
            continue  # whole seconds are durations of a setting or a target, not timings
        else:
            out.append((m.group(0).strip(), [a] + ([b] if b else [])))
    return out


def cited_files(page: Path, block: str) -> list[Path]:
    out = []
    for ref in RESULT_REF.findall(block):
        path = (page.parent / ref).resolve() if ref.startswith("..") else (REPO / ref).resolve()
        for twin in (path, path.with_suffix(".csv"), path.with_suffix(".json")):
            if twin.is_file() and twin.parent == RESULTS and twin not in out:
                out.append(twin)
    return out


NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?(?![\d.]*e-?\d)")
RATIO_HEADER = re.compile(r"/|\bx\b|ratio|speed-up|speedup", re.IGNORECASE)


def _ratio_columns(text: str, sep: str) -> list[Decimal]:
    """Numbers in the columns of ratios of each table (Markdown ``|`` rows, or CSV) of ``text``."""
    out: list[Decimal] = []
    header: list[str] | None = None
    for line in text.splitlines():
        is_row = line.startswith("|") if sep == "|" else sep in line
        if not is_row:
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split(sep)]
        if header is None:
            header = cells
        elif not set("".join(cells)) <= set("-: "):
            for name, cell in zip(header, cells):
                if RATIO_HEADER.search(name):
                    out += [Decimal(x) for x in NUMBER.findall(cell)]
    return out


@cache
def file_numbers(path: Path) -> tuple[frozenset[str], tuple[Decimal, ...], tuple[Decimal, ...]]:
    """The counts (``9/10``), the numbers and the ratios a results file writes."""
    text = path.read_text(errors="replace")
    counts = frozenset(re.findall(r"\b\d+/\d+\b", text))
    numbers = tuple(Decimal(x) for x in NUMBER.findall(text))
    ratios = [Decimal(x) for x in re.findall(r"(?<![\w.])(\d+(?:\.\d+)?)(?:\s*(?:-|–|to)\s*\d+(?:\.\d+)?)?x\b", text)]
    ratios += [Decimal(x) for x in re.findall(r"(?<![\w.])\d+(?:\.\d+)?\s*(?:-|–|to)\s*(\d+(?:\.\d+)?)x\b", text)]
    ratios += _ratio_columns(text, "," if path.suffix == ".csv" else "|")
    return counts, numbers, tuple(ratios)


def matches(number: str, files: list[Path], ratio: bool = False) -> bool:
    """``number`` is one of the files' numbers (``ratio``: one of their ratios) at its own precision,
    or a count they write."""
    if "/" in number:
        k, n = (int(x) for x in number.split("/"))
        share = Decimal(k) / Decimal(n)
        return any(
            number in file_numbers(f)[0] or _rounds_to(share, Decimal("0.01"), file_numbers(f)[1]) for f in files
        )
    want = Decimal(number)
    places = Decimal(1).scaleb(want.as_tuple().exponent)
    for f in files:
        for value in file_numbers(f)[2 if ratio else 1]:
            if abs(value).quantize(places, rounding=ROUND_HALF_UP) == want:
                return True
            if value.as_tuple().exponent <= -2 and (abs(value) * 100).quantize(places, rounding=ROUND_HALF_UP) == want:
                return True  # a share the file writes as 0.12, quoted as 12%
    return False


def _rounds_to(value: Decimal, places: Decimal, numbers: tuple[Decimal, ...]) -> bool:
    return value.quantize(places, rounding=ROUND_HALF_UP) in numbers


def problems(page: Path) -> list[str]:
    rel = str(page.relative_to(REPO))
    out = []
    lead: list[Path] = []  # what the paragraph introducing a list cites
    for line, block in _blocks(page.read_text()):
        is_item = re.match(r"\s*(?:[-*]|\d+\.)\s", block) is not None
        files = cited_files(page, block) + (lead if is_item else [])
        if not is_item:
            lead = cited_files(page, block) if block.rstrip().endswith(":") else []
        for written, numbers in figures(block):
            if (rel, written) in NOT_MEASURED:
                continue
            if not files:
                out.append(f"{rel}:{line}: {written!r} cites no results file in its paragraph")
                continue
            missing = [n for n in numbers if not matches(n, files, ratio=written.endswith("x"))]
            if missing:
                names = ", ".join(f.name for f in files)
                kind = "as a ratio " if written.endswith("x") else ""
                out.append(f"{rel}:{line}: {written!r}: {' and '.join(missing)} is {kind}in none of {names}")
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_figure_is_in_the_results_file_it_cites(page: Path):
    found = problems(page)
    assert not found, "\n".join(found)


def test_the_check_finds_a_figure_that_drifted():
    """A figure one digit off its file fails; the same figure as the file rounds it passes."""
    page = REPO / "docs" / "rtc.md"
    cite = "([inference_modes.md](../benchmarks/results/inference_modes.md))"
    assert [w for w, _ in figures(f"VJP costs 2.20-2.38x {cite}")] == ["2.20-2.38x"]
    files = cited_files(page, cite)
    assert files and all(matches(n, files, ratio=True) for n in ("2.20", "2.38", "2.4"))
    assert not matches("2.21", files, ratio=True)
    assert not matches("1.02", files, ratio=True)
    assert matches("14.65", files) and not matches("14.65", files, ratio=True)  # a time is no ratio


def test_not_measured_entries_are_used():
    """An exemption whose text left its page is removed, so the list stays what the pages say."""
    for (rel, written), why in NOT_MEASURED.items():
        page = REPO / rel
        assert any(written == w for _, b in _blocks(page.read_text()) for w, _ in figures(b)), (rel, written, why)
