"""Name -> policy class registry: ``@POLICY_REGISTRY.register("name")`` on the class, ``type: name`` in its YAML.

It works beside Hydra's ``_target_``: a policy config may name its class directly
(``_target_: policies.flow.FlowPolicy``) or by registered name
(``_target_: policies.registry.build_policy`` with ``type: flow``).

The registry holds the policies of this package only: it sits below ``algorithms/``, ``inference/`` and
``tasks/`` and loads nothing from them. A policy that lives higher up (a task's scripted expert, which
needs its robot's model) is named by class in its config (``conf/policy/scripted.yaml``).
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any, TypeVar

T = TypeVar("T")


class Registry:
    def __init__(self, kind: str, autoload: tuple[str, ...] = ()) -> None:
        self.kind = kind
        self._entries: dict[str, Any] = {}
        self._autoload = autoload

    def register(self, name: str) -> Callable[[T], T]:
        def decorator(obj: T) -> T:
            existing = self._entries.get(name)
            if existing is not None and existing is not obj:
                raise ValueError(f"{self.kind} {name!r} is already registered to {existing!r}")
            self._entries[name] = obj
            return obj

        return decorator

    def _load_builtin(self) -> None:
        for module in self._autoload:
            try:
                importlib.import_module(module)
            except ImportError:
                # Optional policies (e.g. openpi) register only where their dependencies exist.
                continue

    def get(self, name: str) -> Any:
        if name not in self._entries:
            self._load_builtin()
        if name not in self._entries:
            known = ", ".join(sorted(self._entries)) or "none"
            raise KeyError(f"unknown {self.kind} type {name!r}; registered: {known}")
        return self._entries[name]

    def names(self) -> list[str]:
        self._load_builtin()
        return sorted(self._entries)


POLICY_REGISTRY = Registry(
    "policy",
    # the modules of this package whose import registers its policies (by name, so importing the
    # registry loads none of them and no optional dependency)
    autoload=("policies.hold", "policies.flow", "policies.openpi", "policies.lerobot"),
)


def build_policy(type: str, **kwargs: Any) -> Any:  # noqa: A002 - the config key is `type`
    """Build a registered policy by name (``policy.type=<name>``)."""
    return POLICY_REGISTRY.get(type)(**kwargs)
