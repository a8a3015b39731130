"""``record=lerobot``: rollouts as a LeRobotDataset (v3, LeRobot 0.6's format), written off the control loop.

Like ``record=mcap``, the control loop only copies each sample into a shared-memory ring
(``services.ring``); the writer is a sink process of its own. That process runs under LeRobot's
interpreter (``record.python``, default ``.venvs/lerobot/bin/python``: LeRobot needs Python >= 3.12), so the
dataset is written by LeRobot's own ``LeRobotDataset.create`` / ``add_frame`` / ``save_episode`` /
``finalize`` and loads with ``LeRobotDataset`` and trains with ``lerobot-train`` unchanged.

One frame per command sent (a control tick, or a hold on an exit path):

- ``observation.state`` and ``observation.images.<camera>``: the newest observation's state and frames;
- ``action``: the command sent, i.e. after the safety filter;
- ``proposed_action``: the action the policy's chunk proposed for that tick, before the safety filter (the
  command itself where the policy proposed nothing: ``held``);
- ``held``: no proposed action (a hold: no chunk yet, a used-up chunk in sync mode, an exit path);
- ``chunk_id`` / ``chunk_step``: which chunk produced the action and its index in that chunk (-1 / -1 on a hold);
- ``guidance``: the guidance that chunk was sampled with, a code into ``meta/guidance_codes.json``
  (``algorithm.guidance``'s values in order; -1 on a hold);
- ``command_time``: seconds since the episode's first command (monotonic clock; LeRobot's own ``timestamp``
  column is ``frame_index / fps``, as its loader requires);
- ``next.done`` / ``next.success``: true on an episode's last frame / on the last frame of a successful episode
  (LeRobot's column names for episode ends and outcomes);
- ``task``: ``record.prompt``.

Episodes are split where the control loop ends one (``annotate("episode_end", success=...)``, or
``episode_end(success)``); a run cut short ends its open episode on close. The control step calls
:meth:`LeRobotRecorder.annotate` before each send (the proposed action, its chunk and index) and for every
chunk it accepts (its guidance).
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.errors import ConfigError
from services.guidance import Guidance
from services.knobs import PositiveFloat, PositiveInt
from services.lerobot_python import probe_python, resolve_python
from services.record import run_subdirectory_problem
from services.ring import RecordRing, SinkProcess
from services.robot_data import ObservationLike, RobotSpecLike

log = logging.getLogger(__name__)
WRITER_MODULE = __name__  # the dataset writer runs this module's code in LeRobot's interpreter
OBS, CMD, CHUNK, EPISODE = 1, 2, 3, 4


class LeRobotRecorder:
    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check of what the sink process would otherwise fail on after the run started:
        its folder (new, inside the run directory), a repo id, and LeRobot's interpreter (it exists and
        imports lerobot; ``make lerobot-env`` builds the default one)."""
        why = run_subdirectory_problem(node.get("directory", "lerobot_dataset"))
        if why:
            raise ConfigError(f"{path}.directory: {why}")
        if not str(node.get("repo_id", "local/rollouts")).strip():
            raise ConfigError(f"{path}.repo_id: empty (LeRobotDataset.create needs one, e.g. local/rollouts)")
        python = node.get("python", ".venvs/lerobot/bin/python")
        if not python:
            return  # this interpreter writes (it must import lerobot: checked when the sink starts)
        resolved = resolve_python(str(python))
        if not os.path.exists(resolved):
            raise ConfigError(
                f"{path}.python: {resolved} does not exist (`make lerobot-env` builds .venvs/lerobot; "
                "or point record.python at an interpreter with lerobot 0.6)"
            )
        try:
            probe_python(resolved, WRITER_MODULE)
        except ValueError as exc:
            raise ConfigError(f"{path}.python: {exc}") from None

    def __init__(
        self,
        directory: str = "lerobot_dataset",
        repo_id: str = "local/rollouts",
        fps: PositiveInt = 20,
        prompt: str = "",
        use_videos: bool = False,
        python: str | None = ".venvs/lerobot/bin/python",
        queue_size: PositiveInt = 4000,
        buffer_mb: PositiveFloat = 128.0,
    ) -> None:
        self.directory, self.repo_id, self.fps, self.prompt = directory, repo_id, int(fps), prompt
        self.use_videos = bool(use_videos)
        self.python = resolve_python(python)
        self.queue_size, self.buffer_mb = queue_size, buffer_mb
        self._ring: RecordRing | None = None
        self._proc: SinkProcess | None = None
        self._guidance: dict[int, int] = {}  # chunk id -> guidance code (the newest chunks)
        self._planned: tuple[np.ndarray | None, int, int] | None = None  # the next command's proposal

    def start(self, run_dir: Path, spec: RobotSpecLike, camera_names: tuple[str, ...]) -> None:
        self.path = Path(run_dir) / self.directory
        self._cameras = tuple(camera_names)
        self._ring = RecordRing.create(int(self.buffer_mb * (1 << 20)), max_records=self.queue_size)
        writer = _DatasetWriter(
            self.path,
            self.repo_id,
            self.fps,
            tuple(spec.joint_names),
            self._cameras,
            self.prompt,
            self.use_videos,
            GUIDANCE_NAMES,
        )
        try:
            self._proc = SinkProcess(writer, self._ring, "lerobot-recorder", ready_timeout_s=600.0, python=self.python)
        except BaseException:
            self._ring.close()
            self._ring = None
            raise
        log.info("lerobot recorder ready in %.2f s: %s", self._proc.ready_s, self.path)

    def observation(self, obs: ObservationLike) -> None:
        if self._ring is None:
            return
        frames = [obs.images.get(cam) for cam in self._cameras]
        success = float(bool((obs.info or {}).get("success", False)))
        self._ring.put(
            OBS,
            [
                np.array([obs.timestamp, success]),
                np.asarray(obs.state, np.float32).reshape(-1),
                *(np.asarray(f.image, np.uint8) if f is not None else _NO_IMAGE for f in frames),
            ],
        )

    def annotate(self, event: str, **fields: Any) -> None:
        """The control step's extra facts: ``planned`` (action, chunk_id, index: the proposal the next
        command comes from), ``chunk`` (chunk_id, guidance), ``episode_end`` (success)."""
        if event == "planned":
            self._planned = (fields.get("action"), int(fields.get("chunk_id", -1)), int(fields.get("index", -1)))
        elif event == "chunk":
            guidance = str(fields.get("guidance", ""))
            self._guidance[int(fields["chunk_id"])] = (
                GUIDANCE_NAMES.index(guidance) if guidance in GUIDANCE_NAMES else -1
            )
            while len(self._guidance) > 64:
                del self._guidance[min(self._guidance)]
        elif event == "episode_end":
            self.episode_end(bool(fields.get("success", False)))

    def command(self, command: np.ndarray) -> None:
        planned, self._planned = self._planned, None
        if self._ring is None:
            return
        command = np.asarray(command, np.float32).reshape(-1)
        action, chunk_id, index = planned if planned is not None else (None, -1, -1)
        held = action is None
        if held:
            chunk_id = index = -1
        proposed = command if held else np.asarray(action, np.float32).reshape(-1)
        guidance = -1 if held else self._guidance.get(chunk_id, -1)
        self._ring.put(CMD, [np.array([time.monotonic(), chunk_id, index, guidance, float(held)]), command, proposed])

    def chunk(self, chunk: np.ndarray) -> None:
        pass

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
GUIDANCE_NAMES: tuple[str, ...] = tuple(str(g) for g in Guidance)


