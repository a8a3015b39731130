"""Episode recording (``record=mcap``): observations, commands and chunks as ROS 2 messages in an
MCAP-backed rosbag2 (opens in Foxglove; reads back with the ``mcap`` and ``rosbags`` readers).

The control loop only copies each sample into a shared-memory ring (``services.ring``: fixed
layout, one ``np.copyto`` per array, never a wait; a sample that finds the ring full, or
``queue_size`` samples unread, is dropped and counted). JPEG encoding, CDR serialization and disk
writes happen in the recorder's own process, started and warmed up (bag open, every topic added,
one JPEG encoded and one message of each type serialized) in ``start()``, before the first tick.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import numpy as np

from services.errors import ConfigError
from services.knobs import PositiveFloat, PositiveInt, Range
from services.record import CHUNK_TOPIC, COMMAND_TOPIC, STATE_TOPIC, image_topic, run_subdirectory_problem
from services.ring import RecordRing, SinkProcess
from services.robot_data import ObservationLike, RobotSpecLike

log = logging.getLogger(__name__)

OBS, CMD, CHUNK = 1, 2, 3


class McapRecorder:
    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check: the recording's folder is a new one inside the run directory."""
        why = run_subdirectory_problem(node.get("directory", "recording"))
        if why:
            raise ConfigError(f"{path}.directory: {why}")

    def __init__(
        self,
        directory: str = "recording",
        jpeg_quality: Annotated[int, Range(ge=1, le=100)] = 85,
        image_every: PositiveInt = 1,
        queue_size: PositiveInt = 2000,
        buffer_mb: PositiveFloat = 64.0,
    ) -> None:
        self.directory = directory
        self.jpeg_quality = jpeg_quality
        self.image_every = max(1, image_every)
        self.queue_size = queue_size
        self.buffer_mb = buffer_mb
        self.dropped = 0
        self.counts: dict[str, int] = {}
        self._obs_index = 0
        self._ring: RecordRing | None = None
        self._proc: SinkProcess | None = None

    # ------------------------------------------------------------------ control side
    def start(self, run_dir: Path, spec: RobotSpecLike, camera_names: tuple[str, ...]) -> None:
        self.path = Path(run_dir) / self.directory
        self._cameras = tuple(camera_names)
        self._ring = RecordRing.create(int(self.buffer_mb * (1 << 20)), max_records=self.queue_size)
        # monotonic -> wall clock, so bag times are real times but ordered like our samples
        writer = _McapWriter(
            self.path, tuple(spec.joint_names), self._cameras, self.jpeg_quality, time.time() - time.monotonic()
        )
        try:
            self._proc = SinkProcess(writer, self._ring, "recorder")
        except BaseException:
            self._ring.close()
            self._ring = None
            raise
        self._ready_s = self._proc.ready_s
        log.info("recorder ready in %.2f s (pid %d): %s", self._ready_s, self._proc.proc.pid, self.path)

    def observation(self, obs: ObservationLike) -> None:
        if self._ring is None:
            return
        self._obs_index += 1
        images = obs.images if self._obs_index % self.image_every == 0 else {}
        frames = [images.get(cam) for cam in self._cameras]
        times = np.array([obs.timestamp] + [f.capture_time if f is not None else np.nan for f in frames])
        self._ring.put(
            OBS,
            [
                times,
                np.asarray(obs.state, np.float64).reshape(-1),
                *(np.asarray(f.image, np.uint8) if f is not None else _NO_IMAGE for f in frames),
            ],
        )

    def command(self, command: np.ndarray) -> None:
        if self._ring is not None:
            self._ring.put(CMD, [np.array([time.monotonic()]), np.asarray(command, np.float64).reshape(-1)])

    def chunk(self, chunk: np.ndarray) -> None:
        if self._ring is not None:
            self._ring.put(CHUNK, [np.array([time.monotonic()]), np.asarray(chunk, np.float32)])

    def close(self) -> dict[str, Any]:
        if self._ring is None or self._proc is None:
            return {}
        result = self._proc.stop()
        self.dropped = self._ring.dropped
        self._ring.close()
        self._ring, self._proc = None, None
        failed = result is None
        self.counts = dict(result or {})
        log.info("recording: %s (%s, dropped %d)", self.path, self.counts, self.dropped)
        out = {
            "recording": str(self.path),
            "recorded": dict(self.counts),
            "recording_dropped": self.dropped,
            "recording_ready_s": round(self._ready_s, 3),
        }
        if failed:
            out["recording_failed"] = True
        return out


_NO_IMAGE = np.zeros((0, 0, 0), np.uint8)


