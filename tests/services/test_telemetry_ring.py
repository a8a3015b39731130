"""The telemetry ring and the processes it feeds: what the control process does per tick
is copy fixed-layout records; the files, sinks and the recorder live in other processes, started
before the first tick; the files keep their columns; a dead control process loses nothing sent."""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from services.ring import RecordRing
from services.telemetry import INFERENCE_FIELDS, TICK_FIELDS, Telemetry

ROOT = Path(__file__).resolve().parents[2]


def _drain_all(ring: RecordRing) -> list[tuple[int, list[np.ndarray]]]:
    out: list[tuple[int, list[np.ndarray]]] = []
    ring.drain(lambda kind, arrays: out.append((kind, [a.copy() for a in arrays])))
    return out


def test_ring_round_trips_records_across_many_wraps():
    rng = np.random.default_rng(0)
    ring = RecordRing.create(4096)
    try:
        sent, got, full = [], [], 0
        for i in range(2000):
            arrays = [
                rng.standard_normal(rng.integers(0, 40)).astype(np.float32),
                rng.integers(0, 255, size=(3, rng.integers(1, 6), 4), dtype=np.uint8),
                np.array([i], np.int64),
                np.array([True, False]),
            ]
            if not ring.put(i % 7, arrays):  # full: the reader frees it, then the record fits
                full += 1
                got += _drain_all(ring)
                assert ring.put(i % 7, arrays)
            sent.append((i % 7, arrays))
            if rng.random() < 0.3:  # the reader runs behind by a varying amount
                got += _drain_all(ring)
        got += _drain_all(ring)
        assert 0 < full == ring.dropped and len(got) == len(sent)
        for (k1, a1), (k2, a2) in zip(sent, got):
            assert k1 == k2
            for x, y in zip(a1, a2):
                assert x.dtype == y.dtype and x.shape == y.shape
                np.testing.assert_array_equal(x, y)
    finally:
        ring.close()


def test_full_ring_drops_and_counts_without_waiting():
    ring = RecordRing.create(1024, max_records=None)
    try:
        record = [np.zeros(16, np.float64)]
        accepted = 0
        while ring.put(1, record):
            accepted += 1
        assert accepted > 0 and ring.dropped == 1
        assert not ring.put(1, record) and ring.dropped == 2
        assert len(_drain_all(ring)) == accepted  # what was accepted is intact
        assert ring.put(1, record)  # room again
    finally:
        ring.close()
    capped = RecordRing.create(1 << 16, max_records=3)
    try:
        assert [capped.put(1, [np.zeros(1)]) for _ in range(4)] == [True, True, True, False]
        assert capped.dropped == 1
    finally:
        capped.close()


def _old_csv(fields, records) -> str:
    """What the threaded writer wrote: DictWriter over _plain values (numpy -> Python, bool -> int)."""

    def plain(v):
        if isinstance(v, (bool, np.bool_)):
            return int(v)
        if isinstance(v, (np.floating, np.integer)):
            return v.item()
        return v

    buf = io.StringIO(newline="")
    w = csv.DictWriter(buf, fieldnames=list(fields), extrasaction="ignore")
    w.writeheader()
    for r in records:
        w.writerow({k: plain(r.get(k)) for k in fields})
    return buf.getvalue()


