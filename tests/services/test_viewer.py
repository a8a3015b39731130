"""viewer=rerun on real runs: the saved .rrd read back with Rerun's own reader, a frozen viewer process,
the knobs' config errors, and viewer=none leaving the run as it was."""

from __future__ import annotations

import collections
import csv
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from inference.app import compose_run
from services.errors import ConfigError

pytest.importorskip("rerun")

ROOT = Path(__file__).resolve().parents[2]
LOCKSTEP = ["robot.realtime=false", "algorithm=sequential", "policy=scripted", "report=false"]


def read_rrd(path: Path) -> dict[str, list]:
    """Entity path -> its (non-static) chunks, read with Rerun's own RRD reader."""
    from rerun.chunk import RrdReader

    out: dict[str, list] = collections.defaultdict(list)
    for chunk in RrdReader(str(path)).store().stream():
        if not chunk.is_static:
            out[chunk.entity_path].append(chunk.to_record_batch())
    return out


def rows(batches: list) -> int:
    return sum(b.num_rows for b in batches)


def column(batches: list, name: str) -> list:
    """A component column's values, one list of instances per row."""
    return [v for b in batches for v in b.column(name).to_pylist()]


def scalar_batches(batches: list) -> list:
    """The batches holding scalar values (not the clears logged to the same entity)."""
    return [b for b in batches if "Scalars:scalars" in b.schema.names]


def index(batches: list, name: str) -> np.ndarray:
    """A timeline column as integers (sequence numbers, or nanoseconds for timestamps)."""
    import pyarrow as pa

    return np.concatenate([b.column(name).cast(pa.int64()).to_numpy() for b in batches])


@pytest.fixture(scope="module")
def viewed_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("viewed")
    run = compose_run(
        [
            *LOCKSTEP,
            "viewer=rerun",
            "viewer.serve=false",
            "record=mcap",
            "max_steps=80",
            "algorithm.execute_horizon=20",
        ],
        run_dir,
    )
    summary = run.execute()
    return run_dir, summary, run.make_robot().spec