@dataclass
class _McapWriter:
    """The recorder process's side (pickled to it): ring records -> CDR messages in the bag."""

    path: Path
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    jpeg_quality: int
    mono_to_wall: float  # add to a monotonic time (s) for the wall-clock time

    def run(self, ring: RecordRing, conn: Any) -> None:
        import cv2
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self._cv2 = cv2
        self._ts = get_typestore(Stores.ROS2_HUMBLE)
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        w, ts = self._writer, self._ts
        self._conn = {
            STATE_TOPIC: w.add_connection(STATE_TOPIC, "sensor_msgs/msg/JointState", typestore=ts),
            COMMAND_TOPIC: w.add_connection(COMMAND_TOPIC, "sensor_msgs/msg/JointState", typestore=ts),
            CHUNK_TOPIC: w.add_connection(CHUNK_TOPIC, "std_msgs/msg/Float32MultiArray", typestore=ts),
        }
        for cam in self.cameras:
            self._conn[image_topic(cam)] = w.add_connection(
                image_topic(cam), "sensor_msgs/msg/CompressedImage", typestore=ts
            )
        self.counts: dict[str, int] = {}
        # warm-up: every message path once, written nowhere
        self._messages(OBS, [np.zeros(2), np.zeros(len(self.joint_names)), np.zeros((3, 8, 8), np.uint8)], dry=True)
        self._messages(CHUNK, [np.zeros(1), np.zeros((2, 2), np.float32)], dry=True)
        conn.send(("ready", {}))
        stopping = False
        while True:
            if ring.drain(self._handle) == 0:
                if stopping:
                    break
                try:
                    if conn.poll(0.005):
                        conn.recv()  # ("stop", None)
                        stopping = True
                except (EOFError, OSError):  # the control process is gone: close the bag cleanly
                    stopping, conn = True, None
        self._writer.close()
        if conn is not None:
            conn.send(("done", self.counts))

    def _handle(self, kind: int, arrays: list[np.ndarray]) -> None:
        try:
            for topic, t_ns, raw in self._messages(kind, arrays):
                self._writer.write(self._conn[topic], t_ns, raw)
                self.counts[topic] = self.counts.get(topic, 0) + 1
        except Exception:
            log.exception("recorder: failed to write a sample of kind %d", kind)

    def _ns(self, t_mono: float) -> int:
        return int((t_mono + self.mono_to_wall) * 1e9)

    def _header(self, t_ns: int, frame: str = ""):
        m = self._ts.types
        stamp = m["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
        return m["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)

    def _joint_state(self, t_ns: int, values: np.ndarray) -> bytes:
        n = len(values)
        names = list(self.joint_names)[:n] + [f"state_{i}" for i in range(len(self.joint_names), n)]
        msg = self._ts.types["sensor_msgs/msg/JointState"](
            header=self._header(t_ns),
            name=names,
            position=np.array(values, dtype=np.float64),
            velocity=np.zeros(0, dtype=np.float64),
            effort=np.zeros(0, dtype=np.float64),
        )
        return self._ts.serialize_cdr(msg, "sensor_msgs/msg/JointState")

    def _messages(self, kind: int, arrays: list[np.ndarray], dry: bool = False) -> list[tuple[str, int, bytes]]:
        """(topic, time ns, CDR bytes) of one ring record; ``arrays`` are views into the ring."""
        t_ns = self._ns(float(arrays[0][0]))
        if kind == OBS:
            out = [(STATE_TOPIC, t_ns, self._joint_state(t_ns, arrays[1]))]
            cameras = self.cameras if not dry else ("warmup",)
            for cam, capture_time, image in zip(cameras, arrays[0][1:], arrays[2:]):
                if image.size == 0:
                    continue
                cv2 = self._cv2
                bgr = cv2.cvtColor(np.ascontiguousarray(np.transpose(image, (1, 2, 0))), cv2.COLOR_RGB2BGR)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    continue
                c_ns = self._ns(float(capture_time))
                msg = self._ts.types["sensor_msgs/msg/CompressedImage"](
                    header=self._header(c_ns, cam), format="jpeg", data=jpg.reshape(-1).astype(np.uint8)
                )
                out.append((image_topic(cam), c_ns, self._ts.serialize_cdr(msg, "sensor_msgs/msg/CompressedImage")))
            return out
        if kind == CMD:
            return [(COMMAND_TOPIC, t_ns, self._joint_state(t_ns, arrays[1]))]
        if kind == CHUNK:
            m = self._ts.types
            chunk = np.array(arrays[1], dtype=np.float32)
            dims = [
                m["std_msgs/msg/MultiArrayDimension"](label="step", size=chunk.shape[0], stride=chunk.size),
                m["std_msgs/msg/MultiArrayDimension"](label="action", size=chunk.shape[1], stride=chunk.shape[1]),
            ]
            msg = m["std_msgs/msg/Float32MultiArray"](
                layout=m["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0), data=chunk.reshape(-1)
            )
            return [(CHUNK_TOPIC, t_ns, self._ts.serialize_cdr(msg, "std_msgs/msg/Float32MultiArray"))]
        return []