def test_files_keep_their_columns_and_values(tmp_path):
    rng = np.random.default_rng(1)
    ticks = [
        {
            "episode": 0,
            "tick": i,
            "t_sched": 0.05 * i,
            "t_actual": 0.05 * i + rng.random() * 1e-3,
            "period_error_ms": np.float64(rng.random()),
            "read_ms": np.float32(rng.random()),
            "compute_ms": rng.random(),
            "send_ms": 0.0,
            "chunk_id": None if i < 2 else np.int64(i // 5),
            "chunk_index": i % 5,
            "underrun": False,
            "held": np.bool_(i == 3),
            "rejected": 0,
            "extra_key": "ignored",
        }
        for i in range(50)
    ]
    infs = [
        {
            "episode": 0,
            "chunk_id": c,
            "t_start": 1.0 * c,
            "t_end": 1.1 * c,
            "latency_ms": 100.0 + c,
            "d_estimate": 3,
            "d_actual": None,
            "s": 5,
            "guidance": "vjp",
            "discontinuity": "",
            "stale": 0,
            "rejected": 0,
        }
        for c in range(4)
    ]
    telemetry = Telemetry(tmp_path, period_s=0.05)
    for r in ticks:
        telemetry.tick(r)
        telemetry.command(0, r["tick"], np.full(14, r["tick"], np.float64), np.arange(14.0))
    for r in infs:
        telemetry.inference(r)
        telemetry.chunk(0, r["chunk_id"], 5 * r["chunk_id"], np.full((10, 14), r["chunk_id"], np.float32))
    telemetry.event("episode_end", episode=0, note=np.int64(7))
    summary = telemetry.close(success_rate=1.0)
    for name, fields, records in (("ticks.csv", TICK_FIELDS, ticks), ("inferences.csv", INFERENCE_FIELDS, infs)):
        with (tmp_path / name).open(newline="") as f:
            assert f.read() == _old_csv(fields, records), name
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert [e["event"] for e in events] == ["telemetry_ready", "episode_end"] and events[1]["note"] == 7
    with np.load(tmp_path / "trajectory.npz") as t:
        np.testing.assert_array_equal(t["tick"], np.arange(50))
        np.testing.assert_array_equal(t["command"][:, 0], np.arange(50, dtype=np.float32))
        assert t["state"].shape == (50, 14)
    with np.load(tmp_path / "chunks.npz") as c:
        assert c["chunk"].shape == (4, 10, 14) and list(c["start_tick"]) == [0, 5, 10, 15]
    assert summary == json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == 50 and summary["inferences"] == 4 and summary["success_rate"] == 1.0
    err = [float(r["period_error_ms"]) for r in ticks]
    assert summary["period_error_ms_p99"] == pytest.approx(np.percentile(err, 99))
    assert summary["telemetry_dropped"] == 0


def _frame(image):
    return SimpleNamespace(image=image, capture_time=time.monotonic())


def test_control_process_gets_no_thread_and_no_import_on_the_first_ticks(tmp_path):
    """Everything starts before the first tick: after the constructors, a tick's telemetry and
    recording calls start no thread and import no module in the control process."""
    from services.record.mcap import McapRecorder

    spec = SimpleNamespace(joint_names=tuple(f"j{i}" for i in range(14)))
    cams = ("head", "left")
    threads_before = {t.ident for t in threading.enumerate()}
    telemetry = Telemetry(tmp_path, period_s=0.05)
    recorder = McapRecorder()
    recorder.start(tmp_path, spec, cams)
    assert {t.ident for t in threading.enumerate()} == threads_before
    for name in ("ticks.csv", "inferences.csv", "events.jsonl", "recording"):
        assert (tmp_path / name).exists(), f"{name} not created before the first tick"
    modules_before = set(sys.modules)
    image = np.random.default_rng(0).integers(0, 255, (3, 48, 64), dtype=np.uint8)
    for tick in range(20):
        obs = SimpleNamespace(timestamp=time.monotonic(), state=np.zeros(14), images={c: _frame(image) for c in cams})
        recorder.observation(obs)
        telemetry.tick({"episode": 0, "tick": tick, "period_error_ms": 0.1, "chunk_id": 0})
        telemetry.command(0, tick, np.zeros(14), obs.state)
        recorder.command(np.zeros(14))
        if tick % 10 == 0:
            telemetry.inference({"episode": 0, "chunk_id": tick, "latency_ms": 1.0, "guidance": "vjp"})
            telemetry.chunk(0, tick, tick, np.zeros((10, 14)))
            recorder.chunk(np.zeros((10, 14)))
            telemetry.event("tick_event", tick=tick)
    assert set(sys.modules) == modules_before
    assert {t.ident for t in threading.enumerate()} == threads_before
    recorded = recorder.close()
    summary = telemetry.close()
    assert summary["ticks"] == 20 and summary["inferences"] == 2
    assert recorded["recorded"] == {
        "/observation/joint_states": 20,
        "/observation/head/image/compressed": 20,
        "/observation/left/image/compressed": 20,
        "/command/joint_states": 20,
        "/policy/chunk": 2,
    }
    assert recorded["recording_dropped"] == 0


_KILLED = """
import os, signal, sys, numpy as np
sys.path.insert(0, {root!r})
from services.telemetry import Telemetry
t = Telemetry({run_dir!r}, period_s=0.05)
for i in range(100):
    t.tick({{"episode": 0, "tick": i, "period_error_ms": 0.5}})
print(t._proc.proc.pid, t._ring.name, flush=True)
os.killpg(0, signal.SIGKILL)  # this process and its group (multiprocessing's resource tracker too)
"""


def test_writer_keeps_every_record_when_the_control_process_is_killed(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", _KILLED.format(root=str(ROOT), run_dir=str(tmp_path))],
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,
    )
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    writer_pid, ring_name = proc.stdout.split()
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not (tmp_path / "summary.json").exists():
        time.sleep(0.1)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["ticks"] == 100 and "control process ended" in summary["fault"]
    with (tmp_path / "ticks.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 100
    while time.monotonic() < deadline and (
        Path(f"/proc/{writer_pid}").exists() or Path(f"/dev/shm/{ring_name}").exists()
    ):
        time.sleep(0.1)
    assert not Path(f"/proc/{writer_pid}").exists(), "writer process outlived its control process"
    assert not Path(f"/dev/shm/{ring_name}").exists(), "ring left in /dev/shm"


def test_ctrl_c_to_the_process_group_does_not_cut_the_writer_short(tmp_path):
    """SIGINT reaches every process of the terminal's group; the writer must wait for close()."""
    telemetry = Telemetry(tmp_path, period_s=0.05)
    os.kill(telemetry._proc.proc.pid, signal.SIGINT)
    for i in range(10):
        telemetry.tick({"episode": 0, "tick": i, "period_error_ms": 0.0})
    time.sleep(0.2)
    assert telemetry._proc.proc.poll() is None
    assert telemetry.close()["ticks"] == 10
    telemetry.tick({"episode": 0, "tick": 10})  # a late record on an exit path: dropped, no error
    telemetry.event("late")
