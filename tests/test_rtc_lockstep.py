"""Lockstep evaluator (algorithms/rtc/lockstep.py) on the lockstep sim robot, from the app config."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.app import compose_run

ROOT = Path(__file__).resolve().parents[1]
BASE = ["algorithm=lockstep_eval", "policy=scripted", "cameras=none", "robot.render_in_lockstep=false",
        "episodes=1", "max_steps=200"]


def rows_by(summary):
    return {(r["method"], r["delay_ticks"]): r for r in summary["table"]}


def test_scripted_expert_succeeds_for_every_method_and_delay(tmp_path):
    run = compose_run([*BASE, "algorithm.methods=[sync,naive,rtc]", "algorithm.delays_ticks=[0,4]"], run_dir=tmp_path)
    assert run.cfg.robot.realtime is False  # the evaluator's config switches the sim to lockstep
    summary = run.execute()
    table = rows_by(summary)
    assert set(table) == {(m, d) for m in ("sync", "naive", "rtc") for d in (0, 4)}
    for (method, delay), row in table.items():
        # one fixed plan indexed by the sim step: every correct schedule reproduces it
        assert row["success_rate"] == 1.0, (method, delay)
        assert row["underruns"] == 0
        assert row["rejected_chunks"] == 0
    assert table[("sync", 4)]["paused_ticks"] > 0 and table[("naive", 4)]["paused_ticks"] == 0
    assert table[("rtc", 4)]["guidance"] == "vjp" and table[("rtc", 4)]["schedule"] == "exp"
    written = list(csv.DictReader((tmp_path / "lockstep.csv").open()))
    assert len(written) == 6
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    delays = {int(r["d_actual"]) for r in infs if r["guidance"].startswith("naive") and int(r["s"]) > 0}
    assert delays <= {0, 4} and 4 in delays


def test_delay_longer_than_the_chunk_remainder_underruns_async_only(tmp_path):
    # s = 45 of H = 50: a delay of 8 leaves the async methods 3 ticks without actions per chunk
    run = compose_run([*BASE, "max_steps=120", "algorithm.methods=[sync,naive]", "algorithm.delays_ticks=[8]",
                       "algorithm.execute_horizon=45", "algorithm.stop_on_success=false"], run_dir=tmp_path)
    table = rows_by(run.execute())
    assert table[("naive", 8)]["underruns"] > 0
    assert table[("sync", 8)]["underruns"] == 0


def test_uniform_delay_distribution_draws_within_spread(tmp_path):
    run = compose_run([*BASE, "max_steps=150", "algorithm.methods=[naive]", "algorithm.delays_ticks=[4]",
                       "algorithm.delay_distribution=uniform", "algorithm.delay_spread_ticks=2",
                       "algorithm.execute_horizon=10", "algorithm.stop_on_success=false"], run_dir=tmp_path)
    run.execute()
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    d = [int(r["d_actual"]) for r in infs if int(r["s"]) > 0]
    assert len(d) >= 5 and min(d) >= 2 and max(d) <= 6 and len(set(d)) > 1


def test_unknown_method_is_a_config_error(tmp_path):
    with pytest.raises(Exception, match="methods"):
        compose_run([*BASE, "algorithm.methods=[bogus]"], run_dir=tmp_path).execute()


@pytest.mark.slow
def test_hydra_multirun_sweeps_guidance_knobs(tmp_path):
    args = [sys.executable, "-m", "inference", "-m", *BASE, "max_steps=40", "algorithm.methods=[custom]",
            "algorithm.delays_ticks=[2]", "algorithm.guidance=none,blend", "algorithm.max_guidance_weight=1,5",
            f"hydra.sweep.dir={tmp_path}"]
    proc = subprocess.run(args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = sorted(tmp_path.glob("*/lockstep.json"))
    assert len(tables) == 4
    seen = {(json.loads(p.read_text())[0]["guidance"]) for p in tables}
    assert seen == {"none", "blend"}
