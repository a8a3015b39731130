"""Lockstep evaluator (algorithms/lockstep_eval.py) on the lockstep sim robot, from the app config."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from inference.app import compose_run

ROOT = Path(__file__).resolve().parents[2]
BASE = [
    "algorithm=lockstep_eval",
    "policy=scripted",
    "cameras=none",
    "robot.render_in_lockstep=false",
    "episodes=1",
    "max_steps=200",
]


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
    # time to success: the same plan succeeds at the same tick; sync's pauses are wall time on a robot
    naive_s = table[("naive", 4)]["time_to_success_s"]
    assert naive_s == pytest.approx(table[("naive", 4)]["ticks"] / 20.0)
    assert table[("sync", 4)]["time_to_success_s"] == pytest.approx(naive_s + table[("sync", 4)]["paused_ticks"] / 20.0)
    assert table[("rtc", 4)]["guidance"] == "vjp" and table[("rtc", 4)]["schedule"] == "exp"
    written = list(csv.DictReader((tmp_path / "lockstep.csv").open()))
    assert len(written) == 6
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    delays = {int(r["d_actual"]) for r in infs if r["guidance"].startswith("naive") and int(r["s"]) > 0}
    assert delays <= {0, 4} and 4 in delays


def test_delay_longer_than_the_chunk_remainder_underruns_async_only(tmp_path):
    # s = 45 of H = 50: a delay of 8 leaves the async methods 3 ticks without actions per chunk
    run = compose_run(
        [
            *BASE,
            "max_steps=120",
            "algorithm.methods=[sync,naive]",
            "algorithm.delays_ticks=[8]",
            "algorithm.execute_horizon=45",
            "algorithm.stop_on_success=false",
        ],
        run_dir=tmp_path,
    )
    table = rows_by(run.execute())
    assert table[("naive", 8)]["underruns"] > 0
    assert table[("sync", 8)]["underruns"] == 0


def test_uniform_delay_distribution_draws_within_spread(tmp_path):
    run = compose_run(
        [
            *BASE,
            "max_steps=150",
            "algorithm.methods=[naive]",
            "algorithm.delays_ticks=[4]",
            "algorithm.delay_distribution=uniform",
            "algorithm.delay_spread_ticks=2",
            "algorithm.execute_horizon=10",
            "algorithm.stop_on_success=false",
        ],
        run_dir=tmp_path,
    )
    run.execute()
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    d = [int(r["d_actual"]) for r in infs if int(r["s"]) > 0]
    assert len(d) >= 5 and min(d) >= 2 and max(d) <= 6 and len(set(d)) > 1


def test_unknown_method_is_a_config_error(tmp_path):
    with pytest.raises(Exception, match="methods"):
        compose_run([*BASE, "algorithm.methods=[bogus]"], run_dir=tmp_path).execute()


def test_methods_a_policy_cannot_run_are_config_errors_naming_them(tmp_path):
    with pytest.raises(ValueError, match=r"^algorithm.methods: .*rtc_capped needs algorithm.guided_cap_ticks"):
        compose_run([*BASE, "algorithm.methods=[rtc_capped]"], run_dir=tmp_path / "a").execute()
    with pytest.raises(ValueError, match=r"^algorithm.methods: guidance 'identity' needs a policy with a sampler"):
        compose_run([*BASE, "algorithm.methods=[naive,rtc_identity]"], run_dir=tmp_path / "b").execute()


def test_identity_and_capped_guidance_run_in_the_table(tmp_path):
    """The flow policy through ``rtc_identity`` (no reverse pass) and ``rtc_capped`` next to ``rtc``
    on the same draws: every cell runs its chunks, and their boundaries differ (the Jacobian and
    the cap change what the policy is asked)."""
    common = [
        "algorithm=lockstep_eval",
        "policy=flow",
        "cameras=sim",
        "episodes=1",
        "max_steps=40",
        "algorithm.delays_ticks=[4]",
        "algorithm.execute_horizon=10",
        "algorithm.guided_cap_ticks=2",
        "algorithm.stop_on_success=false",
        "report=false",
        "algorithm.methods=[rtc,rtc_identity,rtc_capped]",
    ]
    table = rows_by(compose_run(common, run_dir=tmp_path).execute())
    rows = [table[(m, 4)] for m in ("rtc", "rtc_identity", "rtc_capped")]
    assert [r["guidance"] for r in rows] == ["vjp", "identity", "vjp"]
    assert all(r["rejected_chunks"] == 0 and r["ticks"] == 40 for r in rows), rows
    gaps = [r["discontinuity_mean"] for r in rows]
    assert len(set(gaps)) == 3, gaps
    # the jump from plan is measured at the same boundaries: finite, and not the discontinuity itself
    jumps = [r["plan_jump_mean"] for r in rows]
    assert all(math.isfinite(j) and j >= 0 for j in jumps) and jumps != gaps, (jumps, gaps)
    infs = list(csv.DictReader((tmp_path / "inferences.csv").open()))
    assert {r["guidance"] for r in infs} >= {"rtc:vjp", "rtc_identity:identity", "rtc_capped:vjp"}
    assert sum(r["plan_jump"] not in ("", None) for r in infs) == sum(
        r["discontinuity"] not in ("", None) for r in infs
    )


def test_the_select_stale_gate_is_counted_per_cell_and_recorded_per_inference(tmp_path):
    """``policy.select_stale_gate``: each select inference reports whether the gate fired (the
    policy's ``last_info``, carried by the simulated-delay transport), the cell's row has the share,
    and naive's row, which never asks, has none (NaN)."""
    common = [
        "algorithm=lockstep_eval",
        "policy=flow",
        "cameras=sim",
        "episodes=1",
        "max_steps=40",
        "algorithm.delays_ticks=[4]",
        "algorithm.execute_horizon=10",
        "algorithm.stop_on_success=false",
        "report=false",
        "algorithm.methods=[naive,select]",
        "policy.select_stale_gate=true",
        "policy.select_samples=4",
    ]
    table = rows_by(compose_run(common, run_dir=tmp_path).execute())
    assert table[("naive", 4)]["select_stale_rate"] != table[("naive", 4)]["select_stale_rate"]  # NaN
    infs = [r for r in csv.DictReader((tmp_path / "inferences.csv").open()) if r["guidance"] == "select:select"]
    flags = [float(r["select_stale"]) for r in infs if r["select_stale"] != ""]
    assert flags and set(flags) <= {0.0, 1.0} and len(flags) == len(infs) - 1  # the first chunk is unguided
    assert table[("select", 4)]["select_stale_rate"] == pytest.approx(sum(flags) / len(flags))


@pytest.mark.slow
def test_hydra_multirun_sweeps_guidance_knobs(tmp_path):
    args = [
        sys.executable,
        "-m",
        "inference",
        "-m",
        *BASE,
        "max_steps=40",
        "algorithm.methods=[custom]",
        "algorithm.delays_ticks=[2]",
        "algorithm.guidance=none,blend",
        "algorithm.max_guidance_weight=1,5",
        f"hydra.sweep.dir={tmp_path}",
    ]
    proc = subprocess.run(
        args, cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)), capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    tables = sorted(tmp_path.glob("*/lockstep.json"))
    assert len(tables) == 4
    seen = {(json.loads(p.read_text())[0]["guidance"]) for p in tables}
    assert seen == {"none", "blend"}


