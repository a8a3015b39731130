"""The served web viewer in a real browser (headless Chromium from the OS packages) during a run.

``make test`` installs Chromium when it is missing (the Makefile's ``test-envs``). The browser is
driven over the DevTools protocol (a websocket to 127.0.0.1): open the URL the app logged, wait for
the wasm viewer to stream the run, take a screenshot while the run still ticks.

``VIEWER_SCREENSHOT_OUT=docs/images/live-view.png`` makes the picture in docs/live-view.md
(``VIEWER_TEST_POLICY=flow``: with the flow policy instead of the scripted one).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # the wasm viewer draws with WebGL: a software rasterizer, there being no GPU
    "--use-angle=swiftshader",
    "--enable-unsafe-swiftshader",
]
WINDOW = (1600, 1000)
# 13.3 min at 20 Hz: the run outlasts the waits for the URL (240 s), the browser (60 s) and the viewer's
# screenshot (480 s) on a loaded machine; it is stopped right after the shot
MAX_STEPS = 16000


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


class Browser:
    """Headless Chromium with a DevTools port on 127.0.0.1 and a fresh profile."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.trace: list[str] = []  # what each screenshot showed, for a failure's message
        self.profile = tempfile.mkdtemp(prefix="chromium-")
        self.proc = subprocess.Popen(
            [
                chromium(),
                *CHROMIUM_FLAGS,
                f"--user-data-dir={self.profile}",
                f"--remote-debugging-port={port}",
                "--remote-debugging-address=127.0.0.1",
                f"--window-size={WINDOW[0]},{WINDOW[1]}",
                "about:blank",
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                tabs = json.loads(urllib.request.urlopen(f"http://127.0.0.1:{port}/json", timeout=2).read())
                self.ws_url = next(t["webSocketDebuggerUrl"] for t in tabs if t["type"] == "page")
                break
            except (OSError, StopIteration, ValueError):
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    self.close()
                    raise RuntimeError("chromium's DevTools endpoint did not come up")
                time.sleep(0.2)

    def screenshot(self, url: str, wait_s: float, ready: Callable[[bytes], bool]) -> bytes:
        """Open ``url`` and take screenshots every few seconds until ``ready(png)`` or ``wait_s``
        (the wasm viewer loads, connects and catches up at its own pace): the first ready one, else
        the last one. ``trace`` says when each was asked for, how long it took and what it showed:
        on a loaded machine one screenshot of the software-rendered page can take minutes."""
        import websockets

        async def run() -> bytes:
            async with websockets.connect(self.ws_url, max_size=1 << 28) as ws:
                ids = iter(range(1, 1 << 30))
                replies: dict[int, asyncio.Future] = {}

                async def read() -> None:  # one reader: a reply waited on too long is dropped here
                    async for raw in ws:
                        msg = json.loads(raw)
                        waiter = replies.pop(msg.get("id"), None)
                        if waiter is not None and not waiter.done():
                            waiter.set_result(msg)

                async def call(method: str, timeout_s: float = 60.0, **params) -> dict:
                    n = next(ids)
                    replies[n] = asyncio.get_running_loop().create_future()
                    await ws.send(json.dumps({"id": n, "method": method, "params": params}))
                    try:
                        return await asyncio.wait_for(replies[n], timeout=timeout_s)
                    finally:
                        replies.pop(n, None)

                reader = asyncio.create_task(read())
                try:
                    return await watch(call)
                finally:
                    reader.cancel()

        async def watch(call: Callable) -> bytes:
            await call("Page.enable")
            await call("Page.navigate", url=url)
            started = time.monotonic()
            deadline = started + wait_s
            png = None
            while time.monotonic() < deadline:
                await asyncio.sleep(3.0)
                # the renderer may be busy for long (a software rasterizer on a loaded machine): wait
                # for one screenshot at a time, as long as the deadline allows
                asked = time.monotonic()
                try:
                    shot = await call("Page.captureScreenshot", format="png", timeout_s=max(1.0, deadline - asked))
                except TimeoutError:
                    self.trace.append(f"{asked - started:.0f}s:no-shot")
                    break
                png = base64.b64decode(shot["result"]["data"])
                look = "ready" if ready(png) else "welcome-page" if _shows_welcome_page(png) else "not-ready"
                self.trace.append(f"{asked - started:.0f}s+{time.monotonic() - asked:.0f}s:{look}")
                if look == "ready":
                    return png
            if png is None:
                raise AssertionError(f"chromium produced no screenshot in {wait_s:.0f} s: {' '.join(self.trace)}")
            return png

        return asyncio.run(run())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        shutil.rmtree(self.profile, ignore_errors=True)


def _wait_for_url(log_path: Path, proc: subprocess.Popen, timeout_s: float) -> str:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        text = log_path.read_text(errors="replace") if log_path.is_file() else ""
        found = re.search(r"live view: (http://\S+)", text)
        if found:
            return found.group(1)
        time.sleep(0.5)
    raise AssertionError(
        f"no 'live view:' URL in the app's output (exit {proc.poll()}):\n"
        + (log_path.read_text()[-3000:] if log_path.is_file() else "")
    )


def _ticks_so_far(run_dir: Path) -> int:
    path = run_dir / "ticks.csv"
    return max(0, len(path.read_text().splitlines()) - 1) if path.is_file() else 0


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_web_viewer_in_chromium_shows_cameras_and_chunks_during_a_run(tmp_path):
    if chromium() is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (make test-envs installs it)")
        pytest.skip("chromium is not installed (apt-get install chromium; make test-envs does it)")
    policy = os.environ.get("VIEWER_TEST_POLICY", "scripted")
    run_dir = tmp_path / "run"
    out = tmp_path / "app.out"
    cmd = [
        sys.executable,
        "-m",
        "inference",
        "viewer=rerun",
        "viewer.web_port=0",
        "viewer.grpc_port=0",
        "viewer.image_every=4",  # 5 camera frames a second: less for a starved browser to draw
        f"policy={policy}",
        f"max_steps={MAX_STEPS}",
        "report=false",
        "algorithm.stop_on_success=false",
        "algorithm.max_chunk_jump=null",
        "cameras.max_frame_age_s=5",
        "robot.max_state_age_s=5",
        "algorithm.inference_timeout_s=60",
        "robot.start_timeout_s=120",
        "algorithm.startup_timeout_s=600",
        f"hydra.run.dir={run_dir}",
    ]
    with out.open("w") as f:
        app = subprocess.Popen(cmd, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    browser = None
    try:
        url = _wait_for_url(out, app, timeout_s=240)
        assert url.startswith("http://127.0.0.1:"), url  # bound to this machine unless told otherwise
        # the browser opens the page at once: the wasm viewer loads while the policy does, and the
        # stream it then has to catch up on is short (the server keeps the whole run for late browsers)
        browser = Browser(port=_free_port())
        ticks_before = _ticks_so_far(run_dir)
        png = browser.screenshot(url, wait_s=float(os.environ.get("VIEWER_TEST_WAIT_S", "480")), ready=_shows_it)
        ticks_at_shot = _ticks_so_far(run_dir)
        running = app.poll() is None
        trace = " ".join(browser.trace)
        print(f"viewer screenshots: {trace}")  # shown with -s
    finally:
        if browser is not None:
            browser.close()
        if app.poll() is None:
            app.send_signal(signal.SIGINT)  # the app stops cleanly: robot holds, files flushed
            try:
                app.wait(timeout=120)
            except subprocess.TimeoutExpired:
                app.kill()
                app.wait()
    shot_path = tmp_path / "live-view.png"
    shot_path.write_bytes(png)
    if os.environ.get("VIEWER_SCREENSHOT_OUT"):
        Path(os.environ["VIEWER_SCREENSHOT_OUT"]).write_bytes(png)
    image = _decode(png)
    assert image is not None and image.shape[1] >= WINDOW[0] * 0.9, "no screenshot"
    # taken during the run: it ticked while the browser watched, and had ticks left
    assert running and ticks_before < ticks_at_shot < MAX_STEPS, (ticks_before, ticks_at_shot, running)
    _assert_shows_cameras_and_plots(image, f"{shot_path} (screenshots: {trace})")


def _decode(png: bytes) -> np.ndarray | None:
    return cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)


def _shows_it(png: bytes) -> bool:
    image = _decode(png)
    try:
        _assert_shows_cameras_and_plots(image, "-")
    except AssertionError:
        return False
    return True


def _shows_welcome_page(png: bytes) -> bool:
    """Rerun's welcome page: no source open, its sources panel (hidden by the run's blueprint) open
    with "Welcome to rerun" selected, a blue bar at its top. The run's layout has a camera view's
    white header there."""
    image = _decode(png)
    if image is None:
        return False
    h, w = image.shape[:2]
    bar = image[int(0.075 * h) : int(0.095 * h), int(0.01 * w) : int(0.11 * w)].astype(np.int16)
    blue = (bar[..., 0] > 180) & (bar[..., 1] > 60) & (bar[..., 1] < 170) & (bar[..., 2] < 90)
    return float(blue.mean()) > 0.5


def _assert_shows_cameras_and_plots(image: np.ndarray, path: str) -> None:
    """The blueprint's layout: three camera views across the top left, the joint plots on the right.

    A camera view holding a sim frame is a grey-level picture (the sim draws flat-shaded grey
    objects, a red cube: a few dozen distinct colours, not hundreds), while an empty or loading view
    is the flat panel background: each view must have several grey levels and contrast. The joint
    plots must have the command's orange and at least two of the chunk lines' colours (the layout's
    palette; overlapping chunks get different ones): plots with no chunk drawn have the command and
    state only."""
    from services.viewer.layout import CHUNK_COLORS, COMMAND_COLOR

    h, w = image.shape[:2]
    left = int(w * 1.1 / 2.1)  # the blueprint's column shares: [1.1, 1.0]
    for i in range(3):
        view = image[int(0.18 * h) : int(0.36 * h), i * left // 3 + 10 : (i + 1) * left // 3 - 10]
        grey = cv2.cvtColor(view, cv2.COLOR_BGR2GRAY)
        levels, contrast = len(np.unique(grey // 16)), float(grey.std())
        assert levels >= 5 and contrast > 12, (
            f"camera view {i} looks empty ({levels} grey levels, std {contrast:.1f}): {path}"
        )
    plots = image[int(0.06 * h) : int(0.92 * h), left + 10 :].astype(np.int16)

    def near(color: tuple) -> int:
        return int(np.sum(np.abs(plots - np.array(color[::-1], np.int16)).max(-1) < 30))

    chunk_px, command_px = [near(c) for c in CHUNK_COLORS], near(COMMAND_COLOR)
    # at least two chunks drawn (a chunk line per colour: a new chunk and the previous one's remainder)
    assert sum(n > 100 for n in chunk_px) >= 2 and command_px > 300, (
        f"the joint plots show no two chunk lines ({chunk_px} px) or no commands ({command_px} px): {path}"
    )


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
