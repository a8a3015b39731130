"""Episode recording (``record=mcap``): observations, commands and chunks as ROS 2 messages in an
MCAP-backed rosbag2 (opens in Foxglove; reads back with the ``mcap`` and ``rosbags`` readers).

The control loop only enqueues references (``put_nowait``); JPEG encoding, CDR serialization and
disk writes happen in the recorder's own thread, so recording never blocks a tick. When the
queue is full the sample is dropped and counted, never waited for.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.record import CHUNK_TOPIC, COMMAND_TOPIC, STATE_TOPIC, image_topic

if TYPE_CHECKING:
    from robots.base import Observation, RobotSpec

log = logging.getLogger(__name__)


class McapRecorder:
    def __init__(self, directory: str = "recording", jpeg_quality: int = 85, image_every: int = 1,
                 queue_size: int = 2000) -> None:
        self.directory = directory
        self.jpeg_quality = jpeg_quality
        self.image_every = max(1, image_every)
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self.dropped = 0
        self.counts: dict[str, int] = {}
        self._obs_index = 0
        self._thread: threading.Thread | None = None
        # monotonic -> wall clock, so bag times are real times but ordered like our samples
        self._mono_to_wall = time.time() - time.monotonic()

    # ------------------------------------------------------------------ control side
    def start(self, run_dir: Path, spec: RobotSpec, camera_names: tuple[str, ...]) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer
        from rosbags.typesys import Stores, get_typestore

        self.path = Path(run_dir) / self.directory
        self._ts = get_typestore(Stores.ROS2_HUMBLE)
        self._spec = spec
        self._writer = Writer(self.path, version=9, storage_plugin=StoragePlugin.MCAP)
        self._writer.open()
        w, ts = self._writer, self._ts
        self._conn = {
            STATE_TOPIC: w.add_connection(STATE_TOPIC, "sensor_msgs/msg/JointState", typestore=ts),
            COMMAND_TOPIC: w.add_connection(COMMAND_TOPIC, "sensor_msgs/msg/JointState", typestore=ts),
            CHUNK_TOPIC: w.add_connection(CHUNK_TOPIC, "std_msgs/msg/Float32MultiArray", typestore=ts),
        }
        for cam in camera_names:
            self._conn[image_topic(cam)] = w.add_connection(
                image_topic(cam), "sensor_msgs/msg/CompressedImage", typestore=ts
            )
        self._thread = threading.Thread(target=self._write_forever, name="mcap-recorder", daemon=True)
        self._thread.start()

    def _put(self, item: tuple) -> None:
        try:
            self._queue.put_nowait(item)
        except queue.Full:
            self.dropped += 1

    def observation(self, obs: Observation) -> None:
        self._obs_index += 1
        images = obs.images if self._obs_index % self.image_every == 0 else {}
        self._put(("obs", obs.timestamp, obs.state, {k: (f.image, f.capture_time) for k, f in images.items()}))

    def command(self, command: np.ndarray) -> None:
        self._put(("cmd", time.monotonic(), command))

    def chunk(self, chunk: np.ndarray) -> None:
        self._put(("chunk", time.monotonic(), chunk))

    # ------------------------------------------------------------------ writer thread
    def _ns(self, t_mono: float) -> int:
        return int((t_mono + self._mono_to_wall) * 1e9)

    def _header(self, t_ns: int, frame: str = ""):
        m = self._ts.types
        stamp = m["builtin_interfaces/msg/Time"](sec=t_ns // 1_000_000_000, nanosec=t_ns % 1_000_000_000)
        return m["std_msgs/msg/Header"](stamp=stamp, frame_id=frame)

    def _joint_state(self, t_ns: int, values: np.ndarray):
        n = len(values)
        names = list(self._spec.joint_names)[:n] + [f"state_{i}" for i in range(len(self._spec.joint_names), n)]
        return self._ts.types["sensor_msgs/msg/JointState"](
            header=self._header(t_ns), name=names, position=np.asarray(values, dtype=np.float64),
            velocity=np.zeros(0, dtype=np.float64), effort=np.zeros(0, dtype=np.float64),
        )

    def _write(self, topic: str, t_ns: int, msg: Any, typename: str) -> None:
        self._writer.write(self._conn[topic], t_ns, self._ts.serialize_cdr(msg, typename))
        self.counts[topic] = self.counts.get(topic, 0) + 1

    def _handle(self, item: tuple) -> None:
        import cv2

        kind, t, payload = item[0], item[1], item[2]
        t_ns = self._ns(t)
        if kind == "obs":
            self._write(STATE_TOPIC, t_ns, self._joint_state(t_ns, payload), "sensor_msgs/msg/JointState")
            for cam, (image, capture_time) in item[3].items():
                bgr = cv2.cvtColor(np.ascontiguousarray(np.transpose(image, (1, 2, 0))), cv2.COLOR_RGB2BGR)
                ok, jpg = cv2.imencode(".jpg", bgr, [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality])
                if not ok:
                    continue
                c_ns = self._ns(capture_time)
                msg = self._ts.types["sensor_msgs/msg/CompressedImage"](
                    header=self._header(c_ns, cam), format="jpeg", data=jpg.reshape(-1).astype(np.uint8)
                )
                self._write(image_topic(cam), c_ns, msg, "sensor_msgs/msg/CompressedImage")
        elif kind == "cmd":
            self._write(COMMAND_TOPIC, t_ns, self._joint_state(t_ns, payload), "sensor_msgs/msg/JointState")
        elif kind == "chunk":
            m = self._ts.types
            chunk = np.asarray(payload, dtype=np.float32)
            dims = [
                m["std_msgs/msg/MultiArrayDimension"](label="step", size=chunk.shape[0], stride=chunk.size),
                m["std_msgs/msg/MultiArrayDimension"](label="action", size=chunk.shape[1], stride=chunk.shape[1]),
            ]
            msg = m["std_msgs/msg/Float32MultiArray"](
                layout=m["std_msgs/msg/MultiArrayLayout"](dim=dims, data_offset=0), data=chunk.reshape(-1)
            )
            self._write(CHUNK_TOPIC, t_ns, msg, "std_msgs/msg/Float32MultiArray")

    def _write_forever(self) -> None:
        while True:
            item = self._queue.get()
            if item is None:
                return
            try:
                self._handle(item)
            except Exception:
                log.exception("recorder: failed to write a %s sample", item[0])

    def close(self) -> dict[str, Any]:
        if self._thread is None:
            return {}
        self._queue.put(None)
        self._thread.join(timeout=30)
        self._thread = None
        self._writer.close()
        log.info("recording: %s (%s, dropped %d)", self.path, self.counts, self.dropped)
        return {"recording": str(self.path), "recorded": dict(self.counts), "recording_dropped": self.dropped}
