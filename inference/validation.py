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
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from typing import Annotated, Any

from hydra.utils import get_object
from omegaconf import DictConfig, ListConfig, OmegaConf

from algorithms.chunking.chunk_logic import check_execute_horizon
from policies.base import GUIDANCE_CAPABILITY, Guidance, capability_flag
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
    viewer: Any = None  # conf/viewer/: services.viewer (knobs and preflight checked with the other groups)
    realtime: Any = None  # conf/realtime/: services.realtime.RealtimeConfig (checked by its preflight)
    seed: Annotated[int, Range(ge=0)] = 0
    episodes: int = 1  # >= 1, checked with its own message below
    max_steps: int = 200
    log_level: LogLevel = LogLevel.WARNING  # the console's level; the log file keeps INFO and up (services/logs.py)
    report: bool = True
    objective: Any = None  # summary key(s) the app returns, for sweepers that optimise (Optuna)


# A frame side in pixels: each camera's shared-memory ring holds 8 frames, so 4096 x 4096 RGB is
# already 400 MB per camera; larger is a typo, found here rather than as an allocation failure.
FramePixels = Annotated[int, Range(ge=1, le=4096)]


@dataclass
class CamerasConfig:
    width: FramePixels = 128
    height: FramePixels = 96
    num_img_obs: PositiveInt = 1
    img_obs_every: PositiveInt = 1
    max_frame_age_s: PositiveFloat = 0.5
    devices: Any = None


# Keys the run object itself reads from a group node (they are not target parameters).
RUN_OBJECT_KEYS = {"policy": {"normalizer", "state_history", "image_size", "allow_rate_mismatch"}, "robot": set()}
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
            return typing.Union[tuple(args)], found  # noqa: UP007 (a Union built from a tuple of types)
    return annotation, []


def _dataclass_of(annotation: Any) -> type | None:
    """The dataclass an annotation names (also as ``X | None``), or None."""
    if typing.get_origin(annotation) is typing.Annotated:
        annotation = typing.get_args(annotation)[0]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        found = [a for a in typing.get_args(annotation) if a is not type(None)]
        annotation = found[0] if len(found) == 1 else None
    return annotation if inspect.isclass(annotation) and dataclasses.is_dataclass(annotation) else None


def check_dataclass_node(path: str, node: Mapping[str, Any], cls: type) -> None:
    """A nested settings block declared as a dataclass (e.g. an algorithm's chunking settings):
    its keys, types and ranges, field by field, and the dataclass's own ``preflight`` if it has one."""
    hints = typing.get_type_hints(cls, include_extras=True)
    names = [f.name for f in fields(cls)]
    for key, value in node.items():
        if key in _HYDRA_KEYS:
            continue
        if key not in names:
            raise ConfigError(
                f"{path}.{key}: unknown key for {cls.__module__}.{cls.__qualname__} (accepted: {', '.join(names)})"
            )
        _check_value(f"{path}.{key}", value, hints.get(key, Any))
    missing = [
        f.name
        for f in fields(cls)
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING and f.name not in node
    ]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing} for {cls.__qualname__}")
    preflight = getattr(cls, "preflight", None)
    if callable(preflight):
        preflight(node, path)


def _choices(annotation: Any) -> list[Any] | None:
    """The values a ``Literal[...]`` or an Enum admits (also as ``X | None``: then None too), or None
    when the annotation is not a closed set."""
    if typing.get_origin(annotation) is typing.Literal:
        return list(typing.get_args(annotation))
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return [m.value for m in annotation]
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        out: list[Any] = []
        for arg in typing.get_args(annotation):
            sub = [None] if arg is type(None) else _choices(arg)
            if sub is None:
                return None
            out += sub
        return out
    return None