def test_rrd_reads_back_one_image_per_frame_one_chunk_per_inference_joints_per_tick(viewed_run):
    from mcap.reader import make_reader

    run_dir, summary, spec = viewed_run
    assert summary["viewer_dropped"] == 0 and summary["viewer_rrd"] == str(run_dir / "run.rrd")
    entities = read_rrd(run_dir / "run.rrd")

    # camera frames: one image per new frame sent, at the frame's capture time (the MCAP recording of
    # the same run has every observation's frame, repeats included: its distinct capture stamps)
    with next((run_dir / "recording").glob("*.mcap")).open("rb") as f:
        stamps: dict[str, set[int]] = collections.defaultdict(set)
        for _, channel, message in make_reader(f).iter_messages():
            found = re.fullmatch(r"/observation/(\w+)/image/compressed", channel.topic)
            if found:
                stamps[found.group(1)].add(message.log_time)
    assert set(stamps) == set(spec.camera_names) and all(stamps.values())
    for cam, times in stamps.items():
        images = entities[f"/cameras/{cam}"]
        assert rows(images) == len(times), cam
        rrd_ns = np.sort(index(images, "time"))
        assert np.all(np.abs(rrd_ns - np.sort(np.fromiter(times, np.int64))) < 1_000_000), cam  # < 1 ms apart

    # one row of /chunks per accepted inference (at its merge tick), holding the chunk the telemetry saved
    with (run_dir / "inferences.csv").open() as f:
        accepted = [r for r in csv.DictReader(f) if int(r["chunk_id"]) >= 0 and r["rejected"] in ("0", "")]
    assert not any(p.startswith("/chunks/") for p in entities)
    chunk_rows = entities["/chunks"]
    assert rows(chunk_rows) == len(accepted) == summary["inferences"] > 0
    saved = np.load(run_dir / "chunks.npz")
    tensors = [
        t for _, t in sorted(zip(index(chunk_rows, "tick"), column(chunk_rows, "Tensor:data")), key=lambda x: x[0])
    ]
    for i, (tensor,) in enumerate(tensors):
        buffer = tensor["buffer"][1] if isinstance(tensor["buffer"], tuple) else tensor["buffer"]
        assert np.allclose(np.asarray(buffer, np.float64).reshape(saved["chunk"][i].shape), saved["chunk"][i])

    # joint series the length of the run, on the run-wide tick timeline
    with (run_dir / "ticks.csv").open() as f:
        ticks = list(csv.DictReader(f))
    assert len(ticks) == summary["ticks"] == 80
    for j, joint in enumerate(spec.joint_names):
        for series in ("state", "command"):
            batches = entities[f"/joints/{joint}/{series}"]
            assert rows(batches) == len(ticks), (joint, series)
            assert np.array_equal(np.sort(index(batches, "tick")), np.arange(len(ticks)))
        # each chunk drawn over the ticks it covers, on one of a few lines (chunks that overlap in ticks
        # on different ones, a clear after each chunk's last step), not one entity per chunk
        lines = sorted(p for p in entities if p.startswith(f"/joints/{joint}/chunk/"))
        assert 1 < len(lines) < len(accepted), lines
        drawn = {
            p: dict(
                zip(
                    index(scalar_batches(entities[p]), "tick"),
                    (v[0] for v in column(scalar_batches(entities[p]), "Scalars:scalars")),
                )
            )
            for p in lines
        }
        assert sum(map(len, drawn.values())) == sum(c.shape[0] for c in saved["chunk"])
        for c, start in zip(saved["chunk"], saved["start_tick"]):
            span = range(int(start), int(start) + c.shape[0])
            assert any(
                all(t in line and np.isclose(line[t], v) for t, v in zip(span, c[:, j])) for line in drawn.values()
            ), (joint, int(start))
        clears = sum(rows([b for b in entities[p] if "Scalars:scalars" not in b.schema.names]) for p in lines)
        assert clears == len(accepted)
    traj = np.load(run_dir / "trajectory.npz")
    j = len(spec.joint_names) - 1
    batches = entities[f"/joints/{spec.joint_names[j]}/command"]
    order = np.argsort(index(batches, "tick"))
    cmd = np.array([v[0] for v in column(batches, "Scalars:scalars")])[order]
    assert np.allclose(cmd, traj["command"][:, j])
    assert rows(entities["/timing/period_error_ms"]) == len(ticks)
    assert rows(entities["/timing/latency_ms"]) == len(accepted)
    assert rows(entities["/events"]) >= 3  # telemetry ready, episode start, episode end
    assert summary["viewer_logged"]["images"] == sum(len(t) for t in stamps.values())


def test_offline_view_of_the_run_files_matches_the_live_rrd(viewed_run, tmp_path):
    from inference.view import main as view_main

    run_dir, summary, spec = viewed_run
    out = tmp_path / "view.rrd"
    assert view_main([str(run_dir), "--out", str(out)]) == 0
    live, offline = read_rrd(run_dir / "run.rrd"), read_rrd(out)
    assert set(live) == set(offline)
    for path in live:
        if path != "/__properties":
            assert rows(offline[path]) == rows(live[path]), path
    for path in (f"/joints/{spec.joint_names[0]}/state", "/timing/period_error_ms"):
        assert np.array_equal(np.sort(index(offline[path], "tick")), np.sort(index(live[path], "tick")))


def test_offline_view_refuses_a_non_run_dir(tmp_path, capsys):
    from inference.view import main as view_main

    assert view_main([str(tmp_path)]) == 2
    assert "not a run dir" in capsys.readouterr().err


def test_viewer_none_is_the_default_and_changes_nothing(tmp_path):
    from services.record import NullRecorder
    from services.viewer import NullViewer

    run = compose_run(LOCKSTEP, tmp_path / "run")
    assert isinstance(run.make_viewer(), NullViewer)
    assert isinstance(run.make_recorder(), NullRecorder)  # no wrapper, no ring, no process


