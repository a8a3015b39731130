"""``viewer=rerun``: the run live in Rerun (in a browser) and saved as ``<run_dir>/run.rrd``.

Control side (:class:`RerunViewer`, in the control process): the telemetry records reach the viewer's
shared-memory ring through ``Telemetry``'s taps (the same fixed-layout records the telemetry writer
reads), and each new camera frame is copied in by :meth:`RerunViewer.observation` (one
``np.copyto`` per image, only when the camera has a new frame). Nothing else happens on the control
thread: the ring never waits; a record that finds it full (or ``queue_size`` records unread) is
dropped and counted (``viewer_dropped`` in summary.json).

Sink side (:class:`_RerunWriter`, ``python -m services.ring``): decodes the records (frames as raw
RGB images, or JPEG-encoded with ``image_encoding=jpeg``) and logs them with
:class:`services.viewer.layout.RunView` to the ``.rrd`` file and, with ``serve=true``, to a second
stream for the web viewer's server (:class:`services.viewer.server.WebViewerServer`), fed from a
thread and a bounded queue of its own (:class:`_LiveLeg`): Rerun's server waits for its slowest
browser, and that wait stops there (records dropped and counted, ``viewer_live_dropped``), never
reaching the file, the ring or the loop. All of it is started and warmed up before the first tick.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import numpy as np

from services.errors import ConfigError
from services.knobs import PositiveFloat, PositiveInt, Range
from services.logs import SHOW
from services.ring import RecordRing, SinkProcess, array_text
from services.robot_data import ObservationLike, RobotSpecLike
from services.telemetry import CHUNK, COMMAND, EVENT, INFERENCE, INFERENCE_FIELDS, TICK, TICK_FIELDS, _row
from services.viewer import ViewedRecorder

log = logging.getLogger(__name__)

FRAME = 16  # ring record kind of a camera frame (telemetry's kinds are 1-6)
RRD_NAME = "run.rrd"


class RerunViewer:
    """``viewer=rerun`` knobs: ``serve`` (the web viewer; false = the .rrd file only), ``bind``
    (127.0.0.1: this machine only; 0.0.0.0: the lab network), ``web_port`` / ``grpc_port`` (a taken
    port is replaced by a free one; the URL printed at start is the truth), ``server_memory_limit``
    (stream kept for late browsers), ``save_rrd``, ``image_encoding`` (raw RGB or JPEG) /
    ``jpeg_quality``, ``image_every`` (every n-th new
    frame of each camera), ``queue_size`` / ``buffer_mb`` (the ring: what the sink may fall behind by)."""

    @classmethod
    def preflight(cls, node: Any, path: str) -> None:
        """Start-time check of what the viewer process would otherwise die of after the run started:
        the bind address (an IP this machine has), the server's memory limit (rerun's size syntax),
        a non-empty application id."""
        from services.viewer.server import bind_problem, memory_limit_problem

        if node.get("serve", True):
            for key, check, default in (
                ("bind", bind_problem, "127.0.0.1"),
                ("server_memory_limit", memory_limit_problem, "1GiB"),
            ):
                why = check(str(node.get(key, default)))
                if why:
                    raise ConfigError(f"{path}.{key}: {why}")
        if not str(node.get("application_id", "rt-inference-engine")).strip():
            raise ConfigError(f"{path}.application_id: empty (Rerun needs a name for the recording)")

    def __init__(
        self,
        serve: bool = True,
        bind: str = "127.0.0.1",
        web_port: Annotated[int, Range(ge=0, le=65535)] = 9090,
        grpc_port: Annotated[int, Range(ge=0, le=65535)] = 9876,
        server_memory_limit: str = "1GiB",
        save_rrd: bool = True,
        image_encoding: Literal["raw", "jpeg"] = "raw",
        jpeg_quality: Annotated[int, Range(ge=1, le=100)] = 80,
        image_every: PositiveInt = 1,
        queue_size: PositiveInt = 4000,
        buffer_mb: PositiveFloat = 64.0,
        start_timeout_s: PositiveFloat = 60.0,
        application_id: str = "rt-inference-engine",
    ) -> None:
        if importlib.util.find_spec("rerun") is None:
            raise ConfigError("viewer: rerun-sdk is not installed (pip install -e '.[viewer]')")
        if not serve and not save_rrd:
            raise ConfigError("viewer: serve=false and save_rrd=false leave the viewer nothing to do (use viewer=none)")
        self.serve, self.bind, self.web_port, self.grpc_port = bool(serve), str(bind), int(web_port), int(grpc_port)
        self.server_memory_limit, self.save_rrd = str(server_memory_limit), bool(save_rrd)
        self.image_encoding, self.jpeg_quality, self.image_every = (
            str(image_encoding),
            int(jpeg_quality),
            int(image_every),
        )
        self.queue_size, self.buffer_mb = int(queue_size), float(buffer_mb)
        self.start_timeout_s, self.application_id = float(start_timeout_s), str(application_id)
        self.url: str | None = None
        self._ring: RecordRing | None = None
        self._proc: SinkProcess | None = None
        self._last_capture: dict[str, float] = {}
        self._new_frames: dict[str, int] = {}

    # ------------------------------------------------------------------ plugging in
    def ring(self) -> RecordRing:
        if self._ring is None:
            self._ring = RecordRing.create(int(self.buffer_mb * (1 << 20)), max_records=self.queue_size)
        return self._ring

    def taps(self) -> list[RecordRing]:
        """Where ``Telemetry`` mirrors its records."""
        return [self.ring()]

    def wrap(self, recorder: Any) -> ViewedRecorder:
        return ViewedRecorder(recorder, self)

    # ------------------------------------------------------------------ control side
    def start(self, run_dir: Path, spec: RobotSpecLike, camera_names: tuple[str, ...]) -> None:
        run_dir = Path(run_dir)
        self._cameras = tuple(camera_names)
        ring = self.ring()
        writer = _RerunWriter(
            run_dir=run_dir,
            joint_names=tuple(spec.joint_names),
            cameras=self._cameras,
            mono_to_wall=time.time() - time.monotonic(),
            period_s=1.0 / float(spec.hz) if getattr(spec, "hz", None) else None,
            serve=self.serve,
            bind=self.bind,
            web_port=self.web_port,
            grpc_port=self.grpc_port,
            server_memory_limit=self.server_memory_limit,
            save_rrd=self.save_rrd,
            image_encoding=self.image_encoding,
            jpeg_quality=self.jpeg_quality,
            application_id=self.application_id,
            start_timeout_s=self.start_timeout_s,
        )
        try:
            self._proc = SinkProcess(writer, ring, "viewer", ready_timeout_s=self.start_timeout_s + 30.0)
        except BaseException:
            self._close_ring()
            raise
        info = self._proc.ready_info
        self.url = info.get("url")
        self._ready_s = self._proc.ready_s
        log.info(
            "viewer ready in %.2f s (pid %d)%s",
            self._ready_s,
            self._proc.proc.pid,
            f", saving {info['rrd']}" if info.get("rrd") else "",
        )
        if self.url:
            log.info("live view: %s", self.url, extra=SHOW)  # the console shows it at every log_level

    def observation(self, obs: ObservationLike) -> None:
        ring = self._ring
        if ring is None or self._proc is None:
            return
        for cam in self._cameras:
            frame = (obs.images or {}).get(cam)
            if frame is None or frame.capture_time == self._last_capture.get(cam):
                continue  # no new frame from this camera since the last tick
            self._last_capture[cam] = frame.capture_time
            n = self._new_frames.get(cam, 0)
            self._new_frames[cam] = n + 1
            if n % self.image_every:
                continue
            ring.put(
                FRAME, [np.array([frame.capture_time, self._cameras.index(cam)]), np.asarray(frame.image, np.uint8)]
            )

    def command(self, command: np.ndarray) -> None:
        pass  # from the telemetry tap, with its tick

    def chunk(self, chunk: np.ndarray) -> None:
        pass  # from the telemetry tap, with its id and start tick

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.proc.pid

    def close(self) -> dict[str, Any]:
        if self._proc is None:
            self._close_ring()
            return {}
        ring = self._ring
        result = self._proc.stop()
        dropped = ring.dropped if ring is not None else 0
        self._proc = None
        self._close_ring()
        out: dict[str, Any] = {"viewer_dropped": dropped, "viewer_ready_s": round(self._ready_s, 3)}
        if result is None:
            out["viewer_failed"] = True
        else:
            out.update(
                viewer_url=result.get("url"),
                viewer_rrd=result.get("rrd"),
                viewer_logged=result.get("counts"),
                viewer_sink_skipped=result.get("skipped", 0),
                viewer_live_dropped=result.get("live_dropped", 0),
            )
        if dropped:
            log.warning("viewer: %d records found its ring full and were dropped (the loop did not wait)", dropped)
        log.info("viewer: %s", {k: v for k, v in out.items() if k != "viewer_url"})
        return out

    def _close_ring(self) -> None:
        if self._ring is not None:
            self._ring.close()
            self._ring = None


@dataclass
class _RerunWriter:
    """The viewer process's side (pickled to it): ring records -> Rerun (the .rrd file, the web viewer)."""

    run_dir: Path
    joint_names: tuple[str, ...]
    cameras: tuple[str, ...]
    mono_to_wall: float
    period_s: float | None
    serve: bool
    bind: str
    web_port: int
    grpc_port: int
    server_memory_limit: str
    save_rrd: bool
    image_encoding: str
    jpeg_quality: int
    application_id: str
    start_timeout_s: float

    def run(self, ring: RecordRing, conn: Any) -> None:
        from services.viewer.server import WebViewerServer, analytics_off_env

        env, config_home = analytics_off_env()
        os.environ.update({k: env[k] for k in ("XDG_CONFIG_HOME", "XDG_DATA_HOME")})
        import cv2
        import rerun as rr

        from services.viewer.layout import RunView, blueprint

        self._cv2, self._rr = cv2, rr
        server, live, file_rec = None, None, None
        rrd = self.run_dir / RRD_NAME if self.save_rrd else None
        recording_id = self.run_dir.name or None
        layout = blueprint(self.joint_names, self.cameras, period_s=self.period_s)
        try:
            if rrd is not None:
                file_rec = rr.RecordingStream(self.application_id, recording_id=recording_id)
                file_rec.set_sinks(rr.FileSink(str(rrd)), default_blueprint=layout)
                file_rec.send_recording_name(str(self.run_dir))
            if self.serve:
                server = WebViewerServer(
                    self.bind,
                    self.web_port,
                    self.grpc_port,
                    self.server_memory_limit,
                    log_path=self.run_dir / "viewer_server.log",
                    start_timeout_s=self.start_timeout_s,
                )
                live = _LiveLeg(rr, self.application_id, recording_id, server.local_grpc_url, layout, str(self.run_dir))
            self.tee = _Tee(file_rec, live)
            self.view = RunView(self.tee, self.joint_names, self.cameras, self.mono_to_wall, self.period_s)
            self._encode(np.zeros((3, 8, 8), np.uint8))  # warm-up: the encoder's first call is slow
            self.skipped = 0
            conn.send(("ready", {"url": server.url if server else None, "rrd": str(rrd) if rrd else None}))
            result = self._loop(ring, conn)
            self.view.finish(result.pop("summary", None))
            self.tee.commit()
            if file_rec is not None:
                file_rec.flush(timeout_sec=60.0)
                file_rec.disconnect()
        finally:
            if live is not None:
                live.close()
            if server is not None:
                server.stop()
            # a live stream the server stopped taking must not hold the exit (the file is flushed above)
            rr.unregister_shutdown()
            shutil.rmtree(config_home, ignore_errors=True)
        if result.get("conn") is not None:
            conn.send(
                (
                    "done",
                    {
                        "url": server.url if server else None,
                        "rrd": str(rrd) if rrd else None,
                        "counts": self.view.counts,
                        "skipped": self.skipped,
                        "live_dropped": live.dropped if live else 0,
                    },
                )
            )

    def _loop(self, ring: RecordRing, conn: Any) -> dict[str, Any]:
        stopping = False
        while True:
            if ring.drain(self._handle) == 0:
                if stopping:
                    return {"conn": conn}
                try:
                    if conn.poll(0.005):
                        conn.recv()  # ("stop", None)
                        stopping = True
                except (EOFError, OSError):  # the control process is gone: finish the file
                    stopping, conn = True, None

    def _encode(self, image_chw: np.ndarray) -> Any:
        """An ``rr.Image`` (raw RGB: every browser draws it, software WebGL included) or an
        ``rr.EncodedImage`` (JPEG: ~10x smaller .rrd; the browser must decode it), or None."""
        rgb = np.ascontiguousarray(np.transpose(image_chw, (1, 2, 0)))
        if self.image_encoding == "raw":
            return self._rr.Image(rgb, color_model="RGB")
        cv2 = self._cv2
        ok, jpg = cv2.imencode(
            ".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, self.jpeg_quality]
        )
        return self._rr.EncodedImage(contents=jpg.tobytes(), media_type="image/jpeg") if ok else None

    def _handle(self, kind: int, arrays: list[np.ndarray]) -> None:
        """One ring record (``arrays`` are views into the ring, valid during this call)."""
        view = self.view
        try:
            if kind == TICK:
                view.tick(_row(TICK_FIELDS, arrays))
            elif kind == INFERENCE:
                view.inference(_row(INFERENCE_FIELDS, arrays))
            elif kind == COMMAND:
                episode, tick, has_state = (int(v) for v in arrays[0])
                view.command(episode, tick, arrays[1].copy(), arrays[2].copy() if has_state else None)
            elif kind == CHUNK:
                episode, chunk_id, start_tick = (int(v) for v in arrays[0])
                view.chunk(episode, chunk_id, start_tick, arrays[1].copy())
            elif kind == EVENT:
                view.event(array_text(arrays[0]))
            elif kind == FRAME:
                capture_time, cam = float(arrays[0][0]), int(arrays[0][1])
                image = self._encode(arrays[1])
                if image is None:
                    self.skipped += 1
                else:
                    view.image(self.cameras[cam], capture_time, image)
        except Exception:  # a bad record must not end the live view
            log.exception("viewer: failed to log a record of kind %d", kind)
        self.tee.commit()


