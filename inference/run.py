"""The run object: the one place that turns a validated config into parts.

It holds only the resolved config and the run directory, so it pickles into any process
(``spawn``); each ``make_*`` builds its part in the process that calls it (the policy in the
inference process, the robot in the control process). The core never names a robot or policy:
everything comes from ``_target_``.
"""

from __future__ import annotations

import functools
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf

from inference.validation import RUN_OBJECT_KEYS, ConfigError, check_target_node, control_rate_mismatch, validate
from policies.base import Policy, PolicyMetadata
from policies.normalize import Normalizer
from robots.base import Robot, RobotSpec
from robots.cameras.base import Camera, FrameSpec
from robots.history import ObservationHistory
from robots.safety import SafetyFilter
from services.telemetry import Telemetry

log = logging.getLogger(__name__)

_POLICY_RUN_KEYS = tuple(sorted(RUN_OBJECT_KEYS["policy"]))  # read here, not passed to the policy class


def policy_metadata(cfg: DictConfig) -> PolicyMetadata:
    """What the config promises about the policy, known without building it."""
    p, cams = cfg.policy, cfg.cameras
    return PolicyMetadata(
        chunk_size=int(p.chunk_size),
        action_dim=int(p.action_dim),
        state_dim=int(p.state_dim),
        camera_names=tuple(p.camera_names),
        image_size=(int(cams.height), int(cams.width)) if p.camera_names else None,
        state_history=int(p.get("state_history", 1)),
        num_img_obs=int(cams.num_img_obs),
    )


def make_policy(cfg: DictConfig) -> Policy:
    """Build ``cfg.policy`` (the run object's keys removed) and check it keeps the config's promises."""
    node = OmegaConf.masked_copy(cfg.policy, [k for k in cfg.policy if k not in _POLICY_RUN_KEYS])
    policy = instantiate(node, _partial_=True)()
    if not isinstance(policy, Policy):
        raise ConfigError(f"policy._target_: {type(policy).__name__} does not implement policies.base.Policy")
    meta, want = policy.metadata, policy_metadata(cfg)
    for key in ("chunk_size", "action_dim", "state_dim"):
        if getattr(meta, key) != getattr(want, key):
            raise ConfigError(f"policy.{key}={getattr(want, key)} but the built policy has {key}={getattr(meta, key)}")
    return policy


def make_normalizer(cfg: DictConfig) -> Normalizer:
    norm = instantiate(cfg.policy.normalizer)
    if callable(norm) and not isinstance(norm, Normalizer):
        norm = norm()
    if not isinstance(norm, Normalizer):
        raise ConfigError("policy.normalizer: _target_ must produce a policies.normalize.Normalizer")
    norm.require("state", int(cfg.policy.state_dim))
    norm.require("action", int(cfg.policy.action_dim))
    return norm


def _knob_message(text: str) -> str:
    """``algorithm.<key>=<value> ...`` (the constructors' form) as ``algorithm.<key>: ...``."""
    text = " ".join(text.split())
    found = re.match(r"(algorithm\.[\w./]+?)(?:=|:)\s*(.*)", text)
    return f"{found.group(1)}: {text}" if found else f"algorithm: {text}"


