"""``record=lerobot``: rollouts as a LeRobotDataset (v3, LeRobot 0.6's format), written off the control loop.

Like ``record=mcap``, the control loop only copies each sample into a shared-memory ring
(``services.ring``); the writer is a sink process of its own. That process runs under LeRobot's
interpreter (``record.python``, default ``.venvs/lerobot/bin/python``: LeRobot needs Python >= 3.12), so the
dataset is written by LeRobot's own ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize`` and loads with ``LeRobotDataset`` and trains with ``lerobot-train`` unchanged.

One frame per control tick (a command): ``observation.state`` (the newest observation's state),
``observation.images.<camera>`` (its frames, as images or video), ``action`` (the command sent, i.e. after
the safety filter), ``chunk_index`` (how many chunks had arrived when it was sent), ``timestamp`` from the
command times, ``task`` (``record.prompt``). Episode boundaries: ``episode_end(success)`` when the control
loop calls it, else the run is one episode.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.knobs import PositiveFloat, PositiveInt
from services.ring import RecordRing, SinkProcess

if TYPE_CHECKING:
    from robots.base import Observation, RobotSpec

log = logging.getLogger(__name__)
REPO = Path(__file__).resolve().parents[2]
OBS, CMD, CHUNK, EPISODE = 1, 2, 3, 4


class LeRobotRecorder:
    def __init__(self, directory: str = "lerobot_dataset", repo_id: str = "local/rollouts", fps: PositiveInt = 20,
                 prompt: str = "", use_videos: bool = False, python: str | None = ".venvs/lerobot/bin/python",
                 queue_size: PositiveInt = 4000, buffer_mb: PositiveFloat = 128.0) -> None:
        self.directory, self.repo_id, self.fps, self.prompt = directory, repo_id, int(fps), prompt
        self.use_videos = bool(use_videos)
        python_path = Path(python) if python else None
        self.python = str(python_path if python_path is None or python_path.is_absolute() else REPO / python_path) \
            if python else None
        self.queue_size, self.buffer_mb = queue_size, buffer_mb
        self._ring: RecordRing | None = None
        self._proc: SinkProcess | None = None
        self._chunks = 0

    def start(self, run_dir: Path, spec: RobotSpec, camera_names: tuple[str, ...]) -> None:
        self.path = Path(run_dir) / self.directory
        self._cameras = tuple(camera_names)
        self._ring = RecordRing.create(int(self.buffer_mb * (1 << 20)), max_records=self.queue_size)
        writer = _DatasetWriter(self.path, self.repo_id, self.fps, tuple(spec.joint_names), self._cameras,
                                self.prompt, self.use_videos)
        try:
            self._proc = SinkProcess(writer, self._ring, "lerobot-recorder", ready_timeout_s=600.0, python=self.python)
        except BaseException:
            self._ring.close()
            self._ring = None
            raise
        log.info("lerobot recorder ready in %.2f s: %s", self._proc.ready_s, self.path)

    def observation(self, obs: Observation) -> None:
        if self._ring is None:
            return
        frames = [obs.images.get(cam) for cam in self._cameras]
        self._ring.put(OBS, [np.array([obs.timestamp]), np.asarray(obs.state, np.float32).reshape(-1),
                             *(np.asarray(f.image, np.uint8) if f is not None else _NO_IMAGE for f in frames)])

    def command(self, command: np.ndarray) -> None:
        if self._ring is not None:
            self._ring.put(CMD, [np.array([time.monotonic(), self._chunks]), np.asarray(command, np.float32).reshape(-1)])

    def chunk(self, chunk: np.ndarray) -> None:
        self._chunks += 1

    def episode_end(self, success: bool = False) -> None:
        if self._ring is not None:
            self._ring.put(EPISODE, [np.array([time.monotonic(), float(bool(success))])])

    def close(self) -> dict[str, Any]:
        if self._ring is None or self._proc is None:
            return {}
        result = self._proc.stop()
        dropped = self._ring.dropped
        self._ring.close()
        self._ring, self._proc = None, None
        out = {"lerobot_dataset": str(self.path), "lerobot_recorded": dict(result or {}), "recording_dropped": dropped}
        if result is None:
            out["recording_failed"] = True
        return out


_NO_IMAGE = np.zeros((0, 0, 0), np.uint8)


@dataclass
class _DatasetWriter:
    """The sink process's side (pickled to it, runs under LeRobot's interpreter)."""

    path: Path
    repo_id: str
    fps: int
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    prompt: str
    use_videos: bool

    def run(self, ring: RecordRing, conn: Any) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self._cls = LeRobotDataset
        self.ds = None
        self.last_obs: list[np.ndarray] | None = None
        self.counts = {"frames": 0, "episodes": 0, "successes": 0}
        self.pending = 0
        conn.send(("ready", {}))
        stopping = False
        while True:
            if ring.drain(self._handle) == 0:
                if stopping:
                    break
                try:
                    if conn.poll(0.005):
                        conn.recv()
                        stopping = True
                except (EOFError, OSError):
                    stopping, conn = True, None
        if self.pending:
            self.ds.save_episode()
            self.counts["episodes"] += 1
        if self.ds is not None:
            self.ds.finalize()
        if conn is not None:
            conn.send(("done", self.counts))

    def _create(self, state_dim: int, action_dim: int, images: list[np.ndarray]) -> None:
        names = list(self.joint_names)
        features = {
            "observation.state": {"dtype": "float32", "shape": (state_dim,),
                                  "names": names[:state_dim] if len(names) >= state_dim else None},
            "action": {"dtype": "float32", "shape": (action_dim,),
                       "names": names[:action_dim] if len(names) >= action_dim else None},
            "chunk_index": {"dtype": "int64", "shape": (1,), "names": None},
        }
        for cam, img in zip(self.cameras, images):
            if img.size:
                c, h, w = img.shape
                features[f"observation.images.{cam}"] = {"dtype": "video" if self.use_videos else "image",
                                                          "shape": (h, w, c), "names": ["height", "width", "channels"]}
        self.ds = self._cls.create(self.repo_id, self.fps, features, root=self.path, robot_type="sim",
                                   use_videos=self.use_videos)

    def _handle(self, kind: int, arrays: list[np.ndarray]) -> None:
        try:
            if kind == OBS:
                self.last_obs = [np.array(a) for a in arrays]
            elif kind == CMD and self.last_obs is not None:
                state, images = self.last_obs[1], self.last_obs[2:]
                if self.ds is None:
                    self._create(state.shape[0], arrays[1].shape[0], images)
                frame = {"observation.state": state.astype(np.float32), "action": np.array(arrays[1], np.float32),
                         "chunk_index": np.array([int(arrays[0][1])], np.int64), "task": self.prompt or "rollout"}
                for cam, img in zip(self.cameras, images):
                    key = f"observation.images.{cam}"
                    if key in self.ds.features:
                        frame[key] = np.transpose(img, (1, 2, 0)) if img.size else np.zeros(
                            self.ds.features[key]["shape"], np.uint8)
                self.ds.add_frame(frame)
                self.pending += 1
                self.counts["frames"] += 1
            elif kind == EPISODE and self.pending:
                self.ds.save_episode()
                self.pending = 0
                self.counts["episodes"] += 1
                self.counts["successes"] += int(arrays[0][1] > 0.5)
        except Exception:
            log.exception("lerobot recorder: failed to write a sample of kind %d", kind)
