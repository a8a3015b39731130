"""OpenCV cameras on generated video files (real decoding, real capture thread)."""

from __future__ import annotations

import re
import time

import cv2
import numpy as np
import pytest

from robots.base import RobotError, StaleDataError
from robots.cameras.base import Camera, FrameSpec
from robots.cameras.opencv import OpenCVCamera, to_chw_rgb
from robots.cameras.ros_image import image_to_chw
from robots.ros2 import messages


def write_video(path, n_frames=10, size=(160, 120), fps=20.0):
    """Frame i: blue-ish BGR image (B=200, G=10*i, R=0); codec MJPG in .avi (always available)."""
    w, h = size
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (w, h))
    assert writer.isOpened()
    for i in range(n_frames):
        frame = np.zeros((h, w, 3), np.uint8)
        frame[..., 0] = 200
        frame[..., 1] = 10 * i
        writer.write(frame)
    writer.release()
    return path


def test_video_file_frames_are_chw_rgb_resized(tmp_path):
    path = write_video(tmp_path / "v.avi")
    # generous frame age and start-up limits: a starved 2-core host must not make a frame stale
    cam = OpenCVCamera(FrameSpec("head", 64, 48, 30.0), device=str(path), loop=True, open_timeout_s=60.0)
    assert isinstance(cam, Camera)
    cam.start()
    try:
        f = cam.read()
        assert f.image.shape == (3, 48, 64) and f.image.dtype == np.uint8
        # BGR (200, g, 0) on disk -> RGB: red ~0, blue ~200
        assert f.image[2].mean() > 180 and f.image[0].mean() < 20
        assert f.capture_time <= f.receive_time <= time.monotonic()
        # the file plays on and loops past its 10 frames (at 20 fps when the machine keeps up)
        deadline = time.monotonic() + 60
        while cam.read().index < 15 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert cam.read().index >= 15
    finally:
        cam.stop()
        cam.stop()


def test_non_looping_video_goes_stale_at_its_end(tmp_path):
    path = write_video(tmp_path / "short.avi", n_frames=3, fps=30.0)
    cam = OpenCVCamera(FrameSpec("left", 32, 24, 0.3), device=str(path), loop=False, open_timeout_s=60.0)
    cam.start()
    try:
        # the last of its 3 frames ages past 0.3 s once the file has ended; when, depends on the load.
        # A loaded machine may also starve the camera process for longer than 0.3 s before the end:
        # that staleness names no end of video, and the wait goes on until one does.
        ended = r"camera left: newest frame is \d+\.\d+ s old.*end of video"
        stale, deadline = None, time.monotonic() + 60
        while (stale is None or not re.search(ended, str(stale))) and time.monotonic() < deadline:
            try:
                cam.read()
            except StaleDataError as err:
                stale = err
            time.sleep(0.05)
        assert stale is not None, "the frame of a video that ended never went stale"
        assert re.search(ended, str(stale)), stale
    finally:
        cam.stop()


def test_missing_device_fails_clearly_without_waiting_for_a_frame():
    # "does not exist" comes only from the check before opening: had start() tried the device and
    # waited out open_timeout_s, the error would say "cannot open" or "no frame ... within" instead.
    # (How long it took is not asserted: that is the machine's load.)
    cam = OpenCVCamera(FrameSpec("head", 320, 240, 0.5), device="/dev/head_camera_does_not_exist", open_timeout_s=3.0)
    with pytest.raises(RobotError, match="camera head: device /dev/head_camera_does_not_exist does not exist"):
        cam.start()
    with pytest.raises(RobotError, match="camera head"):
        cam.read()


def test_a_device_that_is_not_a_camera_fails_clearly():
    with pytest.raises(RobotError, match="camera head: cannot open /dev/null"):
        OpenCVCamera(FrameSpec("head", 320, 240, 0.5), device="/dev/null", open_timeout_s=3.0).start()


def test_missing_file_and_unreadable_file_fail_clearly(tmp_path):
    with pytest.raises(RobotError, match="video file .*nope.mp4 does not exist"):
        OpenCVCamera(FrameSpec("x", 32, 24, 0.5), device=str(tmp_path / "nope.mp4")).start()
    junk = tmp_path / "junk.mp4"
    junk.write_bytes(b"not a video at all" * 100)
    with pytest.raises(RobotError, match="camera y: (cannot open|no frame|end of video)"):
        OpenCVCamera(FrameSpec("y", 32, 24, 0.5), device=str(junk), open_timeout_s=3.0).start()


def test_numeric_device_string_is_an_index():
    assert OpenCVCamera(FrameSpec("c", 32, 24, 0.5), device="2").device == 2
    assert not OpenCVCamera(FrameSpec("c", 32, 24, 0.5), device="/dev/video0").is_file


def test_conversions_agree_between_opencv_and_ros_images():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (96, 128, 3), dtype=np.uint8)
    bgr = rgb[..., ::-1].copy()
    from_cv = to_chw_rgb(bgr, 64, 48)
    from_ros = image_to_chw(messages.image_rgb8(rgb), 64, 48)
    np.testing.assert_array_equal(from_cv, from_ros)
    assert from_cv.shape == (3, 48, 64)
    expected = cv2.resize(rgb, (64, 48), interpolation=cv2.INTER_AREA).transpose(2, 0, 1)
    np.testing.assert_array_equal(from_cv, expected)
    msg = messages.image_rgb8(rgb)
    msg.encoding = "yuv422"
    with pytest.raises(RobotError, match="encoding 'yuv422' is not supported"):
        image_to_chw(msg, 64, 48)