def _check_value(path: str, value: Any, annotation: Any) -> None:
    nested = _dataclass_of(annotation)
    if nested is not None and isinstance(value, Mapping):
        check_dataclass_node(path, value, nested)
        return
    annotation, ranges = _ranges(annotation)
    for r in ranges:
        why = r.violation(value)
        if why is not None:
            raise ConfigError(f"{path}: {why}")
    choices = _choices(annotation)
    if choices is not None:
        if value not in choices:
            raise ConfigError(f"{path}: {value!r} is not one of {choices}")
        return
    allowed = _simple_types(annotation)
    if allowed is None:
        return
    if isinstance(value, (DictConfig, ListConfig)) and OmegaConf.is_interpolation(value):
        return
    if isinstance(value, bool) and bool not in allowed:
        raise ConfigError(f"{path}: expected {_type_name(annotation)}, got bool {value!r}")
    if not isinstance(value, allowed):
        raise ConfigError(f"{path}: expected {_type_name(annotation)}, got {type(value).__name__} {value!r}")


def _type_name(annotation: Any) -> str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):  # int | None -> "int or None"
        return " or ".join("None" if a is type(None) else _type_name(a) for a in typing.get_args(annotation))
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


# Keys that once existed, and what to write instead: a user's old command gets the new spelling.
RENAMED_KEYS = {
    "algorithm.s_min": "algorithm.execute_horizon (the actions of a chunk executed before the next inference starts)"
}


def check_target_node(
    path: str,
    node: Mapping[str, Any],
    ignore: set[str] = frozenset(),
    provided: set[str] = frozenset(),
    keys_only: bool = False,
) -> None:
    """Check ``node``'s keys, types and ranges against its ``_target_``'s signature, then run the
    target's ``preflight``.

    ``ignore``: keys the run object consumes itself. ``provided``: parameters the owner passes at
    build time (e.g. ``cameras`` for robots, ``spec`` for the safety filter). ``keys_only``: only
    refuse keys the target does not take (a typo is named before the key it was meant to be is
    reported missing).
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
            if sub in RENAMED_KEYS:
                raise ConfigError(f"{sub}: renamed: use {RENAMED_KEYS[sub]}")
            if takes_kwargs:
                continue
            known = ", ".join(n for n, p in params.items() if p.kind is not p.VAR_KEYWORD and n not in provided)
            raise ConfigError(f"{sub}: unknown key for {node['_target_']} (accepted: {known})")
        if keys_only:
            continue
        _check_value(sub, value, hints.get(key, params[key].annotation))
        if isinstance(value, Mapping) and "_target_" in value:
            check_target_node(sub, value)
    if keys_only:
        return
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty
        and p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)
        and n not in node
        and n not in provided
    ]
    if missing:
        raise ConfigError(f"{path}: missing required key(s) {missing} for {node['_target_']}")
    preflight = getattr(target, "preflight", None)
    if callable(preflight):
        # A part's own start-time check of its files and promises (checkpoint readable, stats keys,
        # topics file parses, ...): ``preflight(node, path)`` raises ConfigError naming the key.
        preflight(node, path)


def _check_camera_hosts(robot: Mapping[str, Any], devices: Mapping[str, Any]) -> None:
    """Every camera can ride on the configured robot: a camera class that renders from its host's
    own state names the robot class it needs (``host_class``); any other robot is refused here
    rather than as a traceback from the robot's constructor."""
    robot_cls = resolve_target("robot", robot)
    for name, dev in devices.items():
        needed = getattr(resolve_target(f"cameras.devices.{name}", dev), "host_class", None)
        if needed is None:
            continue
        host = get_object(needed)
        if not (inspect.isclass(robot_cls) and issubclass(robot_cls, host)):
            raise ConfigError(
                f"cameras: cameras.devices.{name} ({dev['_target_']}) needs robot {needed} as its host, but robot "
                f"{robot.get('name')!r} is {robot.get('_target_')} (leave cameras= out to use the robot's own "
                f"cameras, or pick ones it can carry, e.g. cameras=none)"
            )