def test_sweep_summary_ranks_each_lockstep_cell(tmp_path):
    """A lockstep job's table becomes one ranked sweep row per (method, delay) cell, with the
    cell's own success rate; the job's run-level success pools the cells' episodes."""
    from inference.sweep import write_summary

    summary = compose_run(
        [*BASE, "max_steps=60", "algorithm.methods=[sync,naive]", "algorithm.delays_ticks=[0,4]"],
        run_dir=tmp_path / "0",
    ).execute()
    cells = summary["table"]
    assert summary["success_rate"] == pytest.approx(sum(c["success_rate"] for c in cells) / len(cells))
    assert summary["ticks"] == sum(c["ticks"] for c in cells)
    rows = write_summary(tmp_path)
    assert sorted(r["job"] for r in rows) == sorted(f"0:{c['method']}@d={c['delay_ticks']}" for c in cells)
    by_job = {r["job"]: r for r in rows}
    for c in cells:
        row = by_job[f"0:{c['method']}@d={c['delay_ticks']}"]
        assert row["success_rate"] == c["success_rate"] and row["ticks"] == c["ticks"]


# A sweep runs the flow policy with guidance and rendered cameras for each trial. On a loaded 2-core
# host the first sweep of the reproducibility test took ~4 min and the test met the suite's 300 s
# per-test limit (300.22 s, failed; the sqlite test's two 1-trial sweeps took 128 s): the likely
# cause of its unexplained CI failure. These limits are deadlines for a hang, not timings.
SWEEP_TIMEOUT_S = 1200
TWO_SWEEPS_TIMEOUT_S = 2 * SWEEP_TIMEOUT_S + 120


