"""A finished run in Rerun: ``python -m inference.view <run_dir> [--serve] [--out FILE]``.

Turns the run's files (ticks.csv, inferences.csv, events.jsonl, trajectory.npz, chunks.npz,
summary.json and, with ``record=mcap``, the camera frames of ``recording/*.mcap``) into the same
Rerun view as ``viewer=rerun`` shows live (``services.viewer.layout``): written to ``<run_dir>/view.rrd``
(open it with ``rerun <file>``) and, with ``--serve``, served to a browser (127.0.0.1 unless
``--bind``) until Ctrl-C.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import yaml

log = logging.getLogger("inference.view")


def _csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _mcap_messages(run_dir: Path) -> tuple[list[str] | None, dict[str, list[tuple[int, bytes]]], list[int]]:
    """(joint names, camera -> [(stamp ns, JPEG)], joint-state stamps ns) from the run's MCAP recording."""
    files = sorted((run_dir / "recording").glob("*.mcap")) if (run_dir / "recording").is_dir() else []
    if not files:
        return None, {}, []
    from mcap.reader import make_reader
    from rosbags.typesys import Stores, get_typestore

    ts = get_typestore(Stores.ROS2_HUMBLE)
    names, images, state_ns = None, {}, []
    with files[0].open("rb") as f:
        for schema, channel, message in make_reader(f).iter_messages():
            topic = channel.topic
            if topic.startswith("/observation/") and topic.endswith("/image/compressed"):
                cam = topic.split("/")[2]
                msg = ts.deserialize_cdr(message.data, "sensor_msgs/msg/CompressedImage")
                images.setdefault(cam, []).append((message.log_time, bytes(msg.data)))
            elif topic == "/observation/joint_states":
                state_ns.append(message.log_time)
                if names is None:
                    names = list(ts.deserialize_cdr(message.data, "sensor_msgs/msg/JointState").name)
    return names, images, state_ns


def convert(run_dir: Path, rec: Any) -> dict[str, int]:
    """Log the run in ``run_dir`` to the recording stream ``rec``; the counts of what was logged."""
    import cv2
    import rerun as rr

    from services.viewer.layout import RunView, blueprint

    cfg = (
        yaml.safe_load((run_dir / "config_resolved.yaml").read_text())
        if (run_dir / "config_resolved.yaml").is_file()
        else {}
    )
    hz = float((cfg.get("robot") or {}).get("hz") or 0) or None
    ticks = _csv(run_dir / "ticks.csv")
    inferences = _csv(run_dir / "inferences.csv")
    names, images, state_ns = _mcap_messages(run_dir)
    traj = np.load(run_dir / "trajectory.npz") if (run_dir / "trajectory.npz").is_file() else None
    dims = int(traj["command"].shape[1]) if traj is not None else len(names or [])
    joint_names = (names or (cfg.get("robot") or {}).get("joint_names") or [f"joint_{i}" for i in range(dims)])[:dims]
    cameras = sorted(images) or list(((cfg.get("cameras") or {}).get("devices") or {}).keys())
    t_actual = np.array([float(r["t_actual"]) for r in ticks]) if ticks else np.zeros(0)
    # the recording's stamps are wall-clock (monotonic + an offset the recorder took at start); the
    # first joint-state message is the first observation, read just before the first tick
    mono_to_wall = (state_ns[0] * 1e-9 - t_actual[0]) if state_ns and t_actual.size else time.time() - time.monotonic()
    rec.send_blueprint(blueprint(joint_names, cameras, period_s=1.0 / hz if hz else None))
    view = RunView(rec, joint_names, cameras, mono_to_wall, 1.0 / hz if hz else None)
    if traj is not None:
        state = traj["state"] if "state" in traj.files else None
        for i in range(len(traj["tick"])):
            view.command(
                int(traj["episode"][i]),
                int(traj["tick"][i]),
                traj["command"][i],
                None if state is None else state[i][: traj["command"].shape[1]],
            )
    for row in ticks:
        view.tick(row)
    if (run_dir / "chunks.npz").is_file():
        chunks = np.load(run_dir / "chunks.npz")
        for i in range(len(chunks["chunk_id"])):
            view.chunk(
                int(chunks["episode"][i]), int(chunks["chunk_id"][i]), int(chunks["start_tick"][i]), chunks["chunk"][i]
            )
    for row in inferences:
        view.inference(row)
    if (run_dir / "events.jsonl").is_file():
        for line in (run_dir / "events.jsonl").read_text().splitlines():
            if line.strip():
                view.event(line)
    global_ticks = np.arange(t_actual.size)
    for cam, frames in images.items():
        last = None
        for stamp_ns, jpeg in frames:
            if stamp_ns == last:  # the recording keeps each observation's frame; a repeat is no new frame
                continue
            last = stamp_ns
            t = stamp_ns * 1e-9 - mono_to_wall
            tick = int(global_ticks[min(np.searchsorted(t_actual, t), t_actual.size - 1)]) if t_actual.size else None
            bgr = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
            if bgr is not None:  # raw RGB, as live: every browser draws it
                view.image(cam, t, rr.Image(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB), color_model="RGB"), tick=tick)
    summary = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else None
    view.finish(summary)
    return dict(view.counts)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m inference.view", description=__doc__.split("\n")[0])
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--out", type=Path, default=None, help="the .rrd to write (default <run_dir>/view.rrd)")
    ap.add_argument("--no-save", action="store_true", help="serve only, write no .rrd")
    ap.add_argument("--serve", action="store_true", help="serve Rerun's web viewer until Ctrl-C")
    ap.add_argument("--bind", default="127.0.0.1", help="0.0.0.0 opens the viewer to the lab network")
    ap.add_argument("--web-port", type=int, default=9090)
    ap.add_argument("--grpc-port", type=int, default=9876)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    run_dir = args.run_dir
    if not (run_dir / "ticks.csv").is_file():
        print(f"config error: run_dir: {run_dir} is not a run dir (no ticks.csv)", file=sys.stderr)
        return 2
    if args.no_save and not args.serve:
        print("config error: --no-save: nothing to do without --serve", file=sys.stderr)
        return 2
    import rerun as rr

    from services.viewer.server import WebViewerServer

    server = None
    sinks = []
    out = None if args.no_save else (args.out or run_dir / "view.rrd")
    if out is not None:
        sinks.append(rr.FileSink(str(out)))
    if args.serve:
        server = WebViewerServer(args.bind, args.web_port, args.grpc_port, log_path=run_dir / "viewer_server.log")
        sinks.append(rr.GrpcSink(server.local_grpc_url))
    try:
        rec = rr.RecordingStream("rt-inference-engine", recording_id=f"view-{run_dir.resolve().name}")
        rec.set_sinks(*sinks)
        rec.send_recording_name(str(run_dir))
        counts = convert(run_dir, rec)
        rec.flush(timeout_sec=60.0)
        log.info("logged %s%s", counts, f"; saved {out}" if out else "")
        if server is not None:
            log.info("live view: %s  (Ctrl-C to stop)", server.url)
            try:
                while server.proc.poll() is None:
                    time.sleep(0.5)
            except KeyboardInterrupt:
                pass
        rec.disconnect()
    finally:
        if server is not None:
            server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
