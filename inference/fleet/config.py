"""The service's knobs (``conf/fleet/default.yaml``), declared once with their ranges.

What Ray Serve gets (replicas, per-replica resources, the bounded queues) and what the batcher gets
(``max_batch_size``, ``batch_wait_timeout_s``, ``max_queue_wait_s``). A wrong value is a
``ConfigError`` naming ``fleet.<key>`` before anything starts.
"""

from __future__ import annotations

import logging
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Annotated, Any

from services.errors import ConfigError
from services.knobs import NonNegativeFloat, PositiveFloat, PositiveInt, Range

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FleetConfig:
    """One policy's Serve application.

    ``app_name``: the Serve application robots look up (``algorithm.app_name``).
    ``num_replicas``: replicas of the deployment, each with one model copy and its own batcher.
    ``num_cpus``/``num_gpus`` (a fraction shares a GPU)/``resources``: what each replica asks of its node.
    ``torch_threads``: torch CPU threads per replica (null: torch's default).
    ``max_batch_size``/``batch_wait_timeout_s``: Serve's dynamic batching (``@serve.batch``): a batch
    starts when full or when its first request has waited this long. ``max_batch_size: 1`` serves
    unbatched.
    ``max_ongoing_requests``: requests a replica holds at once (the batch queue plus the batch
    computing; Serve's own bound, >= max_batch_size). ``max_queued_requests``: requests a caller
    may keep waiting for a replica (-1 unbounded; beyond it the robot's request fails at once as
    overloaded). ``max_queue_wait_s``: a request that waited longer than this in the replica
    before its batch started is answered ``overloaded`` instead of computed (load shedding: a
    saturated replica drains instead of serving chunks no robot can use any more).
    ``device``: the policy's device on the replica (overrides ``policy.device``; ``auto``: keep it).
    ``address``: the cluster (``auto``: RAY_ADDRESS or a local head's address file; ``local``: start a
    Ray instance inside the ``serve`` process, ``local_num_cpus`` CPUs, gone when it exits).
    ``detach``: deploy and return (the app keeps running on the cluster; ``python -m inference.fleet
    stop`` removes it); else serve in the foreground until Ctrl-C/SIGTERM, then remove the app.
    """

    app_name: str = "fleet"
    deployment_name: str = "policy"
    address: str = "auto"
    namespace: str = "serve"
    auth_mode: str | None = "disabled"
    auth_token_path: str | None = None
    connect_timeout_s: PositiveFloat = 15.0
    num_replicas: PositiveInt = 1
    num_cpus: NonNegativeFloat = 1.0
    num_gpus: Annotated[float, Range(ge=0)] = 0.0
    resources: Mapping[str, float] = field(default_factory=dict)
    torch_threads: PositiveInt | None = None
    device: str = "auto"
    max_batch_size: PositiveInt = 8
    batch_wait_timeout_s: NonNegativeFloat = 0.005
    max_ongoing_requests: PositiveInt = 16
    max_queued_requests: int = 8
    max_queue_wait_s: PositiveFloat = 2.0
    health_check_period_s: PositiveFloat = 2.0
    health_check_timeout_s: PositiveFloat = 10.0
    deploy_timeout_s: PositiveFloat = 300.0
    detach: bool = False
    local_num_cpus: PositiveInt | None = None

    @classmethod
    def from_node(cls, node: Mapping[str, Any] | None) -> FleetConfig:
        """Build from the config's ``fleet`` node; unknown keys and bad values are ``ConfigError``s."""
        data = dict(node or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"fleet.{unknown[0]}: unknown key (known: {', '.join(sorted(known))})")
        if "resources" in data:
            data["resources"] = dict(data["resources"] or {})
        cfg = cls(**data)
        cfg.check()
        return cfg

    def check(self) -> None:
        def bad(key: str, why: str) -> ConfigError:
            return ConfigError(f"fleet.{key}: {why}")

        from inference.validation import _check_value  # the same type and range checks as every knob

        hints = typing.get_type_hints(type(self), include_extras=True)
        for f in fields(self):
            _check_value(f"fleet.{f.name}", getattr(self, f.name), hints[f.name])
        if self.max_ongoing_requests < self.max_batch_size:
            raise bad(
                "max_ongoing_requests",
                f"{self.max_ongoing_requests} < max_batch_size={self.max_batch_size}: "
                "a replica could never fill a batch",
            )
        if self.max_ongoing_requests < 2 * self.max_batch_size:
            log.warning(
                "fleet.max_ongoing_requests=%d < 2 x max_batch_size=%d: the next batch cannot form while "
                "one computes, so requests wait in the robots' own callers, where the replica cannot shed "
                "them (max_queue_wait_s): a saturated service then shows as plain inference timeouts",
                self.max_ongoing_requests,
                self.max_batch_size,
            )
        if self.max_queued_requests < -1 or self.max_queued_requests == 0:  # Serve's own rule: 0 is refused
            raise bad("max_queued_requests", f"{self.max_queued_requests}; expected -1 (unbounded) or >= 1")
        if self.auth_mode not in (None, "disabled", "token"):
            raise bad("auth_mode", f"{self.auth_mode!r}; expected disabled or token")
        if self.device not in ("auto", "cpu") and not str(self.device).startswith("cuda"):
            raise bad("device", f"{self.device!r}; expected auto | cpu | cuda[:N]")
        for key in ("app_name", "deployment_name", "namespace"):  # Serve and Ray refuse empty names
            if not str(getattr(self, key)).strip():
                raise bad(key, "empty (robots and Serve find the service by this name)")
        from services.ray_connection import address_problem

        why = address_problem(self.address, named=("auto", "local"))
        if why:
            raise bad("address", why)
        if (
            self.auth_mode == "token"
            and self.auth_token_path
            and not Path(str(self.auth_token_path)).expanduser().is_file()
        ):
            raise bad("auth_token_path", f"token file {self.auth_token_path} does not exist (auth_mode token)")
        for name, amount in self.resources.items():
            if isinstance(amount, bool) or not isinstance(amount, (int, float)) or amount < 0:
                raise bad(f"resources.{name}", f"{amount!r}; expected a number >= 0 (units of the custom resource)")

    def deployment_options(self) -> dict[str, Any]:
        """``serve.deployment(...)`` keyword arguments."""
        actor: dict[str, Any] = {"num_cpus": float(self.num_cpus), "num_gpus": float(self.num_gpus)}
        if self.resources:
            actor["resources"] = {k: float(v) for k, v in self.resources.items()}
        return dict(
            name=self.deployment_name,
            num_replicas=int(self.num_replicas),
            ray_actor_options=actor,
            max_ongoing_requests=int(self.max_ongoing_requests),
            max_queued_requests=int(self.max_queued_requests),
            health_check_period_s=float(self.health_check_period_s),
            health_check_timeout_s=float(self.health_check_timeout_s),
        )
