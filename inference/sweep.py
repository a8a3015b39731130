"""Sweep summary for Hydra multirun: one table + plot ranking every combination.

Runs automatically at the end of ``python -m inference -m ...`` (a Hydra callback registered in
``conf/config.yaml``) and by hand: ``python -m inference.sweep <multirun_dir>``. Ranking: success
rate (higher first), then mean chunk-boundary discontinuity (lower first). Writes
``sweep_summary.csv``, ``sweep_summary.md`` and ``sweep_summary.png`` into the multirun dir, and
the table to W&B when the jobs logged there.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import sys
from pathlib import Path
from typing import Any

import yaml
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

log = logging.getLogger(__name__)

METRICS = (
    "success_rate",
    "discontinuity_mean",
    "discontinuity_max",
    "max_jerk",
    "inference_latency_ms_p50",
    "period_error_ms_p99",
    "underruns",
    "ticks",
)


def collect(sweep_dir: str | Path) -> list[dict[str, Any]]:
    rows = []
    for job in sorted(Path(sweep_dir).iterdir(), key=lambda p: (len(p.name), p.name)):
        summary_path = job / "summary.json"
        if not job.is_dir() or not summary_path.is_file():
            continue
        overrides_path = job / ".hydra" / "overrides.yaml"
        overrides = yaml.safe_load(overrides_path.read_text()) if overrides_path.is_file() else []
        summary = json.loads(summary_path.read_text())
        base: dict[str, Any] = {"job": job.name, "overrides": " ".join(overrides or [])}
        # a lockstep job evaluates a table of (method, delay) cells: rank each cell on its own
        cells = summary.get("table") or [None]
        for cell in cells:
            row = dict(base)
            if cell is not None and len(cells) > 1:
                row["job"] = f"{job.name}:{cell['method']}@d={cell['delay_ticks']}"
            for key in METRICS:
                value = (cell or {}).get(key, summary.get(key))
                if isinstance(value, (int, float)):
                    row[key] = value
            rows.append(row)
    return rows


def rank(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    def key(r: dict[str, Any]) -> tuple[float, float]:
        disc = r.get("discontinuity_mean")
        return (-float(r.get("success_rate", 0.0)), float(disc) if disc is not None else math.inf)

    ranked = sorted(rows, key=key)
    for i, r in enumerate(ranked, 1):
        r["rank"] = i
    return ranked


def write_summary(sweep_dir: str | Path) -> list[dict[str, Any]]:
    sweep_dir = Path(sweep_dir)
    rows = rank(collect(sweep_dir))
    if not rows:
        log.warning("sweep summary: no job summaries under %s", sweep_dir)
        return rows
    columns = ["rank", "job", "overrides", *[m for m in METRICS if any(m in r for r in rows)]]
    with (sweep_dir / "sweep_summary.csv").open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)

    def fmt(v: Any) -> str:
        return f"{v:.4g}" if isinstance(v, float) else str(v if v is not None else "")

    lines = [
        f"# Sweep summary: {sweep_dir}",
        "",
        "Ranked by success rate, then mean boundary discontinuity.",
        "",
        "| " + " | ".join(columns) + " |",
        "|" + "---|" * len(columns),
    ]
    lines += ["| " + " | ".join(fmt(r.get(c)) for c in columns) + " |" for r in rows]
    (sweep_dir / "sweep_summary.md").write_text("\n".join(lines) + "\n")
    _plot(rows, sweep_dir / "sweep_summary.png")
    return rows


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r["overrides"] or r["job"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(12, max(3, 0.35 * len(rows) + 1)), sharey=True)
    y = range(len(rows))
    axes[0].barh(y, [r.get("success_rate", 0.0) for r in rows], color="tab:green")
    axes[0].set(xlabel="success rate", xlim=(0, 1))
    axes[1].barh(y, [r.get("discontinuity_mean", 0.0) or 0.0 for r in rows], color="tab:red")
    axes[1].set(xlabel="mean boundary discontinuity (robot units)")
    axes[0].set_yticks(list(y), labels, fontsize=7)
    axes[0].invert_yaxis()
    fig.suptitle("Sweep ranked by success, then discontinuity")
    fig.tight_layout()
    fig.savefig(out, dpi=90)
    plt.close(fig)


def log_to_wandb(rows: list[dict[str, Any]], sweep_dir: Path, logger_cfg: Any) -> None:
    import wandb

    columns = sorted({k for r in rows for k in r})
    table = wandb.Table(columns=columns, data=[[r.get(c) for c in columns] for r in rows])
    run = wandb.init(
        project=logger_cfg.get("project", "inference-engine"),
        entity=logger_cfg.get("entity"),
        mode=logger_cfg.get("mode", "offline"),
        group=f"{sweep_dir.parent.name}_{sweep_dir.name}",
        name="sweep-summary",
        dir=str(sweep_dir),
        job_type="sweep-summary",
    )
    run.log({"sweep/summary": table, "sweep/plot": wandb.Image(str(sweep_dir / "sweep_summary.png"))})
    run.finish()


class SweepSummaryCallback(Callback):
    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        sweep_dir = Path(config.hydra.sweep.dir)
        rows = write_summary(sweep_dir)
        if rows:
            print(f"sweep summary: {sweep_dir / 'sweep_summary.md'}")
            best = rows[0]
            print(
                f"best: {best['overrides']} (success {best.get('success_rate')}, "
                f"discontinuity {best.get('discontinuity_mean')})"
            )
        logger = config.get("logger") or {}
        if rows and str(logger.get("_target_", "")).endswith("WandbSink"):
            try:
                log_to_wandb(rows, sweep_dir, logger)
            except Exception:
                log.exception("sweep summary: W&B logging failed")


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m inference.sweep <multirun_dir>", file=sys.stderr)
        return 2
    rows = write_summary(args[0])
    print(f"{len(rows)} jobs; summary in {Path(args[0]) / 'sweep_summary.md'}")
    return 0 if rows else 1


if __name__ == "__main__":
    sys.exit(main())
