"""What a run looks like in Rerun: entity paths, timelines, styles and the blueprint.

One writer for both the live sink process and ``python -m inference.view`` (a finished run's files),
so the two show the same thing. Entities:

* ``cameras/<name>``: each new camera frame, at its capture time;
* ``joints/<joint>/state`` and ``joints/<joint>/command``: per control tick;
* ``joints/<joint>/chunk/<k>``: the chunks of the run for that joint, each drawn over the ticks it
  covers (its index 0 at its start tick): each new chunk branches off the previous one's line at its
  merge tick, and the previous chunk's remainder goes on past it, the part the new one replaced.
  Chunks that overlap in ticks go to different lines ``k``; a line takes the next chunk that starts
  after its last one ended (a ``Clear`` at the tick after each chunk's last step breaks the line
  there), so a run has as many lines per joint as chunks overlap at most (about horizon / execute
  horizon + 1), not one per chunk: the web viewer's cost stays flat however long the run;
* ``joints/<joint>/prefix``: dots on each chunk's executed prefix (the ``d`` steps that had already
  run, from the previous chunk, while it was computed);
* ``chunks``: each accepted inference's whole chunk (steps x joints tensor) and its facts (episode,
  chunk id, start, merge tick, delay, latency), one row per chunk at its merge tick;
* ``timing/period_error_ms``, ``timing/latency_ms``, ``timing/delay_ticks/{estimate,actual}``;
* ``events``: the run's events (faults as errors, rejected chunks as warnings); ``summary`` at the end.

Timelines: ``tick`` (control ticks, run-wide: episode e continues where e-1 ended) and ``time``
(the run's monotonic clock as wall-clock time, like the MCAP recording's stamps).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

TICK_TIMELINE, TIME_TIMELINE = "tick", "time"
STATE_COLOR, COMMAND_COLOR, PREFIX_COLOR = (40, 40, 40), (230, 120, 0), (200, 30, 30)
# chunk lines cycle through these, so overlapping chunks differ (none near the state's dark grey, the
# command's orange or a blend of the two)
CHUNK_COLORS = ((31, 119, 180), (44, 160, 44), (148, 103, 189), (23, 190, 207), (227, 119, 194), (188, 189, 34))


def joint_path(name: str) -> str:
    import rerun as rr

    return f"joints/{rr.escape_entity_path_part(str(name))}"


PLOT_WINDOW_S = 10.0  # the time plots show the last this many seconds before the time cursor


def blueprint(
    joint_names: Sequence[str], cameras: Sequence[str], window_s: float = PLOT_WINDOW_S, period_s: float | None = None
) -> Any:
    """Cameras across the top left, timing plots and events below them; one plot per joint on the right.

    The time plots show a sliding window, the last ``window_s`` before the time cursor and everything
    after it (the newest chunk's steps still to come): what a viewer draws each frame stays the same
    however long the run (drawing the whole run in 20 plots, a browser without a GPU falls ever
    further behind a live run)."""
    import rerun.blueprint as rrb

    window = [
        rrb.VisibleTimeRange(
            TIME_TIMELINE,
            start=rrb.TimeRangeBoundary.cursor_relative(seconds=-window_s),
            end=rrb.TimeRangeBoundary.infinite(),
        ),
        rrb.VisibleTimeRange(
            TICK_TIMELINE,
            start=rrb.TimeRangeBoundary.cursor_relative(seq=-int(round(window_s / (period_s or 0.05)))),
            end=rrb.TimeRangeBoundary.infinite(),
        ),
    ]
    cams = [rrb.Spatial2DView(origin=f"cameras/{c}", name=c) for c in cameras]
    timing = [
        rrb.TimeSeriesView(
            origin="timing/period_error_ms",
            name="period error (ms)",
            plot_legend=rrb.PlotLegend(visible=False),
            time_ranges=window,
        ),
        rrb.TimeSeriesView(
            origin="timing/latency_ms",
            name="inference latency (ms)",
            plot_legend=rrb.PlotLegend(visible=False),
            time_ranges=window,
        ),
        rrb.TimeSeriesView(origin="timing/delay_ticks", name="delay d (ticks): estimate / actual", time_ranges=window),
    ]
    joints = [
        rrb.TimeSeriesView(
            origin=joint_path(j),
            name=f"{j}: state, command, chunks",
            plot_legend=rrb.PlotLegend(visible=False),
            time_ranges=window,
        )
        for j in joint_names
    ]
    left = rrb.Vertical(
        *([rrb.Horizontal(*cams)] if cams else []),
        rrb.Horizontal(*timing),
        rrb.TextLogView(origin="events", name="events"),
        row_shares=[3, 2, 1.2] if cams else [2, 1.2],
    )
    right = rrb.Grid(*joints, grid_columns=2, name="joints")
    return rrb.Blueprint(
        rrb.Horizontal(left, right, column_shares=[1.1, 1.0]),
        rrb.BlueprintPanel(state="collapsed"),
        rrb.SelectionPanel(state="collapsed"),
        rrb.TimePanel(state="collapsed"),
    )


class RunView:
    """Logs a run's records to a ``rerun.RecordingStream`` (see the module docstring for the layout).

    Records may come in the order the control loop makes them: a command before its tick record, a
    chunk before (or after) its inference record; each is held until its partner arrives, so the
    values are drawn at the tick's actual time and the chunk at its merge tick.
    """

    def __init__(
        self, rec: Any, joint_names: Sequence[str], cameras: Sequence[str], mono_to_wall: float, period_s: float | None
    ) -> None:
        import rerun as rr

        self.rr = rr
        self.rec = rec
        self.joint_names = list(joint_names)
        self.cameras = list(cameras)
        self.mono_to_wall = mono_to_wall
        self.period_s = period_s
        self.counts: dict[str, int] = {"ticks": 0, "images": 0, "chunks": 0, "inferences": 0, "events": 0}
        self._offsets: dict[int, int] = {}  # episode -> run-wide tick of its tick 0
        self._next_tick = 0  # run-wide tick after the last one seen
        self._commands: dict[tuple[int, int], tuple[np.ndarray, np.ndarray | None]] = {}
        self._chunks: dict[tuple[int, int], tuple[int, np.ndarray]] = {}
        self._inferences: dict[tuple[int, int], Mapping[str, Any]] = {}
        self._last_tick_time: float | None = None
        self._styled: set[str] = set()
        self._line_ends: list[int] = []  # per chunk line k: the run-wide tick after its last chunk

    # ------------------------------------------------------------------ time
    def _global_tick(self, episode: int, tick: int) -> int:
        if episode not in self._offsets:
            self._offsets[episode] = self._next_tick
        g = self._offsets[episode] + int(tick)
        self._next_tick = max(self._next_tick, g + 1)
        return g

    def _at(self, tick: int | None, t_mono: float | None) -> None:
        if tick is not None:
            self.rec.set_time(TICK_TIMELINE, sequence=int(tick))
        else:
            self.rec.disable_timeline(TICK_TIMELINE)
        if t_mono is not None and math.isfinite(t_mono):
            self.rec.set_time(TIME_TIMELINE, timestamp=t_mono + self.mono_to_wall)
        else:
            self.rec.disable_timeline(TIME_TIMELINE)

    def _style(self, path: str, archetype: Any) -> None:
        if path not in self._styled:
            self._styled.add(path)
            self.rec.log(path, archetype, static=True)

    # ------------------------------------------------------------------ records
    def image(self, camera: str, capture_time: float, image: Any, tick: int | None = None) -> None:
        """``image``: an ``rr.Image`` (raw RGB) or ``rr.EncodedImage``; drawn at the tick being run
        (live: frames come in order with the ticks) unless ``tick`` (run-wide) says otherwise."""
        self._at(self._next_tick if tick is None else tick, capture_time)
        self.rec.log(f"cameras/{camera}", image)
        self.counts["images"] += 1

    def command(self, episode: int, tick: int, command: np.ndarray, state: np.ndarray | None) -> None:
        self._commands[(episode, tick)] = (
            np.asarray(command, np.float64),
            None if state is None else np.asarray(state, np.float64),
        )

    def tick(self, row: Mapping[str, Any]) -> None:
        rr = self.rr
        episode, tick = int(row.get("episode") or 0), int(row.get("tick") or 0)
        g = self._global_tick(episode, tick)
        t = _num(row.get("t_actual"))
        self._last_tick_time = t
        self._at(g, t)
        err = _num(row.get("period_error_ms"))
        if err is not None:
            self.rec.log("timing/period_error_ms", rr.Scalars(err))
        if int(row.get("underrun") or 0):
            self.rec.log("events", rr.TextLog(f"underrun at tick {tick}", level="WARN"))
        pending = self._commands.pop((episode, tick), None)
        if pending is not None:
            command, state = pending
            for i, name in enumerate(self.joint_names):
                base = joint_path(name)
                if i < command.size:
                    self._style(
                        f"{base}/command", rr.SeriesLines(colors=[COMMAND_COLOR], widths=[1.5], names=["command"])
                    )
                    self.rec.log(f"{base}/command", rr.Scalars(float(command[i])))
                if state is not None and i < state.size:
                    self._style(f"{base}/state", rr.SeriesLines(colors=[STATE_COLOR], widths=[2.0], names=["state"]))
                    self.rec.log(f"{base}/state", rr.Scalars(float(state[i])))
        self.counts["ticks"] += 1

    def inference(self, row: Mapping[str, Any]) -> None:
        rr = self.rr
        episode = int(row.get("episode") or 0)
        merge = _num(row.get("merge_tick"))
        g = self._global_tick(episode, int(merge)) if merge is not None else None
        self._at(g, _num(row.get("t_end")))
        latency = _num(row.get("latency_ms"))
        if latency is not None:
            self.rec.log("timing/latency_ms", rr.Scalars(latency))
        for key, path in (("d_estimate", "timing/delay_ticks/estimate"), ("d_actual", "timing/delay_ticks/actual")):
            v = _num(row.get(key))
            if v is not None:
                self.rec.log(path, rr.Scalars(v))
        self.counts["inferences"] += 1
        chunk_id = row.get("chunk_id")
        if chunk_id is None or int(chunk_id) < 0 or int(row.get("rejected") or 0):
            return
        key = (episode, int(chunk_id))
        held = self._chunks.pop(key, None)
        if held is None:
            self._inferences[key] = dict(row)
        else:
            self._draw_chunk(episode, int(chunk_id), held[0], held[1], row)

    def chunk(self, episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray) -> None:
        key = (episode, chunk_id)
        row = self._inferences.pop(key, None)
        if row is None:
            self._chunks[key] = (start_tick, np.array(chunk, np.float32))
        else:
            self._draw_chunk(episode, chunk_id, start_tick, chunk, row)

    def _draw_chunk(
        self, episode: int, chunk_id: int, start_tick: int, chunk: np.ndarray, row: Mapping[str, Any] | None
    ) -> None:
        rr = self.rr
        chunk = np.asarray(chunk, np.float64)
        row = row or {}
        d = _num(row.get("d_actual"))
        d = int(d) if d is not None else 0
        merge = _num(row.get("merge_tick"))
        g0 = self._global_tick(episode, start_tick)
        t_end = _num(row.get("t_end"))
        self._at(g0 + d if merge is None else self._global_tick(episode, int(merge)), t_end)
        facts = {
            k: v
            for k, v in (
                ("episode", episode),
                ("chunk_id", chunk_id),
                ("start_tick", start_tick),
                ("merge_tick", merge),
                ("d_actual", d),
                ("d_estimate", _num(row.get("d_estimate"))),
                ("latency_ms", _num(row.get("latency_ms"))),
                ("guidance", row.get("guidance")),
            )
            if v is not None
        }
        self.rec.log("chunks", rr.Tensor(chunk, dim_names=("step", "joint")), rr.AnyValues(**facts))
        steps = np.arange(chunk.shape[0])
        times = t_end + self.mono_to_wall + (steps - d) * self.period_s if t_end is not None and self.period_s else None

        def indexes(rows: slice) -> list[Any]:
            out = [rr.TimeColumn(TICK_TIMELINE, sequence=g0 + steps[rows])]
            if times is not None:
                out.append(rr.TimeColumn(TIME_TIMELINE, timestamp=times[rows]))
            return out

        # the first line free since before this chunk's start (a clear between the two), else a new one
        end = g0 + chunk.shape[0]
        k = next((k for k, e in enumerate(self._line_ends) if e < g0), len(self._line_ends))
        if k == len(self._line_ends):
            self._line_ends.append(end)
        else:
            self._line_ends[k] = end
        self._at(end, None if times is None else float(times[-1]) + self.period_s - self.mono_to_wall)
        color = CHUNK_COLORS[k % len(CHUNK_COLORS)]
        for i, name in enumerate(self.joint_names[: chunk.shape[1]]):
            path = f"{joint_path(name)}/chunk/{k}"
            self._style(path, rr.SeriesLines(colors=[color], widths=[1.0], names=[f"chunks (line {k})"]))
            self.rec.send_columns(path, indexes=indexes(slice(None)), columns=rr.Scalars.columns(scalars=chunk[:, i]))
            self.rec.log(path, rr.Clear(recursive=False))  # the line breaks after this chunk's last step
            if d > 0:
                prefix = f"{joint_path(name)}/prefix"
                self._style(
                    prefix, rr.SeriesPoints(colors=[PREFIX_COLOR], marker_sizes=[2.0], names=["executed prefix"])
                )
                self.rec.send_columns(
                    prefix, indexes=indexes(slice(0, d)), columns=rr.Scalars.columns(scalars=chunk[:d, i])
                )
        self.counts["chunks"] += 1

    def event(self, text: str) -> None:
        try:
            record = json.loads(text)
        except ValueError:
            record = {"event": "event", "text": text}
        kind = str(record.get("event", "event"))
        level = "ERROR" if "fault" in kind else "WARN" if "rejected" in kind else "INFO"
        t = record.get("time")  # wall-clock time
        self.rec.set_time(TICK_TIMELINE, sequence=max(0, self._next_tick - 1))
        if isinstance(t, (int, float)):
            self.rec.set_time(TIME_TIMELINE, timestamp=float(t))
        fields = ", ".join(f"{k}={v}" for k, v in record.items() if k not in ("event", "time"))
        self.rec.log("events", self.rr.TextLog(f"{kind}: {fields}" if fields else kind, level=level))
        self.counts["events"] += 1

    def finish(self, summary: Mapping[str, Any] | None = None) -> None:
        """Draw chunks whose inference record never came (e.g. the run ended first), and the summary."""
        for (episode, chunk_id), (start_tick, chunk) in sorted(self._chunks.items()):
            self._draw_chunk(episode, chunk_id, start_tick, chunk, None)
        self._chunks.clear()
        if summary:
            keys = [k for k, v in summary.items() if isinstance(v, (int, float, str)) or v is None]
            text = "\n".join(f"| {k} | {summary[k]} |" for k in keys)
            self.rec.log(
                "summary",
                self.rr.TextDocument("| key | value |\n|---|---|\n" + text, media_type="text/markdown"),
                static=True,
            )


def _num(v: Any) -> float | None:
    if v is None or v == "":
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if math.isfinite(f) else None