def _optuna_sweep(sweep_dir: Path, *extra: str) -> subprocess.CompletedProcess:
    args = [
        sys.executable,
        "-m",
        "inference",
        "-m",
        "+experiment=rtc_optuna",
        "hydra.sweeper.n_trials=2",
        "episodes=1",
        "max_steps=80",
        f"hydra.sweep.dir={sweep_dir}",
        *extra,
    ]
    return subprocess.run(
        args,
        cwd=ROOT,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
        capture_output=True,
        text=True,
        timeout=SWEEP_TIMEOUT_S,
    )


@pytest.mark.slow
@pytest.mark.timeout(TWO_SWEEPS_TIMEOUT_S)
def test_optuna_sweep_searches_inpainting_params_reproducibly(tmp_path):
    import yaml

    proc = _optuna_sweep(tmp_path / "a")
    assert proc.returncode == 0, proc.stderr[-3000:]
    jobs = sorted((tmp_path / "a").glob("[0-9]*/summary.json"))
    assert len(jobs) == 2
    trials = []
    for path in jobs:
        overrides = yaml.safe_load((path.parent / ".hydra" / "overrides.yaml").read_text())
        params = {o.split("=")[0]: o.split("=")[1] for o in overrides if o.startswith("algorithm.")}
        assert set(params) == {"algorithm.max_guidance_weight", "algorithm.execute_horizon", "algorithm.schedule"}
        s = json.loads(path.read_text())
        assert s["max_guidance_weight"] == pytest.approx(float(params["algorithm.max_guidance_weight"]))
        assert s["execute_horizon"] == int(params["algorithm.execute_horizon"])
        trials.append((params, [s["success_rate"], s["discontinuity_mean"]]))
    # the Pareto front Optuna reports is made of trials that ran, with the values they returned
    result = yaml.safe_load((tmp_path / "a" / "optimization_results.yaml").read_text())
    assert result["solutions"]
    for sol in result["solutions"]:
        assert any(sol["values"] == pytest.approx(values) for _p, values in trials)
    assert (tmp_path / "a" / "sweep_summary.csv").is_file()
    # seeded sampler + seeded episodes: the same command proposes the same trials
    again = _optuna_sweep(tmp_path / "b")
    assert again.returncode == 0, again.stderr[-3000:]
    first = [yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text()) for p in jobs]
    second = [
        yaml.safe_load((p.parent / ".hydra" / "overrides.yaml").read_text())
        for p in sorted((tmp_path / "b").glob("[0-9]*/summary.json"))
    ]
    assert first == second