def _complete_robot(cfg: DictConfig) -> None:
    """A robot whose rate and sizes are facts of what it drives (``robot=gym``: the environment)
    fills the keys its config leaves null (its ``complete_config``) into ``cfg`` itself, before
    anything reads them (``policy=hold`` takes its dims from ``${robot.action_dim}``; the run
    object its rate from ``robot.hz``). The robot's keys, types and ranges are checked first, and
    its own refusals (an unknown env, a size that contradicts it) name their key."""
    from omegaconf import open_dict, read_write

    node = cfg.get("robot")
    if not isinstance(node, DictConfig) or "_target_" not in node:
        return
    try:
        robot = OmegaConf.to_container(node, resolve=True)
        cameras = (
            OmegaConf.to_container(cfg.cameras, resolve=True) if isinstance(cfg.get("cameras"), DictConfig) else {}
        )
    except Exception:  # noqa: BLE001 - an unresolvable ${...}: the full resolution in validate() names it
        return
    complete = getattr(resolve_target("robot", robot), "complete_config", None)
    if not callable(complete):
        return
    check_target_node("robot", robot, provided={"cameras"})
    filled = complete(robot, cameras, "robot")
    with read_write(cfg), open_dict(cfg):
        for key, value in filled.items():
            cfg.robot[key] = value


def control_rate_mismatch(robot: Mapping[str, Any], policy: Mapping[str, Any]) -> dict[str, Any] | None:
    """``{robot_hz, policy_hz, source}`` when the configured policy's checkpoint states a control rate
    (its class's ``trained_control_hz(node)``) other than ``robot.hz``; None when they agree or the
    checkpoint does not say. A chunk is H ticks of the training data's rate: played at another rate
    it moves the robot faster or slower than anything the policy saw."""
    import math

    target = resolve_target("policy", policy)
    trained = getattr(target, "trained_control_hz", None)
    if not callable(trained):
        return None
    try:
        rate = trained(policy)
    except ConfigError:
        raise
    except ValueError as exc:
        raise ConfigError(f"policy: cannot tell the checkpoint's control rate: {' '.join(str(exc).split())}") from None
    robot_hz = float(robot["hz"])
    if rate is None or math.isclose(rate.hz, robot_hz, rel_tol=1e-6):
        return None
    return {"robot_hz": robot_hz, "policy_hz": rate.hz, "source": rate.source}


