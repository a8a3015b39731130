"""Run telemetry: per-tick and per-inference records, events, summary, live status.

The control loop only calls ``tick()`` / ``inference()`` / ``command()`` / ``chunk()`` / ``event()``,
which copy a fixed-layout record into a shared-memory ring (``services.ring``); a writer *process*
appends them to the files in the run dir, forwards batches to the sinks (W&B) and keeps the live
status line. So telemetry never blocks a tick nor holds the control process's interpreter,
whatever a sink does.
Times are seconds (monotonic clock); derived columns carry their unit in the name.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.logger import NullSink, Sink  # noqa: F401 - re-exported: the sink contract
from services.ring import RecordRing, SinkProcess, array_text, text_array

log = logging.getLogger(__name__)

TICK_FIELDS = (
    "episode",
    "tick",
    "t_sched",
    "t_actual",
    "period_error_ms",
    "read_ms",
    "compute_ms",
    "send_ms",
    "chunk_id",
    "chunk_index",
    "underrun",
    "held",
    "rejected",
)
INFERENCE_FIELDS = (
    "episode",
    "chunk_id",
    "t_start",
    "t_end",
    "latency_ms",
    "d_estimate",
    "d_actual",
    "s",
    "guidance",
    "discontinuity",
    "plan_jump",
    "server_ms",
    "rtt_ms",
    "policy_ms",
    "snapshot_tick",
    "merge_tick",
    "stale",
    "rejected",
    # where a transport measures them: the wire both ways (latency minus server time), the request's
    # size, and for a shared service the wait for its batch, the batch's size and the sends it took
    "transport_ms",
    "payload_bytes",
    "queue_ms",
    "batch_size",
    "attempts",
    # what an in-process policy reported (last_info): select's stale gate fired (1) or not (0);
    # bidirectional decoding's kept sample (0: the one from the request's own noise) and its two terms
    "select_stale",
    "bid_index",
    "bid_backward",
    "bid_forward",
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
    ticks: Sequence[Mapping[str, Any]], inferences: Sequence[Mapping[str, Any]], period_s: float | None = None
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
    for key in ("policy_ms", "transport_ms", "queue_ms"):
        summary.update(percentiles(col(inferences, key), "inference_" + key))
    for key in ("d_estimate", "d_actual", "discontinuity", "plan_jump"):
        summary.update(percentiles(col(inferences, key), key))
    stale = col(inferences, "select_stale")
    if stale:
        summary["select_stale_rate"] = float(np.mean(stale))
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
        self._file.flush()
        self.rows: list[dict[str, Any]] = []

    def write(self, records: Sequence[Mapping[str, Any]]) -> None:
        for r in records:
            row = {k: r.get(k) for k in self.fields}
            self._writer.writerow(row)
            self.rows.append(row)
        self._file.flush()

    def close(self) -> None:
        self._file.close()


# ------------------------------------------------------------------ fixed-size records
# Record kinds in the telemetry ring. A row (tick, inference) is one float64 value and one type code
# per field (None / int / float / text) plus the text fields as JSON, so a row comes out of the ring
# with the types it went in with (an int stays an int in the CSV, None an empty cell).
TICK, INFERENCE, EVENT, COMMAND, CHUNK, WARMUP = 1, 2, 3, 4, 5, 6
_NONE, _INT, _FLOAT, _TEXT = 0, 1, 2, 3


_CODE_OF = {
    int: _INT,
    bool: _INT,
    np.int64: _INT,
    np.int32: _INT,
    np.bool_: _INT,
    float: _FLOAT,
    np.float64: _FLOAT,
    np.float32: _FLOAT,
}


def _row_arrays(fields: Sequence[str], record: Mapping[str, Any]) -> list[np.ndarray]:
    values, codes, text = [], [], {}
    for key in fields:
        v = record.get(key)
        code = _CODE_OF.get(type(v))
        if code is None:  # None, "", text, another numpy scalar type
            if v is None or (isinstance(v, str) and v == ""):
                code, v = _NONE, 0.0
            elif isinstance(v, (np.integer, np.bool_)):
                code = _INT
            elif isinstance(v, np.floating):
                code = _FLOAT
            else:
                code, text[key], v = _TEXT, str(v), 0.0
        values.append(v)
        codes.append(code)
    return [np.array(values, np.float64), np.array(codes, np.int8), text_array(json.dumps(text) if text else "")]


def _row(fields: Sequence[str], arrays: Sequence[np.ndarray]) -> dict[str, Any]:
    values, codes, text = arrays
    strings = json.loads(array_text(text)) if text.size else {}
    row: dict[str, Any] = {}
    for i, key in enumerate(fields):
        code = codes[i]
        row[key] = (
            None
            if code == _NONE
            else int(values[i])
            if code == _INT
            else float(values[i])
            if code == _FLOAT
            else strings[key]
        )
    return row


class Telemetry:
    """A run's records, written by a process of their own (:class:`services.ring.SinkProcess`).

    Producer side, in the control process: ``tick``/``inference``/``command``/``chunk``/``event``
    copy a fixed-layout record into the telemetry ring and return; nothing else runs here per tick
    (no thread, no file, no sink). The writer process owns ``ticks.csv``, ``inferences.csv``,
    ``events.jsonl``, the arrays, the sinks (W&B) and the live status line, and computes the summary
    from every record at ``close()``. It is started, its files opened and its sinks started
    (``wandb.init``) before this constructor returns, i.e. before any tick.
    """

    def __init__(
        self,
        run_dir: str | Path,
        sinks: Sequence[Sink] = (),
        config: Mapping[str, Any] | None = None,
        period_s: float | None = None,
        status_interval_s: float = 1.0,
        ring_mb: float = 16.0,
        taps: Sequence[RecordRing] = (),
    ) -> None:
        self.run_dir = Path(run_dir)
        self._taps = tuple(taps)  # other sinks' rings that get a copy of every record (the live viewer)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.period_s = period_s
        self.summary: dict[str, Any] = {}
        self._closed = False
        self._ring = RecordRing.create(int(ring_mb * (1 << 20)))
        writer = _TelemetryWriter(self.run_dir, list(sinks), dict(config or {}), period_s, status_interval_s)
        try:
            self._proc = SinkProcess(writer, self._ring, "telemetry")
        except BaseException:
            self._ring.close()
            raise
        self._warm_up()
        log.info(
            "telemetry writer ready in %.2f s (pid %d; sinks: %s)",
            self._proc.ready_s,
            self._proc.proc.pid,
            ", ".join(type(s).__name__ for s in sinks) or "none",
        )
        self.event(
            "telemetry_ready", seconds=round(self._proc.ready_s, 3), pid=self._proc.proc.pid, **self._proc.ready_info
        )

    def _warm_up(self) -> None:
        """Run every producer path once (records the writer ignores), so the first tick is not first."""
        for arrays in (
            _row_arrays(TICK_FIELDS, {}),
            _row_arrays(INFERENCE_FIELDS, {"guidance": "-"}),
            self._command_arrays(0, 0, np.zeros(1), np.zeros(1)),
            self._chunk_arrays(0, 0, 0, np.zeros((1, 1))),
        ):
            self._put(WARMUP, arrays)

    def _put(self, kind: int, arrays: list[np.ndarray]) -> None:
        self._ring.put(kind, arrays)
        for tap in self._taps:  # each ring drops on its own when full: a slow tap costs no record here
            tap.put(kind, arrays)

    # --------------------------------------------------------------- producer side (hot path)
    def tick(self, record: Mapping[str, Any]) -> None:
        self._put(TICK, _row_arrays(TICK_FIELDS, record))

    def inference(self, record: Mapping[str, Any]) -> None:
        self._put(INFERENCE, _row_arrays(INFERENCE_FIELDS, record))

    def event(self, kind: str, **fields: Any) -> None:
        self._put(
            EVENT, [text_array(json.dumps({"event": kind, "time": time.time(), **fields}, default=_json_default))]
        )

    @staticmethod
    def _command_arrays(episode: int, tick: int, command: np.ndarray, state: np.ndarray | None) -> list[np.ndarray]:
        has_state = state is not None
        return [
            np.array([episode, tick, has_state], np.int64),
            np.asarray(command, np.float32).reshape(-1),
            np.asarray(state if has_state else (), np.float32).reshape(-1),
        ]

    def command(self, episode: int, tick: int, command: np.ndarray, state: np.ndarray | None = None) -> None:
        """The command actually sent at ``tick`` (robot units) and the state read with it."""
        self._put(COMMAND, self._command_arrays(episode, tick, command, state))

    @staticmethod
    def _chunk_arrays(episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray) -> list[np.ndarray]:
        return [np.array([episode, chunk_id, start_tick], np.int64), np.asarray(chunk, np.float32)]

    def chunk(self, episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray) -> None:
        """A chunk (robot units) whose index 0 is (or would have been) executed at ``start_tick``."""
        self._put(CHUNK, self._chunk_arrays(episode, chunk_id, start_tick, chunk))

    def add_summary(self, **fields: Any) -> None:
        self._proc.send(("summary", fields))

    @property
    def dropped(self) -> int:
        """Records that found the ring full (the writer fell behind); 0 in a healthy run."""
        return self._ring.dropped

    # --------------------------------------------------------------- shutdown
    def close(self, **summary_fields: Any) -> dict[str, Any]:
        """Let the writer drain everything, write summary.json and finish the sinks; the summary."""
        if self._closed:
            return self.summary
        self._closed = True
        dropped = self._ring.dropped
        if dropped:
            log.warning("telemetry: %d records found the ring full and were dropped", dropped)
        summary = self._proc.stop(
            {**summary_fields, "telemetry_dropped": dropped, "telemetry_ready_s": round(self._proc.ready_s, 3)}
        )
        self._ring.close()
        if summary is None:  # the writer died: what it wrote is on disk, the summary is partial
            summary = {**summary_fields, "telemetry_dropped": dropped, "telemetry_failed": True}
        self.summary = summary
        return summary


@dataclass
class _TelemetryWriter:
    """The writer process's side (pickled to it): drains the ring, writes the files and sinks."""

    run_dir: Path
    sinks: list[Sink]
    config: dict[str, Any]
    period_s: float | None
    status_interval_s: float

    def run(self, ring: RecordRing, conn: Any) -> None:
        t0 = time.monotonic()
        self._ticks = _CsvTable(self.run_dir / "ticks.csv", TICK_FIELDS)
        self._inferences = _CsvTable(self.run_dir / "inferences.csv", INFERENCE_FIELDS)
        self._events = (self.run_dir / "events.jsonl").open("w")
        self._commands: list[tuple] = []
        self._chunks: list[tuple] = []
        self.extra_summary: dict[str, Any] = {}
        self._last_status = 0.0
        self._last_line = ""
        for sink in self.sinks:
            sink.start(self.run_dir, self.config)
        conn.send(("ready", {"writer_start_s": round(time.monotonic() - t0, 3)}))

        # A drain thread empties the ring into memory at once, whatever the sinks cost (W&B logs a
        # row in ~0.1-0.2 ms; a lockstep run can tick faster than that): the ring never fills.
        pending: list[tuple[int, Any]] = []
        lock, stop = threading.Lock(), threading.Event()

        def take(kind: int, arrays: list[np.ndarray]) -> None:
            item = self._decode(kind, arrays)
            if item is not None:
                with lock:
                    pending.append(item)

        def drain_forever() -> None:
            while not stop.is_set():
                if ring.drain(take) == 0:
                    time.sleep(0.002)
            ring.drain(take)

        drainer = threading.Thread(target=drain_forever, name="telemetry-drain", daemon=True)
        drainer.start()
        closing: dict[str, Any] | None = None
        while closing is None:
            try:
                if conn.poll(0.05):
                    kind, payload = conn.recv()
                    if kind == "summary":
                        self.extra_summary.update(payload)
                    elif kind == "stop":
                        closing = dict(payload or {})
            except (EOFError, OSError):  # the control process is gone: keep what it sent
                closing, conn = {"fault": "control process ended without closing telemetry"}, None
            if closing is not None:
                stop.set()
                drainer.join()
            with lock:
                batch, pending[:] = list(pending), []
            self._handle(batch)
        summary = self._finish(closing)
        if conn is not None:
            conn.send(("done", summary))

    def _decode(self, kind: int, arrays: list[np.ndarray]) -> tuple[int, Any] | None:
        if kind == TICK:
            return kind, _row(TICK_FIELDS, arrays)
        if kind == INFERENCE:
            return kind, _row(INFERENCE_FIELDS, arrays)
        if kind == EVENT:
            return kind, array_text(arrays[0])
        if kind == COMMAND:
            episode, tick, has_state = (int(v) for v in arrays[0])
            return kind, (episode, tick, arrays[1].copy(), arrays[2].copy() if has_state else None)
        if kind == CHUNK:
            episode, chunk_id, start_tick = (int(v) for v in arrays[0])
            return kind, (episode, chunk_id, start_tick, arrays[1].copy())
        return None  # WARMUP

    def _handle(self, batch: list[tuple[int, Any]]) -> None:
        ticks = [r for k, r in batch if k == TICK]
        infs = [r for k, r in batch if k == INFERENCE]
        for kind, payload in batch:
            if kind == EVENT:
                self._events.write(payload + "\n")
            elif kind == COMMAND:
                self._commands.append(payload)
            elif kind == CHUNK:
                self._chunks.append(payload)
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

    def _status(self, final: bool = False) -> None:
        now = time.monotonic()
        if not final and now - self._last_status < self.status_interval_s:
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
        stream = sys.stderr
        if stream.isatty():
            stream.write("\r" + line + ("\n" if final else ""))
        elif (
            line != self._last_line
        ):  # a log file gets a line only when something moved (not once a second after the end)
            stream.write(line + "\n")
        self._last_line = line
        stream.flush()

    def _finish(self, summary_fields: dict[str, Any]) -> dict[str, Any]:
        self._status(final=True)
        self._ticks.close()
        self._inferences.close()
        self._events.close()
        try:
            _save_arrays_impl(self.run_dir, self._commands, self._chunks)
        except ValueError:
            log.exception("telemetry: could not save trajectory/chunk arrays (ragged shapes?)")
        summary = summarize(self._ticks.rows, self._inferences.rows, self.period_s)
        summary["period_s"] = self.period_s
        summary.update(self.extra_summary)
        summary.update(summary_fields)
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
            **(
                {"state": np.stack([np.asarray(c[3], dtype=np.float32) for c in commands])}
                if all(c[3] is not None for c in commands)
                else {}
            ),
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
