"""The lockstep study's success intervals (benchmarks/bench_lockstep.py ``wilson_interval``), what a
``--resume`` run keeps of an existing report (``_reading_sections``), which rows its target checks
count as consistency methods (``goal_lines``) and how it reads the stale-gate column."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_lockstep import _reading_sections, csv_value, goal_lines, stale_gate_rate, wilson_interval  # noqa: E402


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
    assert _reading_sections(report) == [
        "",
        "## Reading (written after the run)",
        "",
        "text",
        "",
        "## Later",
        "",
        "more",
    ]


def _row(method: str, guidance: str, d: int, success: float, disc: float, jump: float | str = "") -> dict:
    return {
        "method": method,
        "guidance": guidance,
        "delay_ticks": d,
        "success_rate": success,
        "discontinuity_mean": disc,
        "plan_jump_mean": jump,
    }


def test_the_discontinuity_target_is_also_checked_on_the_jump_from_plan_where_the_rows_have_it() -> None:
    """The third target reads the boundary discontinuity, which keeps the ordinary per-tick step; the
    jump from plan leaves it out, so a method at the motion floor can miss the first and meet the
    second. Rows kept from before the column (blank) print no such line."""
    rows = [
        _row("sync", "none", 0, 1.0, 0.09, 0.08),
        _row("naive", "none", 8, 1.0, 0.09, 0.06),
        _row("rtc", "vjp", 8, 1.0, 0.045, 0.01),
    ]
    lines = goal_lines(rows)
    assert any(line.startswith("- Its mean discontinuity <= 1/3") and "**missed**" in line for line in lines)
    jump = next(line for line in lines if line.startswith("- The same on the jump from plan"))
    assert "0.0100 vs naive 0.0600 (0.17x)" in jump and "**met**" in jump
    rows[2]["plan_jump_mean"] = 0.03
    assert "**missed**" in next(line for line in goal_lines(rows) if line.startswith("- The same on the jump"))
    for r in rows:
        r["plan_jump_mean"] = ""
    assert not any(line.startswith("- The same on the jump") for line in goal_lines(rows))


def test_the_target_checks_count_a_variant_row_by_its_guidance_and_never_blend_or_naive() -> None:
    """A variant label (here ``select_gated``) is not a method name; its row's guidance says it is a
    consistency method. Blend beats naive at every d here and is still never the 'RTC method'."""
    delays = (0, 1, 8)
    rows = [_row("naive", "none", d, 0.8, 0.2) for d in delays]
    rows += [_row("blend", "blend", d, 1.0, 0.01) for d in delays]
    rows += [_row("select_gated", "select", d, 0.8 + 0.01 * d, 0.1) for d in delays]
    rows += [_row("rtc", "vjp", d, 0.5, 0.05) for d in delays]
    lines = goal_lines(rows)
    every_d = next(line for line in lines if line.startswith("- One RTC method >= naive at every d"))
    assert "best select_gated" in every_d and "**met**" in every_d
    rows = [r for r in rows if r["method"] != "select_gated"]
    every_d = next(line for line in goal_lines(rows) if line.startswith("- One RTC method >= naive at every d"))
    assert "best rtc" in every_d and "**missed**" in every_d


def test_stale_gate_rate_reads_floats_blanks_and_nan() -> None:
    assert stale_gate_rate({"select_stale_rate": 0.25}) == 0.25
    assert stale_gate_rate({"select_stale_rate": "0.5"}) == 0.5
    for blank in ({}, {"select_stale_rate": ""}, {"select_stale_rate": "nan"}, {"select_stale_rate": None}):
        assert stale_gate_rate(blank) != stale_gate_rate(blank)  # NaN


def test_a_resumed_csv_reads_blanks_numbers_and_text() -> None:
    """A kept row that predates a column has a blank there (the writer's restval): read as '', not
    an int() error, which stopped a --resume of rtc_study.csv once its newer rows had
    ``faulted_episodes``."""
    assert csv_value("faulted_episodes", "") == "" and csv_value("select_stale_rate", "") == ""
    assert csv_value("episodes", "30") == 30 and csv_value("success_rate", "0.9") == 0.9
    assert csv_value("time_to_success_s", "nan") != csv_value("time_to_success_s", "nan")  # NaN
    assert csv_value("max_jerk", "1e-05") == 1e-05 and csv_value("max_jerk", "inf") == float("inf")
    assert csv_value("fault", "") == "" and isinstance(csv_value("episodes", "30"), int)
    assert csv_value("method", "naive") == "naive" and csv_value("schedule", "") == ""


def test_time_to_end_cell_reads_mean_and_interval_and_blanks_old_rows() -> None:
    from bench_lockstep import time_to_end

    assert time_to_end({"time_to_end_s": 4.321, "time_to_end_ci95_s": 0.256}) == "4.32 +- 0.26"
    assert time_to_end({"time_to_end_s": 4.321, "time_to_end_ci95_s": float("nan")}) == "4.32"  # one episode
    assert time_to_end({}) == ""  # a row kept from a results file written before the column existed
    assert time_to_end({"time_to_end_s": "", "time_to_end_ci95_s": ""}) == ""


@given(st.lists(st.floats(0.0, 100.0), min_size=2, max_size=60))
def test_mean_interval_half_width_is_1_96_standard_errors(values: list[float]) -> None:
    import numpy as np

    from algorithms.lockstep_eval import mean_ci95_half_width

    half = mean_ci95_half_width(values)
    assert half == pytest.approx(1.96 * np.std(values, ddof=1) / np.sqrt(len(values)), abs=1e-9)
    assert half >= 0.0
    assert np.isnan(mean_ci95_half_width(values[:1]))
