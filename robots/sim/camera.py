"""A MuJoCo camera of the sim robot, rendered offscreen from physics snapshots.

Rendering never touches the physics ``MjData``: each renderer owns its own ``MjData`` (and GL
context), copies ``qpos``/``qvel`` of a snapshot into it and runs ``mj_forward``. In real time a
camera renders at its own ``fps`` while physics keeps ticking, and a control tick never waits for
a frame: in its own process (the robot's ``device_processes``, default: it attaches the physics
process' shared state and writes into a frame ring, ``robots/cameras/process.py``) or in a thread
of the control process (``device_processes=false``). In lockstep mode the robot renders
synchronously inside ``read()`` (deterministic images).
"""

from __future__ import annotations

import atexit
import functools
import logging
import os
import threading
import time
import weakref
from typing import Any

import numpy as np

from robots import gl
from robots.base import Frame, RobotError, StaleDataError
from robots.cameras.base import FrameSpec
from robots.cameras.process import CameraProcess
from robots.sim import aloha
from services.errors import ConfigError
from services.knobs import PositiveFloat

mujoco = aloha.mujoco
log = logging.getLogger(__name__)


_LIVE_TARGETS: weakref.WeakSet[_RenderTarget] = weakref.WeakSet()
_atexit_registered = False
_exiting = threading.Event()


def _close_live_targets() -> None:
    """Free GL contexts still open at exit, before mujoco's EGL display is terminated (which
    would make every later ``Renderer.__del__`` print an EGLError)."""
    _exiting.set()
    for target in list(_LIVE_TARGETS):
        target.close()


class _RenderTarget:
    """One GL context + scratch MjData, used by exactly one thread."""

    def __init__(self, model: Any, width: int, height: int) -> None:
        global _atexit_registered
        self.data = mujoco.MjData(model)
        self.renderer: Any = mujoco.Renderer(model, height=height, width=width)
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = 0
        self.renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = 0
        _LIVE_TARGETS.add(self)
        if not _atexit_registered:
            # Registered after the first GL context exists, so it runs before the backend's own
            # exit handler (atexit runs last-registered first).
            atexit.register(_close_live_targets)
            _atexit_registered = True

    def close(self) -> None:
        renderer, self.renderer = self.renderer, None
        _LIVE_TARGETS.discard(self)
        if renderer is None:
            return
        try:
            renderer.close()
        except Exception:  # noqa: BLE001 - freeing a GL context from a dead thread may fail
            log.debug("renderer close failed", exc_info=True)


def render_chw(target: _RenderTarget, model: Any, camera_id: int, snap: Any) -> np.ndarray:
    """(3, H, W) uint8 image of camera ``camera_id`` for the state in ``snap`` (qpos, qvel, sim_time)."""
    data = target.data
    data.qpos[:] = snap.qpos
    data.qvel[:] = snap.qvel
    data.time = snap.sim_time
    mujoco.mj_forward(model, data)
    target.renderer.update_scene(data, camera=camera_id)
    return np.ascontiguousarray(target.renderer.render().transpose(2, 0, 1))


class SimRenderProducer:
    """The camera process of a sim camera: its own model and GL context, rendering at ``fps`` from
    the newest state in the physics process' shared block (``block``: name and specs)."""

    def __init__(
        self, source: str, width: int, height: int, fps: float, render_msaa: int, block: tuple[str, list]
    ) -> None:
        self.source, self.width, self.height, self.fps = source, int(width), int(height), float(fps)
        self.render_msaa = int(render_msaa)
        self.block = block

    def run(self, ring: Any, stop: Any) -> None:
        from robots.sim.process import PhysicsShared
        from services.shm import SharedArrays

        gl.select_backend()
        model = aloha.load_model()
        model.vis.quality.offsamples = self.render_msaa
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, self.source)
        arrays = SharedArrays.attach(*self.block)
        target = _RenderTarget(model, self.width, self.height)
        try:
            shared = PhysicsShared(arrays)
            ring.status[ring.STATE] = ring.STATE_RUNNING
            period = 1.0 / self.fps
            t0 = time.monotonic()
            k, last_seq, index = 0, -1, 0
            while not stop():
                if shared.state_seq() != last_seq:
                    snap = shared.read_state()
                    image = render_chw(target, model, camera_id, snap)
                    index += 1
                    ring.write(snap.mono_time, time.monotonic(), index, image=image)
                    last_seq = snap.seq
                k += 1
                now = time.monotonic()
                if t0 + k * period < now:  # rendering fell behind: skip the missed frames
                    k = int((now - t0) / period) + 1
                time.sleep(max(0.0, t0 + k * period - now))
        finally:
            target.close()
            arrays.close()