@pytest.mark.parametrize(
    "override, message",
    [
        ("viewer.jpeg_quality=0", "viewer.jpeg_quality: 0 must be >= 1"),
        ("viewer.web_port=70000", "viewer.web_port: 70000 must be <= 65535"),
        ("viewer.image_encoding=png", "viewer.image_encoding: 'png' is not one of"),
    ],
)
def test_viewer_knobs_fail_as_config_errors_before_anything_starts(tmp_path, override, message):
    run_dir = tmp_path / "run"
    with pytest.raises(ConfigError, match=re.escape(message)):
        compose_run([*LOCKSTEP, "viewer=rerun", override], run_dir)
    assert not run_dir.exists()


def test_viewer_with_nothing_to_do_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="viewer: serve=false and save_rrd=false"):
        compose_run([*LOCKSTEP, "viewer=rerun", "viewer.serve=false", "viewer.save_rrd=false"], tmp_path / "run")


def test_a_viewer_ring_nobody_reads_drops_and_counts_without_waiting(tmp_path):
    """The producer side alone: telemetry mirrors into a viewer ring whose reader is gone; every
    record still reaches the telemetry writer, the tap drops what does not fit and counts it."""
    from services.ring import RecordRing
    from services.telemetry import Telemetry

    tap = RecordRing.create(1 << 16, max_records=100)
    telemetry = Telemetry(tmp_path, taps=[tap], period_s=0.05)
    try:
        for tick in range(1000):
            telemetry.command(0, tick, np.zeros(14), np.zeros(14))
            telemetry.tick({"episode": 0, "tick": tick, "period_error_ms": 0.0})
    finally:
        summary = telemetry.close()
        written, dropped = tap.written, tap.dropped
        tap.close()
    assert summary["ticks"] == 1000 and summary["telemetry_dropped"] == 0
    # 4 warm-up records and the telemetry_ready event, then 2 records a tick
    assert written == 100 and written + dropped == 4 + 1 + 2000


@pytest.mark.slow
def test_a_frozen_viewer_process_costs_the_run_no_tick(tmp_path):
    """SIGSTOP the viewer's process for most of a real-time run: the run ticks to the end, the viewer's
    ring fills and drops (counted in summary.json), and the .rrd it finishes afterwards is readable."""
    run_dir, out = tmp_path / "run", tmp_path / "app.out"
    ticks = 300
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "viewer=rerun",
        "viewer.serve=false",
        "viewer.queue_size=200",
        "policy=scripted",
        f"max_steps={ticks}",
        "report=false",
        "algorithm.stop_on_success=false",
        "algorithm.max_chunk_jump=null",
        "cameras.max_frame_age_s=5",
        "robot.max_state_age_s=5",
        "robot.start_timeout_s=120",
        "algorithm.startup_timeout_s=600",
        f"hydra.run.dir={run_dir}",
    ]
    with out.open("w") as f:
        app = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    pid = None
    try:
        deadline = time.monotonic() + 300
        log = run_dir / "app.log"  # an INFO line: the run's log file has it (the console shows warnings and progress)
        while pid is None:
            found = re.search(r"viewer ready in [\d.]+ s \(pid (\d+)\)", log.read_text() if log.is_file() else "")
            if found:
                pid = int(found.group(1))
            assert app.poll() is None and time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.1)
        os.kill(pid, signal.SIGSTOP)
        ticks_csv = run_dir / "ticks.csv"
        while not ticks_csv.is_file() or len(ticks_csv.read_text().splitlines()) - 1 < ticks:
            assert app.poll() is None and time.monotonic() < deadline, out.read_text()[-3000:]
            time.sleep(0.2)
    finally:
        if pid is not None:
            os.kill(pid, signal.SIGCONT)  # the run's end waits for it to finish the file
    assert app.wait(timeout=300) == 0, out.read_text()[-3000:]
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["ticks"] == ticks
    assert summary["viewer_dropped"] > 0
    entities = read_rrd(run_dir / "run.rrd")
    state_rows = rows(entities["/joints/left_arm_waist/state"])
    assert 0 < state_rows < ticks  # what the ring held when the viewer woke up