class _Tee:
    """What :class:`RunView` logs to: the file's recording at once, and a copy of the calls of each
    ring record handed to the live leg as one unit (dropped whole when the live leg is behind, so
    a drawn value never lands at another record's time)."""

    def __init__(self, file_rec: Any, live: _LiveLeg | None) -> None:
        self.file_rec, self.live = file_rec, live
        self._calls: list[tuple[str, tuple, dict]] = []

    def _call(self, name: str, *args: Any, **kwargs: Any) -> None:
        if self.file_rec is not None:
            getattr(self.file_rec, name)(*args, **kwargs)
        if self.live is not None:
            self._calls.append((name, args, kwargs))

    def set_time(self, *args: Any, **kwargs: Any) -> None:
        self._call("set_time", *args, **kwargs)

    def disable_timeline(self, *args: Any, **kwargs: Any) -> None:
        self._call("disable_timeline", *args, **kwargs)

    def log(self, *args: Any, **kwargs: Any) -> None:
        self._call("log", *args, **kwargs)

    def send_columns(self, *args: Any, **kwargs: Any) -> None:
        self._call("send_columns", *args, **kwargs)

    def commit(self) -> None:
        if self.live is not None and self._calls:
            self.live.submit(self._calls)
        self._calls = []


class _LiveLeg:
    """The stream to the web viewer's server, logged from a thread of its own.

    Rerun's gRPC server waits for its slowest browser (its broadcast channel blocks the sender), and
    the SDK then blocks the logging call: that wait must reach neither the .rrd file nor the ring.
    Records queue here (``max_pending`` at most) and a record that finds the queue full is dropped
    and counted (``viewer_live_dropped``)."""

    def __init__(
        self,
        rr: Any,
        application_id: str,
        recording_id: str | None,
        url: str,
        layout: Any,
        name: str,
        max_pending: int = 2000,
    ) -> None:
        import queue
        import threading

        self.rec = rr.RecordingStream(application_id, recording_id=recording_id)
        self.rec.set_sinks(rr.GrpcSink(url), default_blueprint=layout)
        self.rec.send_recording_name(name)
        self.queue: Any = queue.Queue(maxsize=max_pending)
        self.dropped = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="viewer-live", daemon=True)
        self._thread.start()

    def submit(self, calls: list[tuple[str, tuple, dict]]) -> None:
        import queue

        try:
            self.queue.put_nowait(calls)
        except queue.Full:
            self.dropped += 1

    def _run(self) -> None:
        import queue

        while not self._stop.is_set():
            try:
                calls = self.queue.get(timeout=0.1)
            except queue.Empty:
                continue
            for name, args, kwargs in calls:
                try:
                    getattr(self.rec, name)(*args, **kwargs)
                except Exception:  # noqa: BLE001 - the live view is best effort
                    log.exception("viewer: live stream call %s failed", name)

    def close(self, drain_s: float = 5.0) -> None:
        """Give the browser ``drain_s`` to take what is queued, then stop (what is left is dropped)."""
        deadline = time.monotonic() + drain_s
        while not self.queue.empty() and time.monotonic() < deadline:
            time.sleep(0.05)
        self._stop.set()
        self._thread.join(timeout=1.0)
        self.dropped += self.queue.qsize()