@functools.cache
def model_camera_names() -> tuple[str, ...]:
    """The MuJoCo cameras of the sim model (loaded once per process, for start-time checks)."""
    model = aloha.load_model()
    return tuple(model.camera(i).name for i in range(model.ncam))


class SimCamera:
    """Renders MuJoCo camera ``source`` of the sim robot ``host`` as (3, H, W) uint8 frames.

    ``fps`` is the background render rate in real-time mode (frames per wall-clock second);
    ``max_frame_age_s`` bounds how old (by sim capture time mapped to monotonic) a returned frame
    may be; ``start_timeout_s`` is how long ``read`` waits for the first frame.
    """

    # The robot class that must host it (start-time check, inference/validation.py): it renders the
    # host's own MuJoCo model and physics state, so no other robot can carry it.
    host_class = "robots.sim.robot.SimRobot"

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check: ``source`` names a camera of the sim model."""
        names = model_camera_names()
        if node.get("source") not in names:
            raise ConfigError(
                f"{path}.source: {node.get('source')!r} is not a camera of the sim model (cameras: {', '.join(names)})"
            )

    def __init__(
        self,
        frames: FrameSpec,
        host: Any = None,
        *,
        source: str,
        fps: PositiveFloat = 15.0,
        start_timeout_s: PositiveFloat = 10.0,
    ) -> None:
        if host is None or not hasattr(host, "latest_snapshot"):
            raise RobotError(f"SimCamera {frames.name!r} needs the SimRobot as host (got {host!r})")
        gl.require_rendering()
        frames.bind(self)
        name = self.name
        self.source = source
        self.fps = float(fps)
        self.start_timeout_s = float(start_timeout_s)
        self._host = host
        model = host.model
        self._camera_id = mujoco.mj_name2id(model, mujoco.mjtObj.mjOBJ_CAMERA, source)
        if self._camera_id < 0:
            names = [model.camera(i).name for i in range(model.ncam)]
            raise RobotError(f"SimCamera {name!r}: no MuJoCo camera {source!r}; have {names}")
        # The offscreen buffer must hold the image; raise it before any context exists.
        model.vis.global_.offwidth = max(model.vis.global_.offwidth, self.width)
        model.vis.global_.offheight = max(model.vis.global_.offheight, self.height)
        self._targets: dict[int, _RenderTarget] = {}
        self._targets_lock = threading.Lock()
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._error: BaseException | None = None
        self._index = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._remote: CameraProcess | None = None  # the camera process (host's device_processes)

    # --- rendering -------------------------------------------------------------------------
    def _target(self) -> _RenderTarget:
        tid = threading.get_ident()
        with self._targets_lock:
            target = self._targets.get(tid)
        if target is None:
            try:
                target = _RenderTarget(self._host.model, self.width, self.height)
            except Exception as exc:  # noqa: BLE001 - GL errors come in many types
                raise RobotError(
                    f"camera {self.name}: cannot create an offscreen MuJoCo renderer with "
                    f"MUJOCO_GL={os.environ.get('MUJOCO_GL')!r}: {exc!r}. Set MUJOCO_GL=egl or "
                    "osmesa before mujoco is imported (importing robots.sim first does it)."
                ) from exc
            with self._targets_lock:
                self._targets[tid] = target
        return target

    def render_snapshot(self, snap: Any) -> Frame:
        """Render this camera for a physics snapshot, in the calling thread (its own GL context)."""
        image = render_chw(self._target(), self._host.model, self._camera_id, snap)
        self._index += 1
        return Frame(image=image, capture_time=snap.mono_time, receive_time=time.monotonic(), index=self._index)

    # --- camera protocol -------------------------------------------------------------------
    def start(self) -> None:
        """Real-time hosts: start the camera process (or render thread). Lockstep hosts render in
        ``read``."""
        if not self._host.realtime:
            return
        block = self._host.physics_block() if hasattr(self._host, "physics_block") else None
        if block is not None:
            if self._remote is None or self._remote.ring is None:  # (re)start: attach this physics block
                self._remote = CameraProcess(
                    self.name,
                    self.width,
                    self.height,
                    self.max_frame_age_s,
                    SimRenderProducer(
                        self.source,
                        self.width,
                        self.height,
                        self.fps,
                        int(self._host.model.vis.quality.offsamples),
                        block,
                    ),
                    start_timeout_s=self.start_timeout_s,
                )
            self._remote.start(wait=False)  # the robot waits for every camera's first frame
            return
        if self._thread is not None and self._thread.is_alive():
            return
        self._stop.clear()
        self._thread = threading.Thread(target=self._loop, name=f"sim-camera-{self.name}", daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        tid = threading.get_ident()
        try:
            period = 1.0 / self.fps
            t0 = time.monotonic()
            k = 0
            last_seq = -1
            while not self._stop.is_set():
                snap = self._host.latest_snapshot()
                if snap.seq != last_seq:
                    frame = self.render_snapshot(snap)
                    last_seq = snap.seq
                    with self._cond:
                        self._frame = frame
                        self._cond.notify_all()
                k += 1
                now = time.monotonic()
                if t0 + k * period < now:  # rendering fell behind: skip the missed frames
                    k = int((now - t0) / period) + 1
                self._stop.wait(max(0.0, t0 + k * period - now))
        except BaseException as exc:  # noqa: BLE001 - reported to readers, never swallowed
            if _exiting.is_set():  # interpreter exit closed our context under us: not an error
                return
            log.exception("camera %s render thread failed", self.name)
            with self._cond:
                self._error = exc
                self._cond.notify_all()
        finally:
            with self._targets_lock:
                target = self._targets.pop(tid, None)
            if target is not None:
                target.close()

    def wait_for_frame(self, newer_than: float, timeout_s: float) -> Frame:
        """Real time: block until a frame captured after ``newer_than`` (monotonic s) exists."""
        if self._remote is not None:
            return self._remote.wait_for_frame(newer_than, timeout_s)
        deadline = time.monotonic() + timeout_s
        with self._cond:
            while self._error is None and (self._frame is None or self._frame.capture_time < newer_than):
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise RobotError(f"camera {self.name}: no fresh frame within {timeout_s} s")
                self._cond.wait(remaining)
            if self._error is not None:
                raise RobotError(f"camera {self.name}: render thread failed: {self._error!r}")
            return self._frame

    def read(self) -> Frame:
        """Newest frame. Lockstep: rendered now from the current state. Real time: the render
        thread's latest, raising ``StaleDataError`` if older than ``max_frame_age_s``."""
        if not self._host.realtime:
            return self.render_snapshot(self._host.latest_snapshot())
        if self._remote is not None:
            return self._remote.read()
        deadline = time.monotonic() + self.start_timeout_s
        with self._cond:
            while self._frame is None and self._error is None:
                remaining = deadline - time.monotonic()
                if remaining <= 0 or self._thread is None:
                    raise RobotError(
                        f"camera {self.name}: no frame within {self.start_timeout_s} s "
                        f"({'not started' if self._thread is None else 'render thread silent'})"
                    )
                self._cond.wait(remaining)
            if self._error is not None:
                raise RobotError(f"camera {self.name}: render thread failed: {self._error!r}")
            frame = self._frame
        age = time.monotonic() - frame.capture_time
        if age > self.max_frame_age_s:
            raise StaleDataError(f"camera {self.name}: newest frame is {age:.3f} s old (max {self.max_frame_age_s} s)")
        return frame

    def request_stop(self) -> None:
        """Ask the camera process to stop without waiting for it."""
        if self._remote is not None:
            self._remote.request_stop()

    def stop(self, deadline: float | None = None) -> None:
        """Stop the camera process or render thread and free the GL contexts this camera can free.
        Idempotent; after a stop ``read`` returns the last frame, which ages into ``StaleDataError``."""
        if self._remote is not None:
            self._remote.stop(deadline)
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join(timeout=2.0)
            if thread.is_alive():
                log.warning("camera %s render thread did not stop within 2 s", self.name)
        tid = threading.get_ident()
        with self._targets_lock:
            target = self._targets.pop(tid, None)
        if target is not None:
            target.close()