def test_objective_values_and_unmeasured_metrics():
    from inference.app import objective_values

    assert objective_values({"success_rate": 0.5, "d_actual_max": 2}, ["success_rate", "d_actual_max"]) == [0.5, 2.0]
    assert objective_values({"success_rate": 0.5}, "success_rate") == 0.5
    # no chunk boundary in this run: the trial fails (None), the sweep goes on
    assert objective_values({"success_rate": 1.0, "table": []}, ["success_rate", "discontinuity_mean"]) is None
    assert objective_values({"success_rate": 1.0, "discontinuity_mean": math.nan}, "discontinuity_mean") is None


@pytest.mark.parametrize(
    "value, message",
    [
        ("[1,2]", "expected a summary key"),
        ("[success_rate,discontinuity_avg]", r"\['discontinuity_avg'\] not a summary metric"),
    ],
)
def test_bad_objective_fails_at_start(tmp_path, value, message):
    from inference.validation import ConfigError

    with pytest.raises(ConfigError, match=f"objective: {message}"):
        compose_run([*BASE, f"objective={value}"], run_dir=tmp_path)


def test_every_known_metric_name_is_one_a_run_writes(tmp_path):
    """The names objective may use are real: a lockstep run's summary has the ones it measures."""
    from services.telemetry import summary_metric_names

    summary = compose_run(
        [*BASE, "max_steps=60", "algorithm.methods=[rtc]", "algorithm.delays_ticks=[2]"], run_dir=tmp_path
    ).execute()
    numeric = {k for k, v in summary.items() if isinstance(v, (int, float)) and not isinstance(v, bool)}
    known = summary_metric_names()
    assert {"success_rate", "discontinuity_mean", "d_actual_p99", "max_jerk"} <= numeric & known


@pytest.mark.slow
@pytest.mark.timeout(TWO_SWEEPS_TIMEOUT_S)
def test_optuna_study_in_sqlite_resumes_and_records_failed_trials(tmp_path):
    """A trial too short to measure discontinuity fails without ending the search; a second
    command adds its trials to the same stored study."""
    import optuna

    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    short = _optuna_sweep(
        tmp_path / "a", "hydra.sweeper.n_trials=1", "max_steps=20", f"hydra.sweeper.storage={storage}"
    )
    assert short.returncode == 0, short.stderr[-3000:]
    assert "not measured in this run" in short.stderr + short.stdout
    longer = _optuna_sweep(tmp_path / "b", "hydra.sweeper.n_trials=1", f"hydra.sweeper.storage={storage}")
    assert longer.returncode == 0, longer.stderr[-3000:]
    study = optuna.load_study(study_name="rtc_inpainting", storage=storage)
    assert [t.state.name for t in study.trials] == ["FAIL", "COMPLETE"]
    summary = json.loads((tmp_path / "b" / "0" / "summary.json").read_text())
    assert study.trials[1].values == pytest.approx([summary["success_rate"], summary["discontinuity_mean"]])


def test_every_cell_samples_the_same_noise_per_episode(tmp_path):
    """Common random numbers: the flow policy is re-seeded per episode, so a cell's numbers do not
    depend on the cells before it, and at d = 0 naive and blend-free methods agree exactly."""
    common = [
        "algorithm=lockstep_eval",
        "policy=flow",
        "cameras=sim",
        "episodes=1",
        "max_steps=30",
        "algorithm.delays_ticks=[0]",
        "algorithm.execute_horizon=10",
        "report=false",
    ]
    a = compose_run([*common, "algorithm.methods=[naive,sync]"], run_dir=tmp_path / "a").execute()
    b = compose_run([*common, "algorithm.methods=[sync]"], run_dir=tmp_path / "b").execute()
    (naive, sync_after), (sync_alone,) = a["table"], b["table"]
    for key in ("discontinuity_mean", "max_jerk", "rms_jerk"):
        assert sync_after[key] == sync_alone[key], key  # the same draws whatever ran first
        assert naive[key] == sync_alone[key], key  # d = 0: naive is sync
