"""A camera in its own process: frames with capture times in a shared-memory ring.

``CameraProcess`` is the control-side ``Camera``: ``start`` creates the ring (``services.shm.ShmRing``,
one ``(3, H, W) uint8`` image per slot) and spawns the producer; ``read`` hands out the newest
complete frame as a read-only view of its slot (no copy on the control thread: the one copy is the
inference snapshot's, which checks ``Frame.intact()`` afterwards) and checks its age. The ring has
``DEFAULT_SLOTS`` slots, so a frame stays intact for ``slots - 1`` camera periods after it was
captured (0.47 s at 15 fps, 0.23 s at 30 fps), far longer than one control tick. The producer runs in the child: a
``CaptureProducer`` builds the camera's in-process twin there (OpenCV, ROS image topic) and writes
each new frame; the sim camera renders from the physics process' shared state.

Faults: a producer that fails writes why into the ring and exits; a dead process (crash, kill -9)
is seen at the first ``read`` without a new frame. Both raise ``RobotError`` naming the camera.
The ring is created and unlinked here, so a child killed with -9 leaves no shared memory.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable
from functools import partial
from typing import Any, Protocol

from robots.base import Frame, RobotError, StaleDataError
from services.devproc import DeviceProcess
from services.logs import FILE_ONLY
from services.shm import ShmRing

log = logging.getLogger(__name__)

DEFAULT_SLOTS = 8
SPAWN_ALLOWANCE_S = 10.0  # start-up of a spawned camera process (imports), on top of a device's own timeout


class Producer(Protocol):
    """Runs in the camera process: start the source, set ``ring.status[STATE] = RUNNING``, write
    frames until ``stop()``; raise to fail (the message reaches the control side)."""

    def run(self, ring: ShmRing, stop: Callable[[], bool]) -> None: ...


def camera_main(
    producer: Producer, ring_name: str, fields: dict, slots: int, *, parent_alive: Callable[[], bool]
) -> None:
    """Camera process entry point (module level for ``spawn``)."""
    ring = ShmRing.attach(ring_name, fields, slots)
    ring.status[ShmRing.PID] = os.getpid()
    stop = lambda: bool(ring.status[ShmRing.STOP]) or not parent_alive()  # noqa: E731
    try:
        producer.run(ring, stop)
        ring.status[ShmRing.STATE] = ShmRing.STATE_STOPPED
    except BaseException as exc:  # noqa: BLE001 - reported through the ring
        ring.set_message(str(exc) if isinstance(exc, RobotError) else f"{type(exc).__name__}: {exc}")
        ring.status[ShmRing.STATE] = ShmRing.STATE_FAILED
        if not isinstance(exc, RobotError):
            log.exception("camera process failed", extra=FILE_ONLY)  # the parent names it in one fault line
        raise SystemExit(1)
    finally:
        ring.close(orphaned=not parent_alive())


class CameraProcess:
    """The control side of a camera whose producer runs in a spawned process (``Camera`` protocol)."""

    def __init__(
        self,
        name: str,
        width: int,
        height: int,
        max_frame_age_s: float,
        producer: Producer,
        start_timeout_s: float = 10.0,
        slots: int = DEFAULT_SLOTS,
    ) -> None:
        self.name = name
        self.width = int(width)
        self.height = int(height)
        self.max_frame_age_s = float(max_frame_age_s)
        self.producer = producer
        self.start_timeout_s = float(start_timeout_s)
        self.slots = int(slots)
        self.fields = {"image": ((3, self.height, self.width), "uint8")}
        self.ring: ShmRing | None = None
        self.proc: DeviceProcess | None = None
        self._last: Frame | None = None
        self._last_n = 0

    @property
    def pid(self) -> int | None:
        return None if self.proc is None else self.proc.pid

    def start(self, wait: bool = True) -> None:
        """Spawn the producer and wait until it runs (``RobotError`` with its reason otherwise);
        ``wait=False`` returns at once (a robot spawns all its cameras, then waits for frames)."""
        if self.ring is not None:
            return
        self.ring = ShmRing.create(self.fields, self.slots, tag="cam")
        self.proc = DeviceProcess(
            f"camera-{self.name}", camera_main, (self.producer, self.ring.name, self.fields, self.slots)
        )
        self.proc.start()
        self._last, self._last_n = None, 0
        if wait:
            self.wait_running()

    def wait_running(self) -> None:
        deadline = time.monotonic() + self.start_timeout_s
        while self.ring.status[ShmRing.STATE] != ShmRing.STATE_RUNNING:
            fault = self._fault()
            if fault is None and time.monotonic() > deadline:
                fault = f"camera {self.name}: process not running within {self.start_timeout_s} s"
            if fault is not None:
                self.stop()
                raise RobotError(fault)
            time.sleep(0.005)
        self.proc.ready()

    def _fault(self) -> str | None:
        ring, proc = self.ring, self.proc
        if ring is None or proc is None:
            return f"camera {self.name}: not started"
        if ring.status[ShmRing.STATE] == ShmRing.STATE_FAILED:
            return f"camera {self.name}: {_strip_name(ring.get_message(), self.name)}"
        if not proc.alive():
            return f"camera {self.name}: camera process (pid {proc.pid}) died: {proc.death_cause()}"
        return None

    def wait_for_frame(self, newer_than: float, timeout_s: float) -> Frame:
        """Block until a frame captured after ``newer_than`` (monotonic s) exists."""
        if self.ring is not None and self.ring.status[ShmRing.STATE] != ShmRing.STATE_RUNNING:
            self.wait_running()
        deadline = time.monotonic() + timeout_s
        while True:
            frame = self._newest()
            if frame is not None and frame.capture_time >= newer_than:
                return frame
            if time.monotonic() > deadline:
                raise RobotError(f"camera {self.name}: no fresh frame within {timeout_s} s")
            time.sleep(0.002)

    def _newest(self) -> Frame | None:
        """The newest frame (copied out of the ring once per new frame), or None before the first."""
        ring = self.ring
        if ring is None:
            if self._last is None:
                raise RobotError(f"camera {self.name}: not started")
            return self._last  # stopped: the last frame, which ages
        try:
            n, frame = self._view_newest(ring)
        except TimeoutError as exc:
            raise RobotError(f"camera {self.name}: {exc}") from None
        if n == self._last_n:  # nothing new: is the producer still there?
            fault = self._fault()
            if fault is not None:
                raise RobotError(fault)
            return self._last
        self._last_n, self._last = n, frame
        return frame

    @staticmethod
    def _view_newest(ring: ShmRing) -> tuple[int, Frame | None]:
        """(n, the newest frame as a view of its ring slot), (0, None) before the first."""
        n, capture, receive, index, image = ring.view_newest("image")
        return n, (Frame(image, capture, receive, index, partial(ring.intact, n)) if n else None)

    def read(self) -> Frame:
        frame = self._newest()
        if frame is None:
            raise RobotError(f"camera {self.name}: no frame yet")
        age = time.monotonic() - frame.capture_time
        if age > self.max_frame_age_s:
            note = self.ring.get_message() if self.ring is not None else ""
            raise StaleDataError(
                f"camera {self.name}: newest frame is {age:.3f} s old (max_frame_age_s {self.max_frame_age_s})"
                + (f" ({note})" if note else "")
            )
        return frame

    def request_stop(self) -> None:
        """Raise the stop flag without waiting (a robot stops all its devices at once, then joins)."""
        if self.ring is not None:
            self.ring.status[ShmRing.STOP] = 1

    def stop(self, deadline: float | None = None) -> None:
        """Stop the process (flag; SIGTERM, then SIGKILL, past ``deadline``) and unlink the ring.
        Idempotent."""
        ring, proc = self.ring, self.proc
        self.proc = None
        if proc is not None:
            proc.stop(
                request_stop=(lambda: ring.status.__setitem__(ShmRing.STOP, 1)) if ring is not None else None,
                deadline=deadline,
            )
        if ring is not None:
            if self._last is not None:  # the newest frame outlives the ring, in memory of its own (it ages)
                self._last = self._view_newest(ring)[1].owned()  # the producer is gone: it is intact
            self.ring = None
            ring.close()


def _strip_name(message: str, name: str) -> str:
    prefix = f"camera {name}: "
    return message[len(prefix) :] if message.startswith(prefix) else message


def start_in_process(
    camera: Any, twin: Callable[[], Any], open_timeout_s: float, previous: CameraProcess | None
) -> CameraProcess:
    """Start ``camera``'s in-process twin (``twin()``, built in the camera process) behind a
    ``CameraProcess`` (or restart ``previous``); ``RobotError`` with the twin's reason otherwise."""
    remote = previous or CameraProcess(
        camera.name,
        camera.width,
        camera.height,
        camera.max_frame_age_s,
        CaptureProducer(twin),
        start_timeout_s=open_timeout_s + SPAWN_ALLOWANCE_S,
    )
    remote.start()
    # the camera's contract (as in-process): start() returns once its first frame is there, so the
    # first read() never races the producer's first copy into the ring
    remote.wait_for_frame(newer_than=0.0, timeout_s=open_timeout_s)
    return remote


