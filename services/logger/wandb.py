"""Weights & Biases sink: offline by default (``WANDB_MODE`` honoured), files in the run dir.

Metrics are named ``control/*`` and ``inference/*`` so W&B's default workspace groups them into
a control-timing and an inference-latency section with no hand work. It runs in the telemetry
writer process, never in the control process.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Literal

from services.knobs import PositiveInt

log = logging.getLogger(__name__)

TICK_METRICS = {
    "period_error_ms": "control/period_error_ms",
    "read_ms": "control/read_ms",
    "compute_ms": "control/compute_ms",
    "send_ms": "control/send_ms",
    "underrun": "control/underrun",
    "chunk_index": "control/chunk_index",
}
INFERENCE_METRICS = {
    "latency_ms": "inference/latency_ms",
    "d_estimate": "inference/d_estimate",
    "d_actual": "inference/d_actual",
    "s": "inference/s",
    "discontinuity": "inference/discontinuity",
    "plan_jump": "inference/plan_jump",
    "server_ms": "inference/server_ms",
    "policy_ms": "inference/policy_ms",
    "transport_ms": "inference/transport_ms",
    "queue_ms": "inference/queue_ms",
    "batch_size": "inference/batch_size",
}


class WandbSink:
    def __init__(
        self,
        project: str = "inference-engine",
        entity: str | None = None,
        mode: Literal["online", "offline", "disabled"] = "offline",
        group: str | None = None,
        name: str | None = None,
        tags: list[str] | None = None,
        log_every_ticks: PositiveInt = 1,
    ) -> None:
        self.project = project
        self.entity = entity
        self.mode = os.environ.get("WANDB_MODE", mode)
        self.group = group
        self.name = name
        self.tags = list(tags or [])
        self.log_every_ticks = max(1, int(log_every_ticks))
        self._run: Any = None
        self._tick_count = 0

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        import wandb

        run_dir = Path(run_dir)
        if self.group is None and run_dir.parent.parent.parent.name == "multirun":
            # outputs/multirun/<date>/<time>/<job>: one W&B group per multirun
            self.group = f"{run_dir.parent.parent.name}_{run_dir.parent.name}"
            self.name = self.name or f"job{run_dir.name}"
        wandb_dir = run_dir / "wandb_files"
        wandb_dir.mkdir(parents=True, exist_ok=True)
        for var, sub in (("WANDB_DIR", ""), ("WANDB_CACHE_DIR", "cache"), ("WANDB_DATA_DIR", "data")):
            os.environ[var] = str(wandb_dir / sub) if sub else str(wandb_dir)
        if self.mode in ("offline", "disabled", "dryrun"):
            # wandb.init(mode=...) sets the *run's* mode only; its analytics (an OpenTelemetry
            # exporter built on the first run.log) read the process-wide settings, online unless
            # WANDB_MODE is exported, and resolved api.forge.coreweave.com from an export thread.
            # Offline means no network attempt at all: make the process-wide mode offline too.
            wandb.setup(settings=wandb.Settings(mode=self.mode))
        self._run = wandb.init(
            project=self.project,
            entity=self.entity,
            mode=self.mode,
            group=self.group,
            name=self.name,
            tags=self.tags,
            config=dict(config),
            dir=str(wandb_dir),
            settings=wandb.Settings(console="off", x_disable_stats=True),
        )
        self._run.define_metric("control/tick")
        self._run.define_metric("control/*", step_metric="control/tick")
        self._run.define_metric("inference/chunk_id")
        self._run.define_metric("inference/*", step_metric="inference/chunk_id")
        log.info("W&B run %s (%s) in %s", self._run.id, self.mode, wandb_dir)

    def write(self, kind: str, records: Sequence[Mapping[str, Any]]) -> None:
        if self._run is None:
            return
        if kind == "tick":
            for r in records:
                self._tick_count += 1  # ticks restart each episode; the x axis must not
                if self._tick_count % self.log_every_ticks:
                    continue
                row = {v: r.get(k) for k, v in TICK_METRICS.items() if r.get(k) not in (None, "")}
                row["control/tick"] = self._tick_count
                self._run.log(row)
        elif kind == "inference":
            for r in records:
                row = {v: r.get(k) for k, v in INFERENCE_METRICS.items() if r.get(k) not in (None, "")}
                row["inference/chunk_id"] = r.get("chunk_id")
                self._run.log(row)

    def finish(self, summary: Mapping[str, Any]) -> None:
        if self._run is None:
            return
        for key, value in summary.items():
            if isinstance(value, (int, float, str, bool)):
                self._run.summary[key] = value
        self._run.finish()
        self._run = None