def _check_control_rate(robot: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
    """``robot.hz`` equals the rate the policy was trained at, unless ``policy.allow_rate_mismatch``."""
    allow = policy.get("allow_rate_mismatch", False)
    _check_value("policy.allow_rate_mismatch", allow, bool)
    mismatch = control_rate_mismatch(robot, policy)
    if mismatch is None or allow:
        return
    raise ConfigError(
        f"robot.hz: robot.hz={mismatch['robot_hz']:g} but the policy was trained at {mismatch['policy_hz']:g} Hz "
        f"({mismatch['source']}); its chunks would play {mismatch['robot_hz'] / mismatch['policy_hz']:.2g}x as fast "
        f"as its data. Run robot.hz={mismatch['policy_hz']:g}, or set policy.allow_rate_mismatch=true to run it "
        f"at {mismatch['robot_hz']:g} Hz anyway (a warning, and rate_mismatch in summary.json)"
    )


# What to run on a robot the configured policy was not trained for (the dims disagree).
POLICY_FOR_YOUR_ROBOT = (
    "for your robot, run a policy trained on it: policy=openpi policy.train_config_name=<config> "
    "policy.ckpt_dir=<checkpoint> (docs/openpi.md) or policy=lerobot "
    "policy.path=<pretrained_model> (docs/lerobot.md)"
)


def _policy_for_robot_hint(policy: Mapping[str, Any], robot: Mapping[str, Any]) -> str:
    """``: <what the policy drives>; <what to run instead>`` for a dims mismatch where the policy's
    class says its checkpoint was trained for another robot (``describe_for_robot(node, robot)``);
    empty where it does not (the mismatch is then in the config)."""
    try:
        describe = getattr(resolve_target("policy", policy), "describe_for_robot", None)
        said = describe(policy, robot) if callable(describe) else None
    except ConfigError:
        said = None
    return f": {said}; {POLICY_FOR_YOUR_ROBOT}" if said else ""


def _require(path: str, node: Mapping[str, Any], keys: tuple[str, ...]) -> None:
    for key in keys:
        if key not in node or node[key] is None:
            raise ConfigError(f"{path}.{key}: required (every {path} config must set it)")


def _check_normalizer(policy: Mapping[str, Any]) -> None:
    """Build the normalizer (it reads only its stats file) and check its contents for every key the
    engine normalizes through it (the policy reads ``state`` and the previous chunk's ``action``, and
    writes ``action``): present at the policy's dimension, finite, and a usable scale (std >= 0,
    min <= max, q01 <= q99, no zero scale). A missing, unreadable, incomplete or corrupt stats file
    fails here, before anything starts, not as NaN actions at the first chunk."""
    from hydra.utils import instantiate

    from policies.normalize import Normalizer

    try:
        norm = instantiate(policy["normalizer"])
        if callable(norm) and not isinstance(norm, Normalizer):
            norm = norm()
        if isinstance(norm, Normalizer):
            for key, dim in (("state", int(policy["state_dim"])), ("action", int(policy["action_dim"]))):
                norm.require(key, dim)
                _check_stats(norm, key, dim)
    except Exception as exc:  # noqa: BLE001 - NormalizerError, JSON syntax, missing file, ...
        cause = exc.__cause__ or exc
        raise ConfigError(f"policy.normalizer: {type(cause).__name__}: {' '.join(str(cause).split())[:300]}") from None


def _check_stats(norm: Any, key: str, dim: int) -> None:
    """The stats ``norm`` uses for ``key`` are numbers that make an invertible map."""
    import numpy as np

    stats = norm.stats.get(key, {})
    mode = norm.mode(key)  # require() already refused a key without an explicit mode
    if not norm.eps >= 0:
        raise ValueError(f"eps must be >= 0 (got {norm.eps})")
    for stat, arr in stats.items():
        bad = np.flatnonzero(~np.isfinite(np.asarray(arr, dtype=np.float64)))
        if bad.size:
            raise ValueError(f"stats {key}.{stat} are not finite at index {bad.tolist()[:5]}")
    pairs = {"zscore": None, "minmax": ("min", "max"), "quantile": ("q01", "q99")}
    if mode == "zscore" and np.any(stats["std"] < 0):
        raise ValueError(f"stats {key}.std are negative at index {np.flatnonzero(stats['std'] < 0).tolist()[:5]}")
    if pairs.get(mode):
        lo, hi = pairs[mode]
        wrong = np.flatnonzero(stats[hi] < stats[lo])
        if wrong.size:
            raise ValueError(f"stats {key}.{hi} < {key}.{lo} at index {wrong.tolist()[:5]}")
    probe = norm.to_model(key, np.ones(dim))
    if not np.all(np.isfinite(probe)):
        raise ValueError(
            f"stats for {key!r} ({mode}) give a zero scale at index "
            f"{np.flatnonzero(~np.isfinite(probe)).tolist()[:5]} (eps {norm.eps})"
        )


# What each guidance a policy may lack (``policies.base.GUIDANCE_CAPABILITY``) needs, said in the
# error; the class method that says whether the configured policy has it is
# ``supports_<guidance>_guidance(node)`` (it reads the policy's config node only; nothing is built),
# and an optional ``require_<guidance>_guidance(node, path)`` names a policy key the guidance needs.
_GUIDANCE_NEEDS: dict[Guidance, str] = {
    Guidance.TRAINED: "a policy trained with action-prefix conditioning (training-time RTC); flow: train with "
    "model.train_prefix_max > 0",
    Guidance.IDENTITY: "a policy with a sampler it can guide step by step (the flow policy)",
    Guidance.SELECT: "a policy that samples several chunks for one observation (the flow policy)",
    Guidance.BID: "a policy that samples several chunks for one observation and has a weak policy to contrast them "
    "with (the flow policy with policy.bid_weak_checkpoint)",
}
assert set(_GUIDANCE_NEEDS) == set(GUIDANCE_CAPABILITY), "every optional guidance needs its start-time check"


def _check_optional_guidance(algorithm: Mapping[str, Any], policy: Mapping[str, Any]) -> None:
    """``guidance: trained`` / ``identity`` (or the lockstep methods that use them) need a policy
    whose class says the configured policy supports them (``supports_<kind>_guidance(node)``)."""
    from algorithms.lockstep_eval import METHODS  # the methods' guidance, where it is defined

    methods = algorithm.get("methods")
    wanted: list[tuple[str, str]] = []
    if methods is not None:
        wanted += [("algorithm.methods", str(METHODS[m][0])) for m in methods if METHODS.get(m, (None,))[0] is not None]
    if methods is None or "custom" in methods:
        wanted.append(("algorithm.guidance", str(algorithm.get("guidance", ""))))
    target = None
    for key, kind in wanted:
        if capability_flag(kind) is None:  # every guided policy takes it (or not a guidance kind at all)
            continue
        needs = _GUIDANCE_NEEDS[Guidance(kind)]
        target = target or resolve_target("policy", policy)
        check = getattr(target, f"supports_{kind}_guidance", None)
        if not (callable(check) and check(policy)):
            raise ConfigError(
                f"{key}: guidance '{kind}' needs {needs}; policy {policy.get('_target_')} with this "
                "config does not declare it (pick guidance vjp/blend/none)"
            )
        require = getattr(target, f"require_{kind}_guidance", None)
        if callable(require):  # what the guidance needs from the policy's own keys: ConfigError naming the key
            require(policy, "policy")


def validate(cfg: DictConfig) -> None:
    """Raise ConfigError (one line, naming the key) for any config the run cannot use."""
    structured = OmegaConf.structured(RunConfig)
    for key in cfg.keys():
        if key == "hydra":
            continue
        if key not in structured:
            raise ConfigError(
                f"{key}: unknown top-level key (accepted: {', '.join(f.name for f in fields(RunConfig))})"
            )
    _complete_robot(cfg)
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
            raise ConfigError(
                f"objective: expected a summary key or a list of them (e.g. [success_rate, "
                f"discontinuity_mean]), got {objective!r}"
            )
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
        check_target_node(f"cameras.devices.{name}", dev, provided={"frames", "host"})

    check_target_node("robot", robot, provided={"cameras"}, keys_only=True)
    _check_camera_hosts(robot, devices)
    check_target_node("policy", policy, ignore=RUN_OBJECT_KEYS["policy"], keys_only=True)
    _require("robot", robot, ROBOT_COMMON)
    _require("policy", policy, POLICY_COMMON)
    for path, node, key, annotation in (
        ("robot", robot, "hz", PositiveFloat),
        ("robot", robot, "action_dim", PositiveInt),
        ("robot", robot, "state_dim", PositiveInt),
        ("policy", policy, "chunk_size", PositiveInt),
        ("policy", policy, "action_dim", PositiveInt),
        ("policy", policy, "state_dim", PositiveInt),
    ):
        _check_value(f"{path}.{key}", node[key], annotation)
    for key in ("action_dim", "state_dim"):
        if int(policy[key]) != int(robot[key]):
            raise ConfigError(
                f"policy.{key}: policy.{key}={policy[key]} does not match robot.{key}={robot[key]} (robot {robot['name']})"
                f"{_policy_for_robot_hint(policy, robot)}"
            )
    horizon = container["algorithm"].get("execute_horizon")
    if isinstance(horizon, int) and not isinstance(horizon, bool):
        try:
            check_execute_horizon(horizon, int(policy["chunk_size"]))
        except ValueError as exc:
            raise ConfigError(f"algorithm.execute_horizon: {exc}") from None
    check_target_node("robot", robot, provided={"cameras"})
    check_target_node("policy", policy, ignore=RUN_OBJECT_KEYS["policy"])
    if "normalizer" not in policy or not isinstance(policy["normalizer"], Mapping):
        raise ConfigError(
            "policy.normalizer: required (a node with _target_, e.g. policies.normalize.Normalizer.identity)"
        )
    check_target_node("policy.normalizer", policy["normalizer"])
    _check_normalizer(policy)
    _check_control_rate(robot, policy)
    check_target_node("algorithm", container["algorithm"], provided={"run"})
    check_target_node("safety", container["safety"], provided={"spec"})
    check_target_node("logger", container["logger"])
    check_target_node("launcher", container["launcher"])
    check_target_node("record", container["record"])
    if container.get("viewer") is not None:  # the run object builds it once more (starting nothing) at start
        check_target_node("viewer", container["viewer"])
    if container.get("realtime") is not None:
        check_target_node("realtime", container["realtime"])

    # cross-part checks
    _check_optional_guidance(container["algorithm"], policy)
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
