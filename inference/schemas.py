"""Structured-config schemas registered with Hydra's ConfigStore before any composition.

``register()`` is called by every path that composes the app's config (``python -m inference``,
``compose_run``), so a group option takes its defaults from the Python class it configures instead of
restating them in YAML. Each algorithm's schema is made of its knob groups (``algorithms/settings.py``:
``RTCConfig``, ``LoopConfig``, ...): ``conf/algorithm/<name>.yaml`` lists ``/schema/algorithm@_here_: <name>``
first in its defaults and overrides only what differs, so
``algorithm.execute_horizon=10`` overrides the class's default and ``--cfg job`` shows every value. Types and ranges
stay with the classes (start-time validation reads them); the schema fields are untyped here so a
wrong value reaches that validation and its one-line ``config error: <key>: <why>``.
"""

from __future__ import annotations

import dataclasses
import enum
from typing import Any

# name in conf/algorithm/ -> the algorithm class (its knob_groups are the schema)
ALGORITHMS = {
    "rtc": "algorithms.rtc.RTCAlgorithm",
    "rtc_split": "algorithms.rtc_split.SplitRTCAlgorithm",
    "sequential": "algorithms.sequential.SequentialAlgorithm",
    "lockstep_eval": "algorithms.lockstep_eval.LockstepEvaluator",
    "rtc_fleet": "algorithms.rtc_fleet.FleetRTCAlgorithm",
}

_registered = False


def _plain(value: Any) -> Any:
    return value.value if isinstance(value, enum.Enum) else value


def algorithm_schema(name: str, target: str, cls: type) -> type:
    """A dataclass with the target (built with the run later: ``_partial_``) and every knob of
    ``cls.knob_groups`` with its default (enums as their names)."""
    from algorithms.settings import default_of, group_fields

    fields: list[Any] = [
        ("_target_", str, dataclasses.field(default=target)),
        ("_partial_", bool, dataclasses.field(default=True)),
    ]
    for key, (_, f) in group_fields(cls.knob_groups).items():
        default = _plain(default_of(f))
        if isinstance(default, (list, dict)):
            fields.append((key, Any, dataclasses.field(default_factory=lambda d=default: type(d)(d))))
        else:
            fields.append((key, Any, dataclasses.field(default=default)))
    return dataclasses.make_dataclass(f"{name}_schema", fields)


def register() -> None:
    """Register the schemas (idempotent)."""
    global _registered
    if _registered:
        return
    from hydra.core.config_store import ConfigStore
    from hydra.utils import get_class

    store = ConfigStore.instance()
    for name, target in ALGORITHMS.items():
        store.store(group="schema/algorithm", name=name, node=algorithm_schema(name, target, get_class(target)))
    _registered = True