class CaptureProducer:
    """Runs a camera's in-process twin (``factory()``: OpenCV, ROS image topic ...) in the camera
    process and copies each new frame into the ring. A camera that can say when a new frame is
    there (``wait_for_new(timeout_s)``) is waited on; otherwise it is polled every ``poll_s``."""

    def __init__(self, factory: Callable[[], Any], poll_s: float = 0.002) -> None:
        self.factory = factory
        self.poll_s = float(poll_s)

    def run(self, ring: ShmRing, stop: Callable[[], bool]) -> None:
        camera = self.factory()
        camera.start()
        ring.status[ShmRing.STATE] = ShmRing.STATE_RUNNING
        wait = getattr(camera, "wait_for_new", None)
        last: tuple[int, float] | None = None
        noted = False
        try:
            while not stop():
                try:
                    frame = camera.read()
                except StaleDataError as exc:  # no new frame for a while: the control side sees the age
                    ring.set_message(str(exc))
                    noted, frame = True, None
                if frame is not None and (frame.index, frame.capture_time) != last:
                    ring.write(frame.capture_time, frame.receive_time, frame.index, image=frame.image)
                    last = (frame.index, frame.capture_time)
                    if noted:
                        ring.set_message("")
                        noted = False
                if wait is not None:
                    wait(0.05)
                else:
                    time.sleep(self.poll_s)
        finally:
            camera.stop()
