"""A ROS 2 digital twin of a configured robot, for running the whole engine without hardware.

It reads the same ``conf/robot/<name>.yaml`` as ``Ros2Robot`` and plays the robot's side of every
topic: it publishes the state topics at the robot rate from a first-order joint model that tracks
the received command targets (time constant ``tau_s``), and synthetic RGB images on the camera
topics. ``echo: true`` republishes every command on ``<topic>/echo`` as soon as it arrives (the
round-trip benchmark uses it).

    python -m robots.twin robot=igris_b            # Hydra app, Ctrl-C to stop
    RobotTwin(robot_cfg).start() ... .stop()       # in-process (tests)
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from robots.ros2 import messages
from robots.ros2.layout import RobotLayout
from robots.ros2.transport import QosProfile, make_transport

log = logging.getLogger(__name__)


class RobotTwin:
    """Simulated robot behind ROS 2 topics. Positions in robot units (radians / raw)."""

    def __init__(
        self,
        robot_cfg: Mapping[str, Any],
        *,
        tau_s: float = 0.1,
        start_pose: str | Sequence[float] = "zeros",
        image_topics: Mapping[str, str] | None = None,
        image_width: int = 320,
        image_height: int = 240,
        image_hz: float | None = None,
        mute: Sequence[str] = (),
        echo: bool = False,
        transport: str = "auto",
        domain_id: int | None = None,
    ) -> None:
        self.layout = RobotLayout.from_config(robot_cfg)
        lay = self.layout
        if isinstance(start_pose, str):
            if start_pose not in ("zeros", "home"):
                raise ValueError(f"start_pose must be 'zeros', 'home' or a vector, got {start_pose!r}")
            q0 = lay.home.copy() if start_pose == "home" else np.clip(np.zeros(lay.action_dim), lay.lower, lay.upper)
        else:
            q0 = np.asarray(start_pose, dtype=np.float64)
            if q0.shape != (lay.action_dim,):
                raise ValueError(f"start_pose has shape {q0.shape}, expected ({lay.action_dim},)")
        unknown = set(mute) - set(lay.state_topics)
        if unknown:
            raise ValueError(f"mute: unknown state topics {sorted(unknown)} (have {sorted(lay.state_topics)})")
        self.q = q0.copy()
        self.target = q0.copy()
        self.tau_s = float(tau_s)
        self.mute = set(mute)
        self.echo = bool(echo)
        self.image_topics = {
            k: v.format(robot=lay.name, robot_id=lay.robot_id) for k, v in (image_topics or {}).items()
        }
        self.image_size = (int(image_height), int(image_width))
        self.image_hz = float(image_hz or lay.hz)
        self.transport_kind = transport
        self.domain_id = domain_id
        self.commands_received = 0
        self.ticks = 0
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._transport = None
        # state key -> action indices it measures (keys no group measures are published as zeros)
        self._key_to_action: dict[str, np.ndarray] = {}
        for g in lay.groups:
            if g.state_key is not None:
                self._key_to_action[g.state_key] = np.arange(g.start, g.stop)
        self._state_names = {key: self._names_for(st) for key, st in lay.state_topics.items()}

    def _names_for(self, st: Any) -> list[str]:
        size = max(st.attr_sizes().values())
        names = [f"joint_{i}" for i in range(size)]
        for f in st.fields:
            idx = self._key_to_action.get(f.key)
            if idx is not None:
                names[f.start : f.stop] = [self.layout.joint_names[i] for i in idx[: f.size]]
        return names

    # ------------------------------------------------------------------ lifecycle
    def start(self) -> RobotTwin:
        if self._transport is not None:
            return self
        self._stop.clear()
        self._transport = make_transport(self.transport_kind, self.domain_id, node_name=f"{self.layout.name}_twin")
        t = self._transport
        self._state_pubs = {k: t.publisher(st.topic, st.msg_type, st.qos) for k, st in self.layout.state_topics.items()}
        self._cmd_subs = {}
        for k, cmd in self.layout.commands.items():
            on_raw = None
            if self.echo:
                echo_pub = t.publisher(cmd.topic + "/echo", cmd.msg_type, cmd.qos)
                on_raw = self._make_echo(echo_pub)
            self._cmd_subs[k] = t.subscribe(cmd.topic, cmd.msg_type, cmd.qos, on_raw=on_raw)
        self._image_pubs = {
            k: t.publisher(topic, "sensor_msgs/msg/Image", QosProfile("best_effort", 2))
            for k, topic in self.image_topics.items()
        }
        self._threads = [threading.Thread(target=self._run_state, name="twin-state", daemon=True)]
        if self._image_pubs:
            self._threads.append(threading.Thread(target=self._run_images, name="twin-images", daemon=True))
        for th in self._threads:
            th.start()
        log.info(
            "twin %s up: publishing %s, images %s",
            self.layout.name,
            [self.layout.state_topics[k].topic for k in self._state_pubs],
            list(self.image_topics.values()),
        )
        return self

    @staticmethod
    def _make_echo(pub: Any) -> Any:
        def echo(raw: bytes, receive_time: float) -> None:
            pub.publish_raw(raw)

        return echo

    def stop(self) -> None:
        """Stop publishing and close the transport. Idempotent."""
        self._stop.set()
        for th in self._threads:
            th.join(timeout=2.0)
        self._threads = []
        transport, self._transport = self._transport, None
        if transport is not None:
            transport.close()

    def __enter__(self) -> RobotTwin:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ------------------------------------------------------------------ model
    def _absorb_commands(self) -> None:
        for k, sub in self._cmd_subs.items():
            latest = sub.latest()
            if latest is None:
                continue
            msg, _ = latest
            cmd = self.layout.commands[k]
            values = getattr(msg, cmd.attr)
            with self._lock:
                cmd.merge(values, self.target)
        self.commands_received = sum(s.count for s in self._cmd_subs.values())

    def step(self, dt_s: float) -> None:
        """First-order tracking: q += (target - q) * (1 - exp(-dt / tau))."""
        alpha = 1.0 - np.exp(-dt_s / self.tau_s) if self.tau_s > 0 else 1.0
        with self._lock:
            self.q += (self.target - self.q) * alpha

    def state_values(self) -> dict[str, np.ndarray]:
        with self._lock:
            q = self.q.copy()
        out = {}
        for st in self.layout.state_topics.values():
            for f in st.fields:
                idx = self._key_to_action.get(f.key)
                out[f.key] = q[idx] if idx is not None else np.zeros(f.size)
        return out

    def _run_state(self) -> None:
        period = 1.0 / self.layout.hz
        t0 = time.monotonic()
        tick = 0
        while not self._stop.is_set():
            self._absorb_commands()
            self.step(period)
            values = self.state_values()
            for k, pub in self._state_pubs.items():
                if k in self.mute:  # may change while running (tests silence a live topic)
                    continue
                st = self.layout.state_topics[k]
                pub.publish(st.compose(values, self._state_names[k]))
            self.ticks += 1
            tick += 1
            delay = t0 + tick * period - time.monotonic()
            if delay < -period:  # fell far behind (loaded machine): re-anchor instead of bursting
                t0, tick = time.monotonic(), 0
            elif delay > 0:
                self._stop.wait(delay)

    def _run_images(self) -> None:
        h, w = self.image_size
        period = 1.0 / self.image_hz
        ramps = {}
        for i, k in enumerate(self._image_pubs):
            base = np.zeros((h, w, 3), dtype=np.uint8)
            base[..., 0] = np.linspace(0, 255, w, dtype=np.uint8)[None, :]
            base[..., 1] = np.linspace(0, 255, h, dtype=np.uint8)[:, None]
            base[..., 2] = (60 * i) % 256
            ramps[k] = base
        t0 = time.monotonic()
        frame = 0
        while not self._stop.is_set():
            with self._lock:
                q = self.q.copy()
            # a bright bar whose position follows the first joint, so images move with the robot
            col = int((np.tanh(q[0]) * 0.5 + 0.5) * (w - 8))
            for k, pub in self._image_pubs.items():
                img = ramps[k].copy()
                img[:, col : col + 8, :] = 255
                img[:8, :8, 0] = frame % 256
                pub.publish(messages.image_rgb8(img, frame_id=k))
            frame += 1
            delay = t0 + frame * period - time.monotonic()
            if delay < -period:  # re-anchor instead of bursting after a stall
                t0 = time.monotonic() - frame * period
            elif delay > 0:
                self._stop.wait(delay)


def _main() -> None:  # pragma: no cover - exercised by the CLI test
    import hydra
    from omegaconf import DictConfig, OmegaConf

    @hydra.main(version_base=None, config_path="../conf", config_name="twin")
    def main(cfg: DictConfig) -> None:
        twin_cfg = OmegaConf.to_container(cfg.twin, resolve=True)
        duration_s = twin_cfg.pop("duration_s", None)
        cams = OmegaConf.to_container(cfg.cameras, resolve=True) if cfg.get("cameras") else {}
        devices = cams.get("devices") or {}
        image_topics = {name: dev["topic"] for name, dev in devices.items() if isinstance(dev, dict) and "topic" in dev}
        twin = RobotTwin(
            cfg.robot,
            image_topics=image_topics,
            image_width=int(cams.get("width", 320)),
            image_height=int(cams.get("height", 240)),
            **twin_cfg,
        )
        twin.start()
        print(
            f"twin {twin.layout.name} running on domain {twin._transport.domain_id} "
            f"({', '.join(st.topic for st in twin.layout.state_topics.values())}); Ctrl-C to stop",
            flush=True,
        )
        t_end = None if duration_s is None else time.monotonic() + float(duration_s)
        try:
            while t_end is None or time.monotonic() < t_end:
                time.sleep(0.2)
        except KeyboardInterrupt:
            pass
        finally:
            twin.stop()

    main()


if __name__ == "__main__":
    _main()
