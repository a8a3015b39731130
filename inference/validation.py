"""Start-time validation of the composed config: every mistake is one line naming the key.

Each ``_target_`` node is checked against the signature of what it targets (the single source
of truth for a part's parameters): unknown keys, missing required keys and wrong simple types
fail here, before any process starts. Cross-part checks (policy vs robot dimensions, cameras a
policy needs) follow.
"""

from __future__ import annotations

import dataclasses
import enum
import inspect
import types
import typing
from dataclasses import dataclass, fields
from typing import Annotated, Any, Callable, Mapping

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from services.errors import ConfigError
from services.knobs import PositiveFloat, PositiveInt, Range

# Keys a node may carry besides the target's parameters.
_HYDRA_KEYS = {"_target_", "_partial_", "_recursive_", "_convert_", "_args_"}


class LogLevel(enum.StrEnum):
    DEBUG = "DEBUG"
    INFO = "INFO"
    WARNING = "WARNING"
    ERROR = "ERROR"
    CRITICAL = "CRITICAL"


@dataclass
class RunConfig:
    """Top-level keys of ``conf/config.yaml``; groups are validated against their targets."""

    robot: Any = None
    cameras: Any = None
    policy: Any = None
    algorithm: Any = None
    safety: Any = None
    logger: Any = None
    launcher: Any = None
    record: Any = None
    viewer: Any = None    # conf/viewer/: services.viewer (its knobs checked when the run object builds it)
    realtime: Any = None  # conf/realtime/: services.realtime.RealtimeConfig (checked by its preflight)
    seed: Annotated[int, Range(ge=0)] = 0
    episodes: int = 1     # >= 1, checked with its own message below
    max_steps: int = 200
    log_level: LogLevel = LogLevel.INFO
    report: bool = True
    objective: Any = None  # summary key(s) the app returns, for sweepers that optimise (Optuna)


@dataclass
class CamerasConfig:
    width: PositiveInt = 128
    height: PositiveInt = 96
    num_img_obs: PositiveInt = 1
    img_obs_every: PositiveInt = 1
    max_frame_age_s: PositiveFloat = 0.5
    devices: Any = None


# Keys the run object itself reads from a group node (they are not target parameters).
RUN_OBJECT_KEYS = {
    "policy": {"normalizer", "state_history", "image_size"},
    "robot": set(),
}
# Keys read by the run object for cross-checks; they may or may not be target parameters.
ROBOT_COMMON = ("name", "hz", "action_dim", "state_dim")
POLICY_COMMON = ("chunk_size", "action_dim", "state_dim", "camera_names")


