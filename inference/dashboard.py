"""The W&B latency dashboard, as code: ``python -m inference.dashboard --entity E --project P``.

Builds a saved W&B workspace (``wandb-workspaces``) with one section per concern — control
timing, inference latency, delay, smoothness — over exactly the metric names ``WandbSink`` logs,
and saves it to your W&B project (needs ``wandb login`` and network). ``--json FILE`` writes the
workspace definition instead, with no network (the documented JSON form of the dashboard).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from services.logger.wandb import INFERENCE_METRICS, TICK_METRICS

# (section, panels): each panel is (kind, title, metrics, x-axis)
LAYOUT: list[tuple[str, list[tuple[str, str, list[str], str]]]] = [
    (
        "Control timing",
        [
            ("line", "Period error (ms) per tick", ["control/period_error_ms"], "control/tick"),
            ("line", "Read / send duration (ms)", ["control/read_ms", "control/send_ms"], "control/tick"),
            ("line", "Underruns", ["control/underrun"], "control/tick"),
            (
                "bar",
                "Period error p50/p99/max (ms)",
                ["period_error_ms_p50", "period_error_ms_p99", "period_error_ms_max"],
                "",
            ),
        ],
    ),
    (
        "Inference",
        [
            ("line", "Inference latency (ms)", ["inference/latency_ms"], "inference/chunk_id"),
            ("line", "Server time (ms), remote policies", ["inference/server_ms"], "inference/chunk_id"),
            (
                "bar",
                "Inference latency p50/p95/p99/max (ms)",
                [
                    "inference_latency_ms_p50",
                    "inference_latency_ms_p95",
                    "inference_latency_ms_p99",
                    "inference_latency_ms_max",
                ],
                "",
            ),
        ],
    ),
    (
        "Delay",
        [
            (
                "line",
                "d estimate vs d actual (ticks)",
                ["inference/d_estimate", "inference/d_actual"],
                "inference/chunk_id",
            ),
            ("line", "Executed prefix s (ticks)", ["inference/s"], "inference/chunk_id"),
        ],
    ),
    (
        "Smoothness",
        [
            (
                "line",
                "Chunk-boundary discontinuity and jump from plan (robot units)",
                ["inference/discontinuity", "inference/plan_jump"],
                "inference/chunk_id",
            ),
            ("bar", "Discontinuity and success", ["discontinuity_mean", "discontinuity_max", "success_rate"], ""),
        ],
    ),
]


def logged_metrics() -> set[str]:
    return set(TICK_METRICS.values()) | set(INFERENCE_METRICS.values()) | {"control/tick", "inference/chunk_id"}


def build_workspace(entity: str, project: str, name: str = "RTC latency dashboard") -> Any:
    import wandb_workspaces.reports.v2 as wr
    import wandb_workspaces.workspaces as ws

    sections = []
    for section, panels in LAYOUT:
        built = []
        for kind, title, metrics, x in panels:
            if kind == "line":
                built.append(wr.LinePlot(title=title, x=x, y=list(metrics)))
            else:
                built.append(wr.BarPlot(title=title, metrics=[wr.SummaryMetric(m) for m in metrics]))
        sections.append(ws.Section(name=section, panels=built, is_open=True))
    return ws.Workspace(entity=entity, project=project, name=name, sections=sections)


def layout_json() -> list[dict[str, Any]]:
    return [
        {"section": s, "panels": [{"kind": k, "title": t, "metrics": m, "x": x} for k, t, m, x in panels]}
        for s, panels in LAYOUT
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m inference.dashboard", description=__doc__.splitlines()[0])
    parser.add_argument("--entity", default=None)
    parser.add_argument("--project", default="inference-engine")
    parser.add_argument("--name", default="RTC latency dashboard")
    parser.add_argument("--json", type=Path, default=None, help="write the definition here instead of saving to W&B")
    args = parser.parse_args(argv)
    if args.json is not None:
        args.json.write_text(json.dumps(layout_json(), indent=1))
        print(f"dashboard definition: {args.json}")
        return 0
    if not args.entity:
        print("error: --entity is required to save a workspace to W&B (or use --json FILE)", file=sys.stderr)
        return 2
    workspace = build_workspace(args.entity, args.project, args.name)
    workspace.save()
    print(f"dashboard saved: {workspace.url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
