"""Run report, MCAP recording, W&B offline logging and multirun sweep summary, on real runs."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from inference.app import compose_run
from inference.report import PLOTS
from inference.report import main as report_main

ROOT = Path(__file__).resolve().parents[2]
LOCKSTEP = ["robot.realtime=false", "algorithm=sequential", "policy=scripted", "report=false"]


@pytest.fixture(scope="module")
def recorded_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    run = compose_run(
        [*LOCKSTEP, "record=mcap", "logger=wandb", "max_steps=80", "algorithm.execute_horizon=20"], run_dir
    )
    summary = run.execute()
    summary["joint_names"] = list(run.make_robot().spec.joint_names)
    return run_dir, summary


def test_report_pngs_have_data_and_numbers_match_telemetry(recorded_run):
    run_dir, summary = recorded_run
    assert report_main([str(run_dir)]) == 0
    for name in PLOTS:
        img = cv2.imread(str(run_dir / "report" / name))
        assert img is not None and img.shape[0] > 100 and img.shape[1] > 100, name
        assert img.std() > 5, f"{name} looks blank"
    text = (run_dir / "report" / "report.md").read_text()
    assert "summary.json agrees" in text
    # independent recomputation from the CSVs
    with (run_dir / "ticks.csv").open() as f:
        rows = list(csv.DictReader(f))
    err = np.array([float(r["period_error_ms"]) for r in rows])
    assert summary["ticks"] == len(rows)
    assert summary["period_error_ms_p99"] == pytest.approx(np.percentile(err, 99))
    with (run_dir / "inferences.csv").open() as f:
        lat = np.array([float(r["latency_ms"]) for r in csv.DictReader(f)])
    assert summary["inferences"] == len(lat) == 4
    assert summary["inference_latency_ms_p50"] == pytest.approx(np.percentile(lat, 50))
    assert f"| inference_latency_ms_p50 | {np.percentile(lat, 50):.3f} |" in text


def test_report_rejects_a_non_run_dir(tmp_path, capsys):
    assert report_main([str(tmp_path)]) == 2
    assert "not a run dir" in capsys.readouterr().err


def test_mcap_reads_back_with_expected_counts(recorded_run):
    from mcap.reader import make_reader
    from rosbags.rosbag2 import Reader
    from rosbags.typesys import Stores, get_typestore

    run_dir, summary = recorded_run
    ticks, chunks = summary["ticks"], summary["inferences"]
    path = next((run_dir / "recording").glob("*.mcap"))
    with path.open("rb") as f:
        counts: dict[str, int] = {}
        for _schema, channel, _message in make_reader(f).iter_messages():
            counts[channel.topic] = counts.get(channel.topic, 0) + 1
    assert counts["/command/joint_states"] == ticks
    assert counts["/observation/joint_states"] == ticks + 1  # + the observation at episode start
    for cam in ("head", "left", "right"):
        assert counts[f"/observation/{cam}/image/compressed"] == ticks + 1
    assert counts["/policy/chunk"] == chunks
    assert summary["recording_dropped"] == 0
    ts = get_typestore(Stores.ROS2_HUMBLE)
    with np.load(run_dir / "trajectory.npz") as t:
        sent = t["command"]
    with Reader(run_dir / "recording") as reader:
        commands = [
            ts.deserialize_cdr(raw, c.msgtype) for c, _, raw in reader.messages() if c.topic == "/command/joint_states"
        ]
        image = next(
            ts.deserialize_cdr(raw, c.msgtype)
            for c, _, raw in reader.messages()
            if c.topic == "/observation/head/image/compressed"
        )
    np.testing.assert_allclose(np.stack([m.position for m in commands]), sent, atol=1e-6)
    assert list(commands[0].name) == summary["joint_names"]
    decoded = cv2.imdecode(image.data, cv2.IMREAD_COLOR)
    assert decoded.shape == (96, 128, 3)


def test_wandb_offline_run_has_metrics_summary_and_config(recorded_run):
    from tests.wandb_records import history_and_summary

    run_dir, summary = recorded_run
    files = list((run_dir / "wandb_files").rglob("run-*.wandb"))
    assert len(files) == 1
    history, wb_summary, config = history_and_summary(files[0])
    assert history["control/period_error_ms"] == summary["ticks"]
    assert history["inference/latency_ms"] == summary["inferences"]
    assert json.loads(wb_summary["success_rate"]) == summary["success_rate"]
    assert {"robot", "policy", "algorithm"} <= set(config)


def test_dashboard_uses_only_logged_metrics(tmp_path):
    from inference.dashboard import LAYOUT, build_workspace, logged_metrics, main

    summary_keys = {
        "period_error_ms_p50",
        "period_error_ms_p99",
        "period_error_ms_max",
        "success_rate",
        "inference_latency_ms_p50",
        "inference_latency_ms_p95",
        "inference_latency_ms_p99",
        "inference_latency_ms_max",
        "discontinuity_mean",
        "discontinuity_max",
    }
    for _section, panels in LAYOUT:
        for kind, _title, metrics, x in panels:
            allowed = logged_metrics() if kind == "line" else summary_keys
            assert set(metrics) <= allowed, metrics
            if kind == "line":
                assert x in logged_metrics()
    assert len(build_workspace("entity", "project").sections) == len(LAYOUT)
    assert main(["--json", str(tmp_path / "dash.json")]) == 0
    assert json.loads((tmp_path / "dash.json").read_text())[0]["section"] == "Control timing"


@pytest.mark.slow
def test_multirun_writes_ranked_sweep_summary(tmp_path):
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "inference",
            "-m",
            *LOCKSTEP,
            "cameras=none",
            "robot.render_in_lockstep=false",
            "max_steps=60",
            "algorithm.execute_horizon=5,10,20",
            "seed=0,1",
            f"hydra.sweep.dir={tmp_path}",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    table = (tmp_path / "sweep_summary.md").read_text()
    assert table.count("algorithm.execute_horizon=") == 6
    with (tmp_path / "sweep_summary.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [int(r["rank"]) for r in rows] == list(range(1, 7))
    keys = [(-float(r["success_rate"]), float(r["discontinuity_mean"])) for r in rows]
    assert keys == sorted(keys)
    assert cv2.imread(str(tmp_path / "sweep_summary.png")) is not None