class Run:
    def __init__(self, cfg: DictConfig, run_dir: str | Path) -> None:
        validate(cfg)
        container = OmegaConf.to_container(cfg, resolve=True)
        container.pop("hydra", None)
        self.cfg: DictConfig = OmegaConf.create(container)
        self.run_dir = Path(run_dir)
        # validation refused a mismatch unless policy.allow_rate_mismatch: this run goes on with it, said
        # in the log and (make_telemetry) in events.jsonl and summary.json
        self.rate_mismatch: dict[str, Any] | None = control_rate_mismatch(container["robot"], container["policy"])
        if self.rate_mismatch is not None:
            m = self.rate_mismatch
            log.warning(
                "robot.hz=%g but the policy was trained at %g Hz (%s); running anyway "
                "(policy.allow_rate_mismatch=true)",
                m["robot_hz"],
                m["policy_hz"],
                m["source"],
            )
        # built once, here: its constructor checks its knobs (starts nothing) before the run dir exists
        self._algorithm: Any = self.make_algorithm()
        self.make_viewer()  # its knobs checked (starts nothing); the one a run uses is made with its telemetry
        self._viewer: Any = None
        self.run_dir.mkdir(parents=True, exist_ok=True)

    def __getstate__(self) -> dict[str, Any]:
        """Only the config and the run dir travel (spawn, Ray): the process that executes builds
        its own algorithm object."""
        state = dict(self.__dict__)
        state["_algorithm"] = None
        state["_viewer"] = None
        return state

    # --------------------------------------------------------------- scalars
    @property
    def seed(self) -> int:
        return int(self.cfg.seed)

    @property
    def episodes(self) -> int:
        return int(self.cfg.episodes)

    @property
    def max_steps(self) -> int:
        return int(self.cfg.max_steps)

    @property
    def hz(self) -> float:
        return float(self.cfg.robot.hz)

    @property
    def policy_metadata(self) -> PolicyMetadata:
        """What the config promises about the policy, known without building it."""
        return policy_metadata(self.cfg)

    # --------------------------------------------------------------- parts
    def camera_factories(self) -> dict[str, Callable[..., Camera]]:
        cams = self.cfg.cameras
        out = {}
        for name, node in (cams.devices or {}).items():
            factory = instantiate(node, _partial_=True)
            out[name] = functools.partial(
                factory, frames=FrameSpec(name, int(cams.width), int(cams.height), float(cams.max_frame_age_s))
            )
        return out

    def make_robot(self) -> Robot:
        robot = instantiate(self.cfg.robot, _partial_=True)(cameras=self.camera_factories())
        if not isinstance(robot, Robot):
            raise ConfigError(f"robot._target_: {type(robot).__name__} does not implement robots.base.Robot")
        return robot

    def make_policy(self) -> Policy:
        return make_policy(self.cfg)

    def make_normalizer(self) -> Normalizer:
        return make_normalizer(self.cfg)

    def make_safety(self, spec: RobotSpec) -> SafetyFilter:
        return instantiate(self.cfg.safety, _partial_=True)(spec=spec)

    def make_history(self) -> ObservationHistory:
        meta, cams = self.policy_metadata, self.cfg.cameras
        return ObservationHistory(meta.state_history, int(cams.num_img_obs), int(cams.img_obs_every))

    def make_telemetry(self) -> Telemetry:
        sink = instantiate(self.cfg.logger, _partial_=True)()
        self._viewer = self.make_viewer()  # gets a copy of every telemetry record, and (make_recorder) the frames
        telemetry = Telemetry(
            self.run_dir,
            sinks=[sink],
            config=OmegaConf.to_container(self.cfg),
            period_s=1.0 / self.hz,
            taps=self._viewer.taps(),
        )
        if self.rate_mismatch is not None:
            telemetry.event("rate_mismatch", **self.rate_mismatch)
            telemetry.add_summary(rate_mismatch=dict(self.rate_mismatch))
        return telemetry

    def make_recorder(self) -> Any:
        recorder = instantiate(self.cfg.record, _partial_=True)()
        viewer, self._viewer = self._viewer or self.make_viewer(), None
        return viewer.wrap(recorder)

    def make_viewer(self) -> Any:
        """``viewer=`` (services/viewer): the live view, fed off the control path."""
        if self.cfg.get("viewer") is None:
            from services.viewer import NullViewer

            return NullViewer()
        check_target_node("viewer", OmegaConf.to_container(self.cfg.viewer))  # keys, types, ranges
        try:
            return instantiate(self.cfg.viewer, _partial_=True)()
        except Exception as exc:  # hydra wraps the constructor's error
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if isinstance(cause, ConfigError):
                raise cause from None
            if isinstance(cause, (ValueError, TypeError)):
                raise ConfigError(f"viewer: {cause}") from None
            raise

    def make_algorithm(self) -> Any:
        """The configured algorithm object (knobs checked; nothing started). A knob it refuses is a
        ConfigError naming the key."""
        try:
            return instantiate(self.cfg.algorithm, _partial_=True)(run=self)
        except ConfigError:
            raise
        except Exception as exc:  # hydra wraps the constructor's ValueError
            cause = exc.__cause__ if exc.__cause__ is not None else exc
            if not isinstance(cause, (ValueError, TypeError)):
                raise
            raise ConfigError(_knob_message(str(cause))) from None

    # --------------------------------------------------------------- execution
    def execute(self) -> dict[str, Any]:
        """Run the configured algorithm; return (and write) the summary."""
        (self.run_dir / "config_resolved.yaml").write_text(OmegaConf.to_yaml(self.cfg))
        algorithm, self._algorithm = self._algorithm or self.make_algorithm(), None  # one execute per build
        return algorithm.execute()
