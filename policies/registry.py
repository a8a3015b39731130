"""Name -> policy class registry: ``@POLICY_REGISTRY.register("name")`` on the class, ``type: name`` in its YAML.

It works beside Hydra's ``_target_``: a policy config may name its class directly
(``_target_: policies.flow.FlowPolicy``) or by registered name
(``_target_: policies.registry.build_policy`` with ``type: flow``).
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, TypeVar

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
    # modules whose import registers the built-in policies (by name, so this package imports none of
    # them: the scripted expert lives with its sim task in tasks/, which may use robots/)
    autoload=("policies.hold", "tasks.transfer_cube.expert", "tasks.gym_control.policy", "policies.flow",
              "policies.openpi", "policies.lerobot"),
)


def build_policy(type: str, **kwargs: Any) -> Any:  # noqa: A002 - the config key is `type`
    """Build a registered policy by name (``policy.type=<name>``)."""
    return POLICY_REGISTRY.get(type)(**kwargs)
