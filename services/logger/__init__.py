"""Telemetry sinks (config group ``logger``): ``logger=none`` is :class:`NullSink` here,
``logger=wandb`` is :class:`services.logger.wandb.WandbSink`.

A sink receives batches of records in the telemetry writer process (``services.telemetry``), never
in the control process; it is pickled there before ``start``, so it holds only plain settings until then.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol


class Sink(Protocol):
    """Receives batches of telemetry off the control path (e.g. W&B)."""

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None: ...

    def write(self, kind: str, records: Sequence[Mapping[str, Any]]) -> None: ...

    def finish(self, summary: Mapping[str, Any]) -> None: ...


class NullSink:
    """``logger=none``: files in the run dir only."""

    def start(self, run_dir: Path, config: Mapping[str, Any]) -> None:
        pass

    def write(self, kind: str, records: Sequence[Mapping[str, Any]]) -> None:
        pass

    def finish(self, summary: Mapping[str, Any]) -> None:
        pass
