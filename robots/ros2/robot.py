"""One generic ROS 2 robot, configured entirely by YAML (conf/robot/igris_b.yaml, igris_c.yaml).

State comes from subscribed topics (latest message + receive time), actions go out on command
topics after being split per the configured layout. Safety rules that live here, not in the
engine, because they are about this transport:

- ``start`` waits for every state topic up to ``topic_timeout_s`` and names the silent ones;
  missing data is never zero-filled.
- ``read`` raises ``StaleDataError`` when any state topic is older than ``max_state_age_s``;
  ``send`` refuses to publish then (never command a robot we cannot see), rejects non-finite
  actions and clamps to joint limits and to ``max_delta`` per tick from the last command.
- ``home`` ramps from the measured pose to the home pose at the slew limit over the live topics
  and fails if the pose is not reached within ``home_timeout_s``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Annotated, Any, Literal

import numpy as np

from robots.base import Frame, Observation, RobotError, StaleDataError
from robots.ros2.layout import RobotLayout
from robots.ros2.topics import load_seed_topics
from robots.ros2.transport import Publisher, Subscription, Transport, diagnose, make_transport, wait_for_messages
from services.errors import ConfigError
from services.knobs import PositiveFloat, Range

log = logging.getLogger(__name__)


def _describes(params: dict[str, Any]) -> bool:
    """Whether ``params`` make a robot layout (start-time check: which key broke it)."""
    try:
        RobotLayout.from_params(**params)
    except (RobotError, ValueError, TypeError, KeyError, OSError):
        return False
    return True


class Ros2Robot:
    """A robot spoken to over ROS 2 topics (rclpy or plain CycloneDDS). Units: radians / raw."""

    realtime = True

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check, before any transport exists: the layout (groups, command layout, state
        keys) and the topics file parse. A robot that cannot be described fails here, naming the key."""
        keys = (
            "name",
            "hz",
            "action_dim",
            "state_dim",
            "groups",
            "commands",
            "state_keys",
            "topics",
            "topics_file",
            "robot_id",
            "max_delta_deg",
            "home_tolerance_deg",
        )
        params = {k: node[k] for k in keys if k in node}
        key = "topics_file"
        try:
            if node.get("topics_file"):
                load_seed_topics(node["topics_file"])
            key = "layout"
            RobotLayout.from_params(**params)
        except (RobotError, ValueError, TypeError, KeyError, OSError) as exc:
            if key == "layout" and params.get("topics_file") and _describes({**params, "topics_file": None}):
                key = "topics_file"  # the config alone describes the robot: the file's contents broke it
            raise ConfigError(f"{path}.{key}: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}") from None

    def __init__(
        self,
        *,
        cameras: dict[str, Callable[..., Any]] | None = None,
        name: str,
        hz: float,
        action_dim: int,
        state_dim: int,
        groups: list[dict[str, Any]],
        commands: dict[str, Any],
        state_keys: list[str],
        topics: dict[str, Any] | None = None,
        topics_file: str | None = None,
        robot_id: str = "",
        transport: Literal["auto", "dds", "rclpy"] = "auto",
        domain_id: Annotated[int, Range(ge=0, le=232)] | None = None,
        topic_timeout_s: PositiveFloat = 5.0,
        max_state_age_s: PositiveFloat = 0.25,
        home_timeout_s: PositiveFloat = 20.0,
        max_delta_deg: PositiveFloat = 5.0,
        home_tolerance_deg: PositiveFloat = 2.0,
    ) -> None:
        self.layout = RobotLayout.from_params(
            name=name,
            hz=hz,
            action_dim=action_dim,
            state_dim=state_dim,
            groups=groups,
            commands=commands,
            state_keys=state_keys,
            topics=topics,
            topics_file=topics_file,
            robot_id=robot_id,
            max_delta_deg=max_delta_deg,
            home_tolerance_deg=home_tolerance_deg,
        )
        self.name = self.layout.name
        self.robot_id = self.layout.robot_id
        self.transport_kind = transport
        self.domain_id = domain_id
        self.topic_timeout_s = float(topic_timeout_s)
        self.max_state_age_s = float(max_state_age_s)
        self.home_timeout_s = float(home_timeout_s)
        self.transport: Transport | None = None
        self._subs: dict[str, Subscription] = {}
        self._pubs: dict[str, Publisher] = {}
        self._command_names = {k: c.message_names(self.layout.joint_names) for k, c in self.layout.commands.items()}
        self._last_command: np.ndarray | None = None
        self.clamped_ticks = 0  # sends where the limits or the slew clamp changed the action
        self.cameras = {cam_name: factory(host=self) for cam_name, factory in (cameras or {}).items()}
        self.spec = self.layout.spec(tuple(self.cameras))

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> None:
        """Connect, wait for every state topic (bounded), start the cameras."""
        if self.transport is not None:
            return
        self.transport = make_transport(self.transport_kind, self.domain_id, node_name=f"{self.layout.name}_engine")
        try:
            for key, st in self.layout.state_topics.items():
                self._subs[key] = self.transport.subscribe(st.topic, st.msg_type, st.qos)
            for key, cmd in self.layout.commands.items():
                self._pubs[key] = self.transport.publisher(cmd.topic, cmd.msg_type, cmd.qos)
            silent = wait_for_messages(self._subs, self.topic_timeout_s)
            if silent:
                names = "; ".join(
                    f"{self.layout.state_topics[k].topic} ({k}): {diagnose(self._subs[k])}" for k in silent
                )
                raise RobotError(
                    f"robot {self.layout.name}: no message within {self.topic_timeout_s:.1f} s on {names} "
                    f"(transport {self.transport.kind}, domain {getattr(self.transport, 'domain_id', '?')})"
                )
            for key, pub in self._pubs.items():
                bad = getattr(pub, "incompatible_qos", None)
                if bad is not None:
                    raise RobotError(
                        f"robot {self.layout.name}: command topic {pub.topic} ({key}): a subscriber's QoS is "
                        f"incompatible with this {pub.qos.reliability} publisher (policy {bad}); set "
                        f"commands.{key}.qos in the robot YAML to what the robot's controller requests"
                    )
            for cam in self.cameras.values():
                cam.start()
        except BaseException:
            self.stop()
            raise
        log.info(
            "robot %s up: %d state topics, %d command topics, cameras %s",
            self.layout.name,
            len(self._subs),
            len(self._pubs),
            list(self.cameras),
        )

    def stop(self) -> None:
        """Stop publishing (the controllers hold the last target) and release everything. Idempotent."""
        for cam in self.cameras.values():
            try:
                cam.stop()
            except Exception:  # keep releasing the rest
                log.exception("stopping camera %s", getattr(cam, "name", "?"))
        transport, self.transport = self.transport, None
        self._subs.clear()
        self._pubs.clear()
        self._last_command = None
        if transport is not None:
            transport.close()

    # ------------------------------------------------------------------ state
    def _state(self) -> tuple[np.ndarray, float]:
        if self.transport is None:
            raise RobotError(f"robot {self.layout.name} is not started")
        now = time.monotonic()
        values: dict[str, np.ndarray] = {}
        oldest = now
        for key, sub in self._subs.items():
            latest = sub.latest()
            st = self.layout.state_topics[key]
            if latest is None:
                raise RobotError(f"robot {self.layout.name}: no message yet on {st.topic}")
            msg, t_recv = latest
            age = now - t_recv
            if age > self.max_state_age_s:
                raise StaleDataError(
                    f"robot {self.layout.name}: {st.topic} ({key}) is {age:.3f} s old "
                    f"(max_state_age_s {self.max_state_age_s})"
                )
            values.update(st.extract(msg))
            oldest = min(oldest, t_recv)
        state = self.layout.state_vector(values)
        if not np.isfinite(state).all():
            raise RobotError(f"robot {self.layout.name}: non-finite values in the state {state.tolist()}")
        return state, oldest

    def read(self) -> Observation:
        state, t_state = self._state()
        images: dict[str, Frame] = {name: cam.read() for name, cam in self.cameras.items()}
        return Observation(state=state, images=images, timestamp=t_state)

    # ------------------------------------------------------------------ commands
    def _publish(self, action: np.ndarray) -> None:
        for key, cmd in self.layout.commands.items():
            self._pubs[key].publish(cmd.message(action, self._command_names[key]))
        self._last_command = action

    def _guard(self, action: np.ndarray, reference: np.ndarray) -> np.ndarray:
        safe = np.clip(action, self.layout.lower, self.layout.upper)
        safe = reference + np.clip(safe - reference, -self.layout.max_delta, self.layout.max_delta)
        if not np.array_equal(safe, action):
            self.clamped_ticks += 1
        return safe

    def send(self, action: np.ndarray) -> None:
        """Publish one action (robot units, action layout). Refuses NaN/inf and stale state."""
        action = np.asarray(action, dtype=np.float64)
        if action.shape != (self.layout.action_dim,):
            raise RobotError(
                f"robot {self.layout.name}: action shape {action.shape}, expected ({self.layout.action_dim},)"
            )
        if not np.isfinite(action).all():
            raise RobotError(f"robot {self.layout.name}: refusing a non-finite action {action.tolist()}")
        state, _ = self._state()  # raises StaleDataError: never command a robot we cannot see
        reference = self._last_command
        if reference is None:
            reference = self.layout.measured_action(state, self.layout.home)
        self._publish(self._guard(action, reference))

    def home(self, seed: int | None = None) -> None:
        """Ramp to the home pose at the slew limit, then wait until it is measured (bounded).

        ``seed`` is ignored: a real robot cannot redraw its task.
        """
        layout = self.layout
        t_end = time.monotonic() + self.home_timeout_s
        state, _ = self._state()
        command = layout.measured_action(state, layout.home)
        period = 1.0 / layout.hz
        t_next = time.monotonic()
        while True:
            state, _ = self._state()
            measured = layout.measured_action(state, layout.home)
            at_command = np.array_equal(command, layout.home)
            error = np.abs(measured - layout.home)
            if at_command and (error <= layout.home_tolerance).all():
                log.info("robot %s at home (max error %.4f)", layout.name, float(error.max()))
                return
            if time.monotonic() >= t_end:
                worst = int(np.argmax(error / layout.home_tolerance))
                raise RobotError(
                    f"robot {layout.name}: home pose not reached within {self.home_timeout_s:.1f} s; "
                    f"{layout.joint_names[worst]} is {error[worst]:.4f} from home"
                )
            command = command + np.clip(layout.home - command, -layout.max_delta, layout.max_delta)
            self._publish(command)
            t_next += period
            time.sleep(max(0.0, t_next - time.monotonic()))

    # ------------------------------------------------------------------ introspection
    def state_age_s(self) -> dict[str, float]:
        """Age (s) of the newest message per state topic; inf when none arrived."""
        now = time.monotonic()
        out = {}
        for key, sub in self._subs.items():
            latest = sub.latest()
            out[key] = float("inf") if latest is None else now - latest[1]
        return out
