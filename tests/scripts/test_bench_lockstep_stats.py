"""The lockstep study's success intervals (benchmarks/bench_lockstep.py ``wilson_interval``) and what a
``--resume`` run keeps of an existing report (``_reading_sections``)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_lockstep import _reading_sections, wilson_interval  # noqa: E402


def test_wilson_interval_worked_example() -> None:
    # 24 of 30: p = 0.8, z = 1.96 -> centre 0.7659, half-width 0.1390
    lo, hi = wilson_interval(24, 30)
    assert lo == pytest.approx(0.6269, abs=1e-4) and hi == pytest.approx(0.9050, abs=1e-4)
    assert wilson_interval(0, 30)[0] == 0.0 and wilson_interval(30, 30)[1] == 1.0


@given(st.integers(1, 500), st.data())
def test_wilson_interval_holds_the_rate_and_narrows_with_episodes(n: int, data) -> None:
    k = data.draw(st.integers(0, n))
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
    lo4, hi4 = wilson_interval(4 * k, 4 * n)
    assert hi4 - lo4 < hi - lo


def test_a_resumed_report_keeps_its_hand_written_reading(tmp_path) -> None:
    report = tmp_path / "study.md"
    assert _reading_sections(report) == []  # no report yet
    report.write_text("# table\n\n| a |\n\n## The study's targets\n\n- x\n")
    assert _reading_sections(report) == []  # nothing hand-written
    report.write_text("# table\n\n| a |\n\n## Reading (written after the run)\n\ntext\n\n## Later\n\nmore\n")
    assert _reading_sections(report) == ["", "## Reading (written after the run)", "", "text", "", "## Later", "",
                                         "more"]
