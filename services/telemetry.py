"""Run telemetry: per-tick and per-inference records, events, summary, live status.

The control loop only calls ``tick()`` / ``inference()``, which put a dict on a queue; a writer
thread appends them to CSV files in the run dir, forwards batches to the sinks (W&B) and keeps
the live status line. So telemetry never blocks a tick, whatever a sink does.
Times are seconds (monotonic clock); derived columns carry their unit in the name.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import queue
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Mapping, Sequence

import numpy as np

from services.logger import NullSink, Sink  # noqa: F401 - re-exported: the sink contract

log = logging.getLogger(__name__)

TICK_FIELDS = (
    "episode", "tick", "t_sched", "t_actual", "period_error_ms", "read_ms", "compute_ms",
    "send_ms", "chunk_id", "chunk_index", "underrun", "held", "rejected",
)
INFERENCE_FIELDS = (
    "episode", "chunk_id", "t_start", "t_end", "latency_ms", "d_estimate", "d_actual", "s",
    "guidance", "discontinuity", "server_ms", "rtt_ms", "policy_ms", "snapshot_tick", "merge_tick",
    "stale", "rejected",
)
PERCENTILES = (50, 95, 99)


def percentiles(values: Iterable[float], prefix: str) -> dict[str, float]:
    arr = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    if arr.size == 0:
        return {}
    out = {f"{prefix}_p{p}": float(np.percentile(arr, p)) for p in PERCENTILES}
    out[f"{prefix}_max"] = float(arr.max())
    out[f"{prefix}_mean"] = float(arr.mean())
    return out


def summarize(
    ticks: Sequence[Mapping[str, Any]],
    inferences: Sequence[Mapping[str, Any]],
    period_s: float | None = None,
) -> dict[str, Any]:
    """The summary statistics of a run, from its records alone (the report recomputes them)."""

    def col(rows: Sequence[Mapping[str, Any]], key: str) -> list[float]:
        out = []
        for r in rows:
            v = r.get(key)
            if v in (None, ""):
                continue
            out.append(float(v))
        return out

    summary: dict[str, Any] = {"ticks": len(ticks), "inferences": len(inferences)}
    period_error = col(ticks, "period_error_ms")
    summary.update(percentiles(period_error, "period_error_ms"))
    summary.update(percentiles([abs(v) for v in period_error], "abs_period_error_ms"))
    if period_s is not None and period_error:
        summary["overruns"] = int(sum(1 for v in period_error if v > period_s * 1e3))
    summary["underruns"] = int(sum(col(ticks, "underrun")))
    summary["held_ticks"] = int(sum(col(ticks, "held")))
    summary["rejected_actions"] = int(sum(col(ticks, "rejected")))
    for key in ("read_ms", "compute_ms", "send_ms"):
        summary.update(percentiles(col(ticks, key), key.removesuffix("_ms") + "_ms"))
    summary.update(percentiles(col(inferences, "latency_ms"), "inference_latency_ms"))
    for key in ("d_estimate", "d_actual", "discontinuity"):
        summary.update(percentiles(col(inferences, key), key))
    return summary


def summary_metric_names() -> frozenset[str]:
    """Every numeric key ``summarize`` can write (a run writes those its records support), plus
    the episode and lockstep keys; what ``objective=[...]`` may name."""
    full = summarize([dict.fromkeys(TICK_FIELDS, 1.0)], [dict.fromkeys(INFERENCE_FIELDS, 1.0)], period_s=1.0)
    return frozenset(full) | {"success_rate", "successes", "episodes", "max_jerk", "cells"}


class _CsvTable:
    def __init__(self, path: Path, fields: Sequence[str]) -> None:
        self.path = path
        self.fields = list(fields)
        self._file = path.open("w", newline="")
        self._writer = csv.DictWriter(self._file, fieldnames=self.fields, extrasaction="ignore")
        self._writer.writeheader()
        self.rows: list[dict[str, Any]] = []

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        for r in records:
            row = {k: _plain(r.get(k)) for k in self.fields}
            self._writer.writerow(row)
            self.rows.append(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


def _plain(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer)):
        return v.item()
    if isinstance(v, (bool, np.bool_)):
        return int(v)
    return v


class Telemetry:
    """Thread-safe, non-blocking collector of a run's records."""

    def __init__(
        self,
        run_dir: str | Path,
        sinks: Sequence[Sink] = (),
        config: Mapping[str, Any] | None = None,
        period_s: float | None = None,
        status_interval_s: float = 1.0,
        status_stream: Any = None,
    ) -> None:
        self.run_dir = Path(run_dir)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.period_s = period_s
        self.sinks = list(sinks)
        self._queue: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._ticks = _CsvTable(self.run_dir / "ticks.csv", TICK_FIELDS)
        self._inferences = _CsvTable(self.run_dir / "inferences.csv", INFERENCE_FIELDS)
        self._events = (self.run_dir / "events.jsonl").open("w")
        self.extra_summary: dict[str, Any] = {}
        self._commands: list[tuple] = []
        self._chunks: list[tuple] = []
        self._status_interval_s = status_interval_s
        self._status_stream = status_stream if status_stream is not None else sys.stderr
        self._last_status = 0.0
        self._closed = False
        for sink in self.sinks:
            sink.start(self.run_dir, dict(config or {}))
        self._thread = threading.Thread(target=self._drain_forever, name="telemetry", daemon=True)
        self._thread.start()

    # --------------------------------------------------------------- producer side (hot path)
    def tick(self, record: Mapping[str, Any]) -> None:
        self._queue.put(("tick", record))

    def inference(self, record: Mapping[str, Any]) -> None:
        self._queue.put(("inference", record))

    def event(self, kind: str, **fields: Any) -> None:
        self._queue.put(("event", {"event": kind, "time": time.time(), **fields}))

    def command(self, episode: int, tick: int, command: np.ndarray, state: np.ndarray | None = None) -> None:
        """The command actually sent at ``tick`` (robot units) and the state read with it."""
        self._queue.put(("command", (episode, tick, command, state)))

    def chunk(self, episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray) -> None:
        """A chunk (robot units) whose index 0 is (or would have been) executed at ``start_tick``."""
        self._queue.put(("chunk", (episode, chunk_id, start_tick, chunk)))

    def add_summary(self, **fields: Any) -> None:
        self._queue.put(("summary", fields))

    # --------------------------------------------------------------- writer thread
    def _drain_forever(self) -> None:
        while True:
            item = self._queue.get()
            batch = [item]
            deadline = time.monotonic() + 0.05
            while time.monotonic() < deadline:
                try:
                    batch.append(self._queue.get_nowait())
                except queue.Empty:
                    time.sleep(0.01)
            if self._handle(batch):
                return

    def _handle(self, batch: list[tuple[str, Any]]) -> bool:
        ticks = [r for k, r in batch if k == "tick"]
        infs = [r for k, r in batch if k == "inference"]
        stop = False
        for kind, payload in batch:
            if kind == "event":
                self._events.write(json.dumps(payload, default=_json_default) + "\n")
            elif kind == "command":
                self._commands.append(payload)
            elif kind == "chunk":
                self._chunks.append(payload)
            elif kind == "summary":
                self.extra_summary.update(payload)
            elif kind == "stop":
                stop = True
        self._events.flush()
        if ticks:
            self._ticks.write(ticks)
        if infs:
            self._inferences.write(infs)
        for sink in self.sinks:
            try:
                if ticks:
                    sink.write("tick", ticks)
                if infs:
                    sink.write("inference", infs)
            except Exception:  # a sink must never take the run down
                log.exception("telemetry sink %s failed", type(sink).__name__)
        self._status()
        return stop

    def _status(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_status < self._status_interval_s:
            return
        self._last_status = now
        rows = self._ticks.rows
        if not rows:
            return
        recent = rows[-200:]
        err = [float(r["period_error_ms"]) for r in recent if r["period_error_ms"] not in (None, "")]
        t = [float(r["t_actual"]) for r in recent if r["t_actual"] not in (None, "")]
        rate = (len(t) - 1) / (t[-1] - t[0]) if len(t) > 1 and t[-1] > t[0] else float("nan")
        last_inf = self._inferences.rows[-1] if self._inferences.rows else {}
        line = (
            f"episode {rows[-1]['episode']} tick {rows[-1]['tick']:>5} | {rate:6.1f} Hz"
            f" | period err p99 {np.percentile(err, 99) if err else float('nan'):6.2f} ms"
            f" | infer {float(last_inf.get('latency_ms') or 'nan'):7.1f} ms"
            f" d={last_inf.get('d_actual', '-')}"
            f" | underruns {sum(int(r['underrun'] or 0) for r in rows)}"
        )
        stream = self._status_stream
        if getattr(stream, "isatty", lambda: False)():
            stream.write("\r" + line + ("\n" if final else ""))
        else:
            stream.write(line + "\n")
        stream.flush()

    def _save_arrays(self) -> None:
        try:
            _save_arrays_impl(self.run_dir, self._commands, self._chunks)
        except ValueError:
            log.exception("telemetry: could not save trajectory/chunk arrays (ragged shapes?)")

    # --------------------------------------------------------------- shutdown
    def close(self, **summary_fields: Any) -> dict[str, Any]:
        """Flush everything, write summary.json, finish the sinks; returns the summary."""
        if self._closed:
            return self.summary
        self._closed = True
        self._queue.put(("stop", None))
        self._thread.join(timeout=10.0)
        self._status(final=True)
        self._ticks.close()
        self._inferences.close()
        self._events.close()
        self._save_arrays()
        summary = summarize(self._ticks.rows, self._inferences.rows, self.period_s)
        summary["period_s"] = self.period_s
        summary.update(self.extra_summary)
        summary.update(summary_fields)
        self.summary = summary
        (self.run_dir / "summary.json").write_text(json.dumps(summary, indent=1, default=_json_default))
        for sink in self.sinks:
            try:
                sink.finish(summary)
            except Exception:
                log.exception("telemetry sink %s failed at finish", type(sink).__name__)
        return summary


def _save_arrays_impl(run_dir: Path, commands: list[tuple], chunks: list[tuple]) -> None:
    if commands:
        np.savez_compressed(
            run_dir / "trajectory.npz",
            episode=np.array([c[0] for c in commands]),
            tick=np.array([c[1] for c in commands]),
            command=np.stack([np.asarray(c[2], dtype=np.float32) for c in commands]),
            **({"state": np.stack([np.asarray(c[3], dtype=np.float32) for c in commands])}
               if all(c[3] is not None for c in commands) else {}),
        )
    if chunks:
        np.savez_compressed(
            run_dir / "chunks.npz",
            episode=np.array([c[0] for c in chunks]),
            chunk_id=np.array([c[1] for c in chunks]),
            start_tick=np.array([c[2] for c in chunks]),
            chunk=np.stack([np.asarray(c[3], dtype=np.float32) for c in chunks]),
        )


def _json_default(v: Any) -> Any:
    if isinstance(v, (np.floating, np.integer, np.bool_)):
        return v.item()
    if isinstance(v, np.ndarray):
        return v.tolist()
    return str(v)


def make_sinks(factories: Sequence[Callable[[], Sink]]) -> list[Sink]:
    return [f() for f in factories]
