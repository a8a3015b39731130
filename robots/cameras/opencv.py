"""OpenCV cameras: a V4L2 device (path or index) or a video file, read by a background thread.

The thread keeps only the newest frame, already converted to what the engine consumes
(resized with INTER_AREA, BGR -> RGB, CHW uint8), with its capture time (``time.monotonic()``,
seconds). ``read`` never blocks on the device: it returns the newest frame or raises
``StaleDataError`` when it is older than ``max_frame_age_s``. A device that cannot be opened, or
gives no first frame within ``open_timeout_s``, is a ``RobotError`` naming it.

Video files play at their own frame rate (or ``fps`` when given) so they behave like a live
camera, and loop when ``loop`` is true (otherwise the frames go stale at the end).

``process`` (default true): the capture thread runs in a camera process of its own and frames
reach this one through a shared-memory ring (``robots/cameras/process.py``), so no capture thread
competes with the control thread; false keeps the thread in this process.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from typing import Any

import cv2
import numpy as np

from robots.base import Frame, RobotError, StaleDataError
from robots.cameras.base import FrameSpec
from robots.cameras.process import CameraProcess, start_in_process
from services.errors import ConfigError
from services.knobs import PositiveFloat

log = logging.getLogger(__name__)


def to_chw_rgb(bgr: np.ndarray, width: int, height: int) -> np.ndarray:
    """(H, W, 3) BGR uint8 of any size -> (3, height, width) RGB uint8 (INTER_AREA resize)."""
    if bgr.shape[1] != width or bgr.shape[0] != height:
        bgr = cv2.resize(bgr, (width, height), interpolation=cv2.INTER_AREA)
    return np.ascontiguousarray(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB).transpose(2, 0, 1))


def _device(device: str | int) -> str | int:
    """A device index given as a string ("0") is the index."""
    return int(device) if isinstance(device, str) and device.strip().isdigit() else device


@contextlib.contextmanager
def _decoder_log() -> Iterator[list[str]]:
    """Capture what the decoder (FFmpeg, in C) writes to file descriptor 2 while probing a file, so
    that a config error stays one line; the yielded list gets its last line."""
    said: list[str] = []
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield said
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines = sink.read().decode(errors="replace").strip().splitlines()
            if lines:
                said.append(" ".join(lines[-1].split()))


def _is_file(device: str | int) -> bool:
    """A path outside /dev is a video file; an index or a /dev path is a V4L2 device."""
    return isinstance(device, str) and not device.startswith("/dev/")


class OpenCVCamera:
    """Latest-frame camera over ``cv2.VideoCapture``."""

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check, before any process exists: the FOURCC is four characters, and a video
        file exists, opens and yields a first frame. A V4L2 device is hardware that may be plugged
        in later: it is checked when the camera starts (a robot fault naming it)."""
        fourcc = node.get("fourcc")
        if fourcc is not None and len(str(fourcc)) != 4:
            raise ConfigError(f"{path}.fourcc: a FOURCC code is 4 characters (e.g. MJPG, YUYV), got {fourcc!r}")
        device = _device(node.get("device", 0))
        if not _is_file(device):
            return
        if not os.path.isfile(str(device)):
            where = "" if os.path.isabs(str(device)) else f" (relative to {os.getcwd()})"
            raise ConfigError(f"{path}.device: video file {device} does not exist{where}")
        with _decoder_log() as said:
            cap = cv2.VideoCapture(str(device))
            try:
                opened = cap.isOpened()
                ok = opened and cap.read()[0]
            finally:
                cap.release()
        why = f" (decoder: {said[0]})" if said else ""
        if not opened:
            raise ConfigError(f"{path}.device: OpenCV cannot open {device} as a video{why}")
        if not ok:
            raise ConfigError(f"{path}.device: {device} opens but yields no frame (empty or not a video){why}")

    def __init__(
        self,
        frames: FrameSpec,
        host: Any = None,
        *,
        device: str | int = 0,
        fps: PositiveFloat | None = None,
        fourcc: str | None = None,
        loop: bool = False,
        open_timeout_s: PositiveFloat = 5.0,
        process: bool = True,
    ) -> None:
        frames.bind(self)
        device = _device(device)
        self.device = device
        self.fps = None if fps is None else float(fps)
        self.fourcc = fourcc
        self.loop = bool(loop)
        self.open_timeout_s = float(open_timeout_s)
        self.is_file = _is_file(device)
        self.process = bool(process)
        self._remote: CameraProcess | None = None
        self._new = threading.Event()
        self._lock = threading.Lock()
        self._frame: Frame | None = None
        self._error: BaseException | None = None
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread: threading.Thread | None = None
        self.frames_captured = 0

    # ------------------------------------------------------------------ lifecycle
    def _open(self) -> cv2.VideoCapture:
        if self.is_file:
            if not os.path.isfile(str(self.device)):
                raise RobotError(f"camera {self.name}: video file {self.device} does not exist")
            cap = cv2.VideoCapture(str(self.device))
        else:
            if isinstance(self.device, str) and not os.path.exists(self.device):
                raise RobotError(
                    f"camera {self.name}: device {self.device} does not exist (check udev rules / cabling)"
                )
            cap = cv2.VideoCapture(self.device, cv2.CAP_V4L2)
        if not cap.isOpened():
            cap.release()
            raise RobotError(f"camera {self.name}: cannot open {self.device}")
        if not self.is_file:
            if self.fourcc:
                cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*self.fourcc))
            if self.fps:
                cap.set(cv2.CAP_PROP_FPS, self.fps)
            cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # newest frame, not a queue of old ones
        return cap

    def start(self) -> None:
        """Open the device and wait for the first frame (at most ``open_timeout_s``)."""
        if self.process:
            twin = functools.partial(
                OpenCVCamera,
                self.frames,
                device=self.device,
                fps=self.fps,
                fourcc=self.fourcc,
                loop=self.loop,
                open_timeout_s=self.open_timeout_s,
                process=False,
            )
            self._remote = start_in_process(self, twin, self.open_timeout_s, self._remote)
            return
        if self._thread is not None:
            return
        self._stop.clear()
        self._first.clear()
        self._error = None
        self._thread = threading.Thread(target=self._run, name=f"camera-{self.name}", daemon=True)
        self._thread.start()
        if not self._first.wait(self.open_timeout_s):
            self.stop()
            raise RobotError(f"camera {self.name}: no frame from {self.device} within {self.open_timeout_s:.1f} s")
        if self._error is not None and self._frame is None:
            err = self._error
            self.stop()
            if isinstance(err, RobotError):
                raise err
            raise RobotError(f"camera {self.name}: {self.device} failed: {err}") from err

    def wait_for_new(self, timeout_s: float) -> bool:
        """Block until the capture thread produced a frame since the last call (or timeout)."""
        got = self._new.wait(timeout_s)
        self._new.clear()
        return got

    def stop(self) -> None:
        if self._remote is not None:
            self._remote.stop()
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)

    # ------------------------------------------------------------------ capture thread
    def _run(self) -> None:
        try:
            cap = self._open()
        except BaseException as exc:  # handed to start()/read()
            self._error = exc
            self._first.set()
            return
        try:
            period = 0.0
            if self.is_file:
                file_fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
                rate = self.fps or (file_fps if file_fps > 0 else 30.0)
                period = 1.0 / rate
            t_next = time.monotonic()
            index = 0
            while not self._stop.is_set():
                ok, bgr = cap.read()
                t_capture = time.monotonic()
                if not ok:
                    if self.is_file and self.loop and index > 0:
                        cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
                        continue
                    if self.is_file:
                        log.info("camera %s: end of %s after %d frames", self.name, self.device, index)
                        self._error = RobotError(f"camera {self.name}: end of video {self.device}")
                    else:
                        self._error = RobotError(f"camera {self.name}: read from {self.device} failed")
                    self._first.set()
                    return
                image = to_chw_rgb(bgr, self.width, self.height)
                with self._lock:
                    self._frame = Frame(image=image, capture_time=t_capture, receive_time=time.monotonic(), index=index)
                index += 1
                self.frames_captured = index
                self._first.set()
                self._new.set()
                if period:
                    t_next += period
                    delay = t_next - time.monotonic()
                    if delay < -period:
                        t_next = time.monotonic()
                    elif delay > 0:
                        self._stop.wait(delay)
        finally:
            cap.release()

    # ------------------------------------------------------------------ reading
    def read(self) -> Frame:
        if self._remote is not None:
            return self._remote.read()
        with self._lock:
            frame = self._frame
        if frame is None:
            if self.process:
                raise RobotError(f"camera {self.name}: not started")
            if self._error is not None:
                raise RobotError(f"camera {self.name}: {self._error}")
            raise RobotError(f"camera {self.name}: no frame yet from {self.device} (started?)")
        age = time.monotonic() - frame.capture_time
        if age > self.max_frame_age_s:
            why = f" ({self._error})" if self._error is not None else ""
            raise StaleDataError(
                f"camera {self.name}: newest frame is {age:.3f} s old (max_frame_age_s {self.max_frame_age_s}){why}"
            )
        return frame
