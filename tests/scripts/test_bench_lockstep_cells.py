"""Which rows of a (method, d, s) lockstep table benchmarks/bench_lockstep.py plots where: the
delay sweep at the paper's s = max(d, 1), and the s sweep at the delay that has several s."""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "benchmarks"))
from bench_lockstep import csv_value, delay_sweep, horizon_sweep, plot_paper_figure, write_rows  # noqa: E402


def _row(method: str, d: int, s: int | str, success: float = 0.5) -> dict:
    return {
        "method": method,
        "delay_ticks": d,
        "execute_horizon": s,
        "success_rate": success,
        "episodes": 8,
        "plan_jump_mean": 0.01 * d,
    }


def test_the_paper_protocol_splits_into_its_two_sweeps(tmp_path):
    grid = [(0, 1), (1, 1), (2, 2), (3, 3), (4, 4), (1, 2), (1, 3), (1, 5)]
    rows = [_row(m, d, s) for m in ("naive", "rtc") for d, s in grid]
    by_d = delay_sweep(rows)
    assert sorted({(r["delay_ticks"], r["execute_horizon"]) for r in by_d}) == [(0, 1), (1, 1), (2, 2), (3, 3), (4, 4)]
    assert len(by_d) == 10
    d, by_s = horizon_sweep(rows)
    assert d == 1 and sorted({r["execute_horizon"] for r in by_s}) == [1, 2, 3, 5] and len(by_s) == 8
    plot_paper_figure(rows, tmp_path / "fig.png", title="test")
    assert (tmp_path / "fig.png").stat().st_size > 0


def test_a_table_with_one_s_per_delay_keeps_every_row_and_has_no_s_sweep():
    rows = [_row("naive", d, 25) for d in (0, 1, 2, 4, 8)]
    assert delay_sweep(rows) == rows
    assert horizon_sweep(rows) == (None, [])
    # rows kept from a results file written before the s column (blank): no s sweep, every row by d
    old = [_row("naive", d, "") for d in (0, 4)]
    assert delay_sweep(old) == old and horizon_sweep(old) == (None, [])


def test_rows_written_cell_by_cell_read_back_for_resume(tmp_path):
    """The partial CSV a study writes after each cell reads back as the cells it held (what --resume
    keeps), with a column only some rows have left blank in the others."""
    import csv

    rows = [_row("naive", 0, 1, 1.0), {**_row("bid", 4, 4, 0.25), "fault": "chunks_rejected"}]
    path = tmp_path / "study.partial.csv"
    write_rows(path, rows)
    back = [{k: csv_value(k, v) for k, v in r.items()} for r in csv.DictReader(path.open())]
    assert [(r["method"], r["delay_ticks"], r["execute_horizon"], r["success_rate"]) for r in back] == [
        ("naive", 0, 1, 1.0),
        ("bid", 4, 4, 0.25),
    ]
    assert back[0]["fault"] == "" and back[1]["fault"] == "chunks_rejected"
