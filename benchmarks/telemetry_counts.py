"""Does a run's MCAP recording and W&B run hold every message? Counts checked against its ticks.

    .venv/bin/python benchmarks/telemetry_counts.py RUN_DIR [RUN_DIR ...]

For each run dir (``logger=wandb record=mcap``): rows of ticks.csv and inferences.csv, messages
per topic in the bag (read back with the ``mcap`` reader) and history rows in the offline W&B run
file (``tests/wandb_records.py``). A tick sends one command and (from the second tick on) reads
one observation; the episode's first read serves tick 0; a run that ended on a fault also sent
(and recorded) the hold command after its last tick. Prints one JSON line per run with
``ok`` true when every count matches; exit 1 if any does not.
"""

from __future__ import annotations

import csv
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))


def counts(run_dir: Path) -> dict:
    from mcap.reader import make_reader
    from wandb_records import history_and_summary

    with (run_dir / "ticks.csv").open() as f:
        ticks = sum(1 for _ in csv.DictReader(f))
    with (run_dir / "inferences.csv").open() as f:
        inferences = [r for r in csv.DictReader(f)]
    merged = sum(1 for r in inferences if r["rejected"] in ("0", ""))
    topics: dict[str, int] = {}
    with next((run_dir / "recording").glob("*.mcap")).open("rb") as f:
        for _schema, channel, _message in make_reader(f).iter_messages():
            topics[channel.topic] = topics.get(channel.topic, 0) + 1
    history, _, _ = history_and_summary(next((run_dir / "wandb_files").rglob("run-*.wandb")))
    summary = json.loads((run_dir / "summary.json").read_text())
    images = {k: v for k, v in topics.items() if k.endswith("/image/compressed")}
    out = {
        "run_dir": str(run_dir),
        "ticks": ticks,
        "inferences": len(inferences),
        "mcap_commands": topics.get("/command/joint_states", 0),
        "mcap_states": topics.get("/observation/joint_states", 0),
        "mcap_images_per_camera": sorted(set(images.values())),
        "mcap_chunks": topics.get("/policy/chunk", 0),
        "wandb_ticks": history["control/period_error_ms"],
        "wandb_inferences": history["inference/latency_ms"],
        "telemetry_dropped": summary.get("telemetry_dropped", 0),
        "recording_dropped": summary.get("recording_dropped", 0),
    }
    # a run that ended on a fault sent one more command after its last tick: the hold (in the bag, not a tick)
    out["fault"] = summary.get("fault")
    holds = int(out["fault"] is not None)
    out["ok"] = (
        out["mcap_commands"] == ticks + holds
        and out["mcap_states"] == out["wandb_ticks"] == ticks
        and out["mcap_images_per_camera"] == [ticks]
        and out["mcap_chunks"] == merged
        and out["wandb_inferences"] == len(inferences)
        and out["telemetry_dropped"] == 0
        and out["recording_dropped"] == 0
    )
    return out


def main(argv: list[str]) -> int:
    ok = True
    for arg in argv:
        result = counts(Path(arg))
        ok &= result["ok"]
        print(json.dumps(result), flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