def _simple_types(annotation: Any) -> tuple[type, ...] | None:
    """The runtime types an annotation admits, or None when it is not a simple one we check."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(annotation):
            sub = _simple_types(arg)
            if sub is None:
                return None
            out.extend(sub)
        return tuple(out)
    if annotation is type(None):
        return (type(None),)
    if annotation is float:
        return (float, int)
    if annotation is bool:
        return (bool,)
    if annotation is int:
        return (int,)
    if annotation is str:
        return (str,)
    if origin in (list, tuple, typing.Sequence) or annotation in (list, tuple):
        return (list, tuple, ListConfig)
    if origin in (dict, typing.Mapping) or annotation in (dict,):
        return (dict, DictConfig)
    return None


def _ranges(annotation: Any) -> tuple[Any, list[Range]]:
    """``Annotated[T, Range(...)]`` (also inside ``X | None``) -> (T-with-None, ranges)."""
    if typing.get_origin(annotation) is typing.Annotated:
        base, *extras = typing.get_args(annotation)
        return base, [e for e in extras if isinstance(e, Range)]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args, found = [], []
        for arg in typing.get_args(annotation):
            base, ranges = _ranges(arg)
            args.append(base)
            found += ranges
        if found:
            return typing.Union[tuple(args)], found
    return annotation, []


def _check_value(path: str, value: Any, annotation: Any) -> None:
    annotation, ranges = _ranges(annotation)
    for r in ranges:
        why = r.violation(value)
        if why is not None:
            raise ConfigError(f"{path}: {why}")
    if typing.get_origin(annotation) is typing.Literal:
        choices = list(typing.get_args(annotation))
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {choices}")
        return
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        names = [m.value for m in annotation]
        if value not in names:
            raise ConfigError(f"{path}: {value!r} is not one of {names}")
        return
    allowed = _simple_types(annotation)
    if allowed is None:
        return
    if isinstance(value, (DictConfig, ListConfig)) and OmegaConf.is_interpolation(value):
        return
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{path}: expected {_type_name(annotation)}, got bool {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(
            f"{path}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}"
        )


def _type_name(annotation: Any) -> str:
    return getattr(annotation, "__name__", None) or str(annotation).replace("typing.", "")


def resolve_target(path: str, node: Mapping[str, Any]) -> Callable[..., Any]:
    target = node.get("_target_")
    try:
        obj = get_object(target)
    except Exception as exc:  # hydra wraps ImportError/AttributeError
        raise ConfigError(f"{path}._target_: cannot import {target!r} ({exc.__cause__ or exc})") from None
    if obj.__name__ == "build_policy" and "type" in node:
        from policies.registry import POLICY_REGISTRY

        try:
            return POLICY_REGISTRY.get(node["type"])
        except KeyError as exc:
            raise ConfigError(f"{path}.type: {exc.args[0]}") from None
    return obj


def check_target_node(path: str, node: Mapping[str, Any], ignore: set[str] = frozenset(), provided: set[str] = frozenset()) -> None:
    """Check ``node``'s keys and simple types against its ``_target_``'s signature.

    ``ignore``: keys the run object consumes itself. ``provided``: parameters the owner passes at
    build time (e.g. ``cameras`` for robots, ``spec`` for the safety filter).
    """
    target = resolve_target(path, node)
    try:
        sig = inspect.signature(target)
    except (TypeError, ValueError):
        return
    try:
        # a dataclass's fields may be inherited from another module (the RTC knobs): resolve each
        # annotation in the module that declared it
        if inspect.isclass(target) and dataclasses.is_dataclass(target):
            hints = typing.get_type_hints(target, include_extras=True)
        else:
            hints = typing.get_type_hints(target.__init__ if inspect.isclass(target) else target, include_extras=True)
    except Exception:
        hints = {}
    params = {n: p for n, p in sig.parameters.items() if n != "self"}
    takes_kwargs = any(p.kind is p.VAR_KEYWORD for p in params.values())
    extra = {"type"} if getattr(get_object(node["_target_"]), "__name__", "") == "build_policy" else set()
    for key, value in node.items():
        if key in _HYDRA_KEYS or key in ignore or key in extra:
            continue
        sub = f"{path}.{key}"
        if key not in params:
            if takes_kwargs:
                continue
            known = ", ".join(n for n, p in params.items() if p.kind is not p.VAR_KEYWORD and n not in provided)
            raise ConfigError(f"{sub}: unknown key for {node['_target_']} (accepted: {known})")
        _check_value(sub, value, hints.get(key, params[key].annotation))
        if isinstance(value, Mapping) and "_target_" in value:
            check_target_node(sub, value)
    missing = [
        n for n, p in params.items()
        if p.default is p.empty and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in node and n not in provided
    ]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing} for {node['_target_']}")
    preflight = getattr(target, "preflight", None)
    if callable(preflight):
        # A part's own start-time check of its files and promises (checkpoint readable, stats keys,
        # topics file parses, ...): ``preflight(node, path)`` raises ConfigError naming the key.
        preflight(node, path)


def _require(path: str, node: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in node or node[key] is None:
            raise ConfigError(f"{path}.{key}: required (every {path} config must set it)")


def _check_normalizer(policy: Mapping[str, Any]) -> None:
    """Build the normalizer (it reads only its stats file) and check it covers the policy's state and
    action: a missing, unreadable or incomplete stats file fails here, before anything starts."""
    from hydra.utils import instantiate

    from policies.normalize import Normalizer

    try:
        norm = instantiate(policy["normalizer"])
        if callable(norm) and not isinstance(norm, Normalizer):
            norm = norm()
        if isinstance(norm, Normalizer):
            norm.require("state", int(policy["state_dim"]))
            norm.require("action", int(policy["action_dim"]))
    except Exception as exc:  # noqa: BLE001 - NormalizerError, JSON syntax, missing file, ...
        cause = exc.__cause__ or exc
        raise ConfigError(f"policy.normalizer: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}") from None


def _check_trained_guidance(algorithm: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
    """``guidance: trained`` (or lockstep method ``rtc_trained``) needs a policy whose class says its
    configured model was trained with clean action prefixes (``supports_trained_guidance(node)``)."""
    from algorithms.lockstep_eval import METHODS  # the methods' guidance, where it is defined
    from policies.base import Guidance

    methods = algorithm.get("methods")
    if methods is not None and any(METHODS.get(m, (None,))[0] == Guidance.TRAINED for m in methods):
        key = "algorithm.methods"
    elif str(algorithm.get("guidance", "")) == "trained" and (methods is None or "custom" in methods):
        key = "algorithm.guidance"
    else:
        return
    target = resolve_target("policy", policy)
    check = getattr(target, "supports_trained_guidance", None)
    if not (callable(check) and check(policy)):
        raise ConfigError(
            f"{key}: guidance 'trained' needs a policy trained with action-prefix conditioning (training-time "
            f"RTC); policy {policy.get('_target_')} with this checkpoint is not (flow: train with "
            "model.train_prefix_max > 0, or pick guidance vjp/blend/none)")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) for any config the run cannot use."""
    structured = OmegaConf.structured(RunConfig)
    for key in cfg.keys():
        if key == "hydra":
            continue
        if key not in structured:
            raise ConfigError(f"{key}: unknown top-level key (accepted: {', '.join(f.name for f in fields(RunConfig))})")
    run_hints = typing.get_type_hints(RunConfig, include_extras=True)
    cam_hints = typing.get_type_hints(CamerasConfig, include_extras=True)
    container = OmegaConf.to_container(cfg, resolve=False)
    container.pop("hydra", None)
    try:
        container = OmegaConf.to_container(OmegaConf.create(container), resolve=True)
    except Exception as exc:  # noqa: BLE001 - an unresolvable ${...} names its key
        key = getattr(exc, "full_key", None) or "config"
        raise ConfigError(f"{key}: {' '.join(str(exc).split())}") from None
    for f in fields(RunConfig):
        if f.name in ("robot", "cameras", "policy", "algorithm", "safety", "logger", "launcher", "record"):
            if container.get(f.name) is None:
                raise ConfigError(f"{f.name}: no option selected (pick one, e.g. {f.name}=<name>)")
            continue
        _check_value(f.name, container.get(f.name, f.default), run_hints[f.name])
    objective = container.get("objective")
    names = [objective] if isinstance(objective, str) else objective
    if objective is not None:
        from services.telemetry import summary_metric_names

        if not (isinstance(names, list) and names and all(isinstance(n, str) for n in names)):
            raise ConfigError(f"objective: expected a summary key or a list of them (e.g. [success_rate, "
                              f"discontinuity_mean]), got {objective!r}")
        known = summary_metric_names()
        unknown = [n for n in names if n not in known]
        if unknown:
            raise ConfigError(f"objective: {unknown} not a summary metric (known: {', '.join(sorted(known))})")
    for key in ("episodes", "max_steps"):
        if container[key] < 1:
            raise ConfigError(f"{key}: must be >= 1, got {container[key]}")

    robot, policy, cameras = container["robot"], container["policy"], container["cameras"]
    cam_schema = {f.name: f for f in fields(CamerasConfig)}
    for key, value in cameras.items():
        if key not in cam_schema:
            raise ConfigError(f"cameras.{key}: unknown key (accepted: {', '.join(cam_schema)})")
        if key != "devices":
            _check_value(f"cameras.{key}", value, cam_hints[key])
    devices = cameras.get("devices") or {}
    for name, dev in devices.items():
        if not isinstance(dev, Mapping) or "_target_" not in dev:
            raise ConfigError(f"cameras.devices.{name}: needs a _target_")
        check_target_node(
            f"cameras.devices.{name}", dev,
            provided={"frames", "host"},
        )

    _require("robot", robot, ROBOT_COMMON)
    _require("policy", policy, POLICY_COMMON)
    for path, node, key, annotation in (("robot", robot, "hz", PositiveFloat), ("robot", robot, "action_dim", PositiveInt),
                                        ("robot", robot, "state_dim", PositiveInt),
                                        ("policy", policy, "chunk_size", PositiveInt),
                                        ("policy", policy, "action_dim", PositiveInt),
                                        ("policy", policy, "state_dim", PositiveInt)):
        _check_value(f"{path}.{key}", node[key], annotation)
    for key in ("action_dim", "state_dim"):
        if int(policy[key]) != int(robot[key]):
            raise ConfigError(
                f"policy.{key}: policy.{key}={policy[key]} does not match robot.{key}={robot[key]} (robot {robot['name']})"
            )
    horizon = container["algorithm"].get("execute_horizon")
    if isinstance(horizon, int) and not isinstance(horizon, bool) and not 1 <= int(horizon) <= int(policy["chunk_size"]):
        raise ConfigError(
            f"algorithm.execute_horizon: algorithm.execute_horizon={horizon} must be in [1, policy.chunk_size={policy['chunk_size']}]"
        )
    check_target_node("robot", robot, provided={"cameras"})
    check_target_node("policy", policy, ignore=RUN_OBJECT_KEYS["policy"])
    if "normalizer" not in policy or not isinstance(policy["normalizer"], Mapping):
        raise ConfigError("policy.normalizer: required (a node with _target_, e.g. policies.normalize.Normalizer.identity)")
    check_target_node("policy.normalizer", policy["normalizer"])
    _check_normalizer(policy)
    check_target_node("algorithm", container["algorithm"], provided={"run"})
    check_target_node("safety", container["safety"], provided={"spec"})
    check_target_node("logger", container["logger"])
    check_target_node("launcher", container["launcher"])
    check_target_node("record", container["record"])
    if container.get("realtime") is not None:
        check_target_node("realtime", container["realtime"])

    # cross-part checks
    _check_trained_guidance(container["algorithm"], policy)
    missing_cams = [c for c in policy["camera_names"] if c not in devices]
    if missing_cams:
        raise ConfigError(
            f"policy.camera_names: policy needs cameras {missing_cams} that cameras.devices does not "
            f"configure (configured: {sorted(devices)})"
        )
    image_size = policy.get("image_size")
    if image_size and policy["camera_names"] and list(image_size) != [cameras["height"], cameras["width"]]:
        raise ConfigError(
            f"policy.image_size={list(image_size)} (height, width) does not match cameras "
            f"height x width = [{cameras['height']}, {cameras['width']}]"
        )
