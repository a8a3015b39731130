"""Run report without W&B: ``python -m inference.report <run_dir>``.

Reads the run's telemetry files and writes PNG plots plus ``report.md`` into ``<run_dir>/report``.
The summary table is recomputed from ticks.csv / inferences.csv with the same function the run
used, so a mismatch with summary.json would show a telemetry bug.
"""

from __future__ import annotations

import argparse
import csv
import json
import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from services.telemetry import summarize

log = logging.getLogger(__name__)

PLOTS = ("period_error_hist.png", "latency_timeline.png", "delay.png", "joints.png", "chunk_overlay.png")


def read_csv(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    with path.open() as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict[str, Any]], key: str) -> np.ndarray:
    return np.array([float(r[key]) for r in rows if r.get(key) not in (None, "")], dtype=np.float64)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


@contextmanager
def _figure(out: Path, figsize: tuple[float, float] = (7, 4)) -> Iterator[Any]:
    """One-axes figure, laid out, saved to ``out`` and closed (even when a plot raises)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=figsize)
    try:
        yield ax
        fig.tight_layout()
        fig.savefig(out, dpi=90)
    finally:
        plt.close(fig)


def _empty(ax, what: str) -> None:
    ax.text(0.5, 0.5, f"no {what} in this run", ha="center", va="center", transform=ax.transAxes)


def plot_period_error(ticks, out: Path) -> None:
    with _figure(out) as ax:
        err = _floats(ticks, "period_error_ms")
        if err.size:
            ax.hist(err, bins=60, color="tab:blue")
            for p, style in ((50, "--"), (99, ":")):
                ax.axvline(
                    np.percentile(err, p), color="k", linestyle=style, label=f"p{p} {np.percentile(err, p):.2f} ms"
                )
            ax.legend()
        else:
            _empty(ax, "ticks")
        ax.set(xlabel="period error (ms, actual - scheduled)", ylabel="ticks", title="Control period error")


def plot_latency(infs, out: Path) -> None:
    with _figure(out) as ax:
        lat, t = _floats(infs, "latency_ms"), _floats(infs, "t_start")
        if lat.size and t.size == lat.size:
            ax.plot(t - t[0], lat, marker=".", color="tab:orange")
        else:
            _empty(ax, "inferences")
        ax.set(xlabel="time since first inference (s)", ylabel="latency (ms)", title="Inference latency")


def plot_delay(infs, out: Path) -> None:
    with _figure(out) as ax:
        est, act = _floats(infs, "d_estimate"), _floats(infs, "d_actual")
        if est.size or act.size:
            if est.size:
                ax.step(np.arange(est.size), est, where="post", label="d estimate")
            if act.size:
                ax.plot(np.arange(act.size), act, "o", label="d actual")
            ax.legend()
        else:
            _empty(ax, "delay records")
        ax.set(xlabel="inference #", ylabel="delay (ticks)", title="Inference delay d")


def plot_joints(traj, chunks, out: Path, max_joints: int = 6) -> None:
    with _figure(out, (9, 5)) as ax:
        if traj is not None and len(traj["tick"]):
            ep0 = traj["episode"] == traj["episode"][0]
            ticks, cmd = traj["tick"][ep0], traj["command"][ep0]
            for j in range(min(max_joints, cmd.shape[1])):
                ax.plot(ticks, cmd[:, j], label=f"joint {j}")
            if chunks is not None:
                sel = chunks["episode"] == traj["episode"][0]
                for start in chunks["start_tick"][sel]:
                    ax.axvline(start, color="grey", alpha=0.3, linewidth=0.8)
            ax.legend(fontsize=7, ncol=3)
        else:
            _empty(ax, "commands")
        ax.set(
            xlabel="tick", ylabel="command (robot units)", title="Commands sent (first episode); grey = chunk starts"
        )


def plot_chunk_overlay(chunks, out: Path, joint: int | None = None, max_switches: int = 6) -> None:
    """Old chunk vs new chunk around each switch, on the joint that moves most."""
    with _figure(out, (9, 5)) as ax:
        if chunks is not None and len(chunks["chunk_id"]) > 1:
            c = chunks["chunk"]
            if joint is None:
                joint = int(np.argmax(c.reshape(-1, c.shape[-1]).std(0)))
            ep = chunks["episode"]
            shown = 0
            for k in range(1, len(c)):
                if ep[k] != ep[k - 1] or shown >= max_switches:
                    continue
                h = c.shape[1]
                t_old = chunks["start_tick"][k - 1] + np.arange(h)
                t_new = chunks["start_tick"][k] + np.arange(h)
                (line,) = ax.plot(t_old, c[k - 1][:, joint], "--", alpha=0.6)
                ax.plot(t_new, c[k][:, joint], "-", color=line.get_color(), alpha=0.9)
                shown += 1
            ax.set_title(f"Chunk overlay at each switch, joint {joint} (dashed old, solid new)")
        else:
            _empty(ax, "chunk switches")
        ax.set(xlabel="tick", ylabel="action (robot units)")


def _load_npz(path: Path) -> dict[str, np.ndarray] | None:
    if not path.is_file():
        return None
    with np.load(path) as data:
        return {k: data[k] for k in data.files}


def make_report(run_dir: str | Path) -> Path:
    run_dir = Path(run_dir)
    if not (run_dir / "ticks.csv").is_file():
        raise FileNotFoundError(f"{run_dir} is not a run dir (no ticks.csv)")
    out = run_dir / "report"
    out.mkdir(exist_ok=True)
    ticks, infs = read_csv(run_dir / "ticks.csv"), read_csv(run_dir / "inferences.csv")
    traj, chunks = _load_npz(run_dir / "trajectory.npz"), _load_npz(run_dir / "chunks.npz")
    stored = json.loads((run_dir / "summary.json").read_text()) if (run_dir / "summary.json").is_file() else {}
    plot_period_error(ticks, out / PLOTS[0])
    plot_latency(infs, out / PLOTS[1])
    plot_delay(infs, out / PLOTS[2])
    plot_joints(traj, chunks, out / PLOTS[3])
    plot_chunk_overlay(chunks, out / PLOTS[4])
    period = stored.get("period_s")
    recomputed = summarize(ticks, infs, period)
    rows = []
    for key in (
        "ticks",
        "inferences",
        "period_error_ms_p50",
        "period_error_ms_p99",
        "period_error_ms_max",
        "inference_latency_ms_p50",
        "inference_latency_ms_p95",
        "inference_latency_ms_p99",
        "inference_latency_ms_max",
        "d_estimate_max",
        "d_actual_max",
        "discontinuity_max",
        "underruns",
        "held_ticks",
        "rejected_actions",
    ):
        if key in recomputed:
            value = recomputed[key]
            rows.append(f"| {key} | {value:.3f} |" if isinstance(value, float) else f"| {key} | {value} |")
    mismatches = [
        k
        for k, v in recomputed.items()
        if k in stored and isinstance(v, (int, float)) and not np.isclose(v, stored[k], rtol=1e-6, atol=1e-9)
    ]
    lines = [
        f"# Run report: {run_dir}",
        "",
        f"success rate: {stored.get('success_rate', 'n/a')}  (episodes: {stored.get('episodes', 'n/a')})",
        f"algorithm: {stored.get('algorithm', 'n/a')}",
        "",
        "| metric (recomputed from ticks.csv / inferences.csv) | value |",
        "|---|---|",
        *rows,
        "",
        "summary.json agrees with the recomputed values."
        if not mismatches
        else f"MISMATCH with summary.json for: {', '.join(mismatches)}",
        "",
        *[f"![{p}]({p})" for p in PLOTS],
        "",
    ]
    (out / "report.md").write_text("\n".join(lines))
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.report", description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", help="a run directory (outputs/<date>/<time>)")
    args = parser.parse_args(argv)
    try:
        out = make_report(args.run_dir)
    except FileNotFoundError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"report: {out / 'report.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