@dataclass
class _DatasetWriter:
    """The sink process's side (pickled to it, runs under LeRobot's interpreter).

    A frame is added one command late: whether it ends its episode (``next.done``) and the episode's
    outcome (``next.success``) are known only when the next command or the episode end arrives."""

    path: Path
    repo_id: str
    fps: int
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    prompt: str
    use_videos: bool
    guidance_names: tuple[str, ...]

    def run(self, ring: RecordRing, conn: Any) -> None:
        from lerobot.datasets.lerobot_dataset import LeRobotDataset

        self._cls = LeRobotDataset
        self.ds = None
        self.last_obs: list[np.ndarray] | None = None
        self.frame: dict[str, Any] | None = None  # the newest frame, not yet added
        self.t0: float | None = None  # the episode's first command time
        self.counts = {"frames": 0, "episodes": 0, "successes": 0, "held": 0}
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
        try:  # a run cut short (no episode end): its open episode ends here
            self._end_episode(bool(self.last_obs is not None and self.last_obs[0][1] > 0.5))
        except Exception:
            log.exception("lerobot recorder: failed to save the last episode")
        if self.ds is not None:
            self.ds.finalize()
            (self.path / "meta" / "guidance_codes.json").write_text(json.dumps(list(self.guidance_names)))
        if conn is not None:
            conn.send(("done", self.counts))

    def _create(self, state_dim: int, action_dim: int, images: list[np.ndarray]) -> None:
        names = list(self.joint_names)
        joint = lambda dim: names[:dim] if len(names) >= dim else None  # noqa: E731
        one = lambda dtype, name: {"dtype": dtype, "shape": (1,), "names": [name]}  # noqa: E731
        features = {
            "observation.state": {"dtype": "float32", "shape": (state_dim,), "names": joint(state_dim)},
            "action": {"dtype": "float32", "shape": (action_dim,), "names": joint(action_dim)},
            "proposed_action": {"dtype": "float32", "shape": (action_dim,), "names": joint(action_dim)},
            "held": one("bool", "held"),
            "chunk_id": one("int64", "chunk_id"),
            "chunk_step": one("int64", "chunk_step"),
            "guidance": one("int64", "guidance"),
            "command_time": one("float32", "command_time"),
            "next.done": one("bool", "done"),
            "next.success": one("bool", "success"),
        }
        for cam, img in zip(self.cameras, images):
            if img.size:
                c, h, w = img.shape
                features[f"observation.images.{cam}"] = {
                    "dtype": "video" if self.use_videos else "image",
                    "shape": (h, w, c),
                    "names": ["height", "width", "channels"],
                }
        self.ds = self._cls.create(
            self.repo_id, self.fps, features, root=self.path, robot_type="sim", use_videos=self.use_videos
        )

    def _add(self, done: bool, success: bool) -> None:
        if self.frame is None:
            return
        frame, self.frame = self.frame, None
        frame["next.done"] = np.array([done])
        frame["next.success"] = np.array([done and success])
        self.ds.add_frame(frame)
        self.pending += 1
        self.counts["frames"] += 1

    def _end_episode(self, success: bool) -> None:
        self._add(True, success)
        self.t0 = None
        if self.pending:
            self.ds.save_episode()
            self.pending = 0
            self.counts["episodes"] += 1
            self.counts["successes"] += int(success)

    def _handle(self, kind: int, arrays: list[np.ndarray]) -> None:
        try:
            if kind == OBS:
                self.last_obs = [np.array(a) for a in arrays]
            elif kind == CMD and self.last_obs is not None:
                state, images = self.last_obs[1], self.last_obs[2:]
                if self.ds is None:
                    self._create(state.shape[0], arrays[1].shape[0], images)
                self._add(False, False)
                t, chunk_id, index, guidance, held = (float(v) for v in arrays[0])
                self.t0 = t if self.t0 is None else self.t0
                frame = {
                    "observation.state": state.astype(np.float32),
                    "action": np.array(arrays[1], np.float32),
                    "proposed_action": np.array(arrays[2], np.float32),
                    "held": np.array([held > 0.5]),
                    "chunk_id": np.array([int(chunk_id)], np.int64),
                    "chunk_step": np.array([int(index)], np.int64),
                    "guidance": np.array([int(guidance)], np.int64),
                    "command_time": np.array([t - self.t0], np.float32),
                    "task": self.prompt or "rollout",
                }
                for cam, img in zip(self.cameras, images):
                    key = f"observation.images.{cam}"
                    if key in self.ds.features:
                        frame[key] = (
                            np.transpose(img, (1, 2, 0))
                            if img.size
                            else np.zeros(self.ds.features[key]["shape"], np.uint8)
                        )
                self.frame = frame
                self.counts["held"] += int(held > 0.5)
            elif kind == EPISODE:
                self._end_episode(bool(arrays[0][1] > 0.5))
        except Exception:
            log.exception("lerobot recorder: failed to write a sample of kind %d", kind)
