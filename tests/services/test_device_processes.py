"""Devices in their own processes: the shared-memory frame ring, camera processes, the sim
physics process; a dead one is a named fault, and no shared memory is left after kill -9 of any."""

from __future__ import annotations

import multiprocessing as mp
import os
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from robots.base import RobotError
from robots.cameras.base import FrameSpec
from robots.cameras.opencv import OpenCVCamera
from robots.sim import SimCamera, SimRobot
from services.shm import ShmRing

ROOT = Path(__file__).resolve().parents[2]
W, H = 64, 48


def shm_exists(name: str) -> bool:
    return os.path.exists(f"/dev/shm/{name.lstrip('/')}")


def wait_until(cond, timeout_s: float, step_s: float = 0.02) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(step_s)
    return cond()


# ------------------------------------------------------------------------------------ the ring
@settings(max_examples=40, deadline=None)
@given(
    slots=st.integers(2, 6),
    shape=st.tuples(st.integers(1, 4), st.integers(1, 5)),
    writes=st.lists(st.integers(0, 255), min_size=0, max_size=20),
)
def test_ring_newest_is_the_last_complete_write(slots, shape, writes) -> None:
    fields = {"image": (shape, "uint8")}
    ring = ShmRing.create(fields, slots, tag="test")
    try:
        reader = ShmRing.attach(ring.name, fields, slots)
        out = {"image": np.empty(shape, np.uint8)}
        assert reader.read_newest(out)[0] == 0  # nothing written yet
        for k, value in enumerate(writes, start=1):
            ring.write(float(k), float(k) + 0.5, 10 * k, image=np.full(shape, value, np.uint8))
            n, capture, receive, index = reader.read_newest(out)
            assert (n, capture, receive, index) == (k, float(k), k + 0.5, 10 * k)
            assert np.all(out["image"] == value)
        reader.close()
    finally:
        ring.close()
    assert not shm_exists(ring.name)


def test_ring_needs_two_slots() -> None:
    with pytest.raises(ValueError, match=">= 2 slots"):
        ShmRing.specs({"image": ((1,), "uint8")}, 1)


def _spam_writer(name: str, fields: dict, slots: int, n_frames: int) -> None:
    ring = ShmRing.attach(name, fields, slots)
    shape = fields["image"][0]
    for n in range(1, n_frames + 1):
        k, slot = ring.slot_for_write()
        ring.data["image"][slot][...] = n % 251  # every byte of frame n says n
        ring.commit(k, slot, float(n), float(n), n)
    ring.close()
    assert shape


def test_ring_reader_never_keeps_a_torn_frame_from_a_racing_writer() -> None:
    fields = {"image": ((3, 120, 160), "uint8")}
    ring = ShmRing.create(fields, 2, tag="test")  # 2 slots: the writer laps the reader as often as it can
    proc = mp.get_context("spawn").Process(target=_spam_writer, args=(ring.name, fields, 2, 20000))
    try:
        proc.start()
        out = {"image": np.empty((3, 120, 160), np.uint8)}
        checked = 0
        while proc.is_alive() or checked == 0:
            try:
                n, capture, _, index = ring.read_newest(out)
            except TimeoutError:  # lapped every retry: allowed, never a torn frame
                continue
            if n == 0:
                continue
            assert index == n == int(capture)
            assert out["image"].min() == out["image"].max() == n % 251, f"torn frame {n}"
            checked += 1
        proc.join(10)
        assert proc.exitcode == 0 and checked > 10
    finally:
        if proc.is_alive():
            proc.kill()
        ring.close()
    assert not shm_exists(ring.name)


def test_ring_view_is_the_newest_sample_read_only_and_says_when_it_is_rewritten() -> None:
    fields = {"image": ((2, 3), "uint8")}
    ring = ShmRing.create(fields, 3, tag="test")
    try:
        reader = ShmRing.attach(ring.name, fields, 3)
        assert reader.view_newest("image")[0] == 0
        ring.write(1.0, 1.5, 7, image=np.full((2, 3), 1, np.uint8))
        n, capture, receive, index, view = reader.view_newest("image")
        assert (n, capture, receive, index) == (1, 1.0, 1.5, 7) and np.all(view == 1)
        assert not view.flags.writeable
        with pytest.raises(ValueError):
            view[0, 0] = 9
        ring.write(2.0, 2.0, 8, image=np.full((2, 3), 2, np.uint8))
        ring.write(3.0, 3.0, 9, image=np.full((2, 3), 3, np.uint8))
        assert reader.intact(1) and np.all(view == 1)  # slots - 1 newer samples: still sample 1
        ring.slot_for_write()  # sample 4 begins in sample 1's slot
        assert not reader.intact(1)
        reader.close()
        assert reader.intact(1)  # a closed ring's views no longer change
    finally:
        ring.close()


def test_history_copy_of_a_zero_copy_frame_is_one_copy_and_a_rewritten_slot_is_a_stale_fault() -> None:
    from robots.base import Frame, Observation, StaleDataError
    from robots.history import ObservationHistory

    fields = {"image": ((3, 4, 5), "uint8")}
    ring = ShmRing.create(fields, 4, tag="test")
    try:
        ring.write(1.0, 1.0, 1, image=np.full((3, 4, 5), 11, np.uint8))
        n, capture, receive, index, view = ring.view_newest("image")
        frame = Frame(view, capture, receive, index, partial(ring.intact, n))
        history = ObservationHistory()
        history.push(Observation(state=np.zeros(2, np.float32), images={"head": frame}, timestamp=1.0))
        assert history._frames["head"][-1].image is view  # kept as the view: no copy at push
        snap = history.snapshot()
        assert np.all(snap.images["head"] == 11) and not np.shares_memory(snap.images["head"], view)
        owned = frame.owned()
        assert owned.intact_check is None and not np.shares_memory(owned.image, view)
        for k in range(2, 6):
            ring.write(float(k), float(k), k, image=np.full((3, 4, 5), k, np.uint8))
        assert not frame.intact()  # sample 5 went into sample 1's slot
        with pytest.raises(StaleDataError, match="camera head: frame 1 was overwritten"):
            history.snapshot()
        with pytest.raises(StaleDataError):
            frame.owned()
        longer = ObservationHistory(num_img_obs=2)  # keeps frames across ticks: takes its own copies
        n, capture, receive, index, view = ring.view_newest("image")
        longer.push(
            Observation(
                state=np.zeros(2, np.float32),
                timestamp=1.0,
                images={"head": Frame(view, capture, receive, index, partial(ring.intact, n))},
            )
        )
        assert longer._frames["head"][-1].intact_check is None
    finally:
        ring.close()


def test_camera_process_read_is_a_view_of_its_ring_and_its_last_frame_outlives_stop(tmp_path) -> None:
    from tests.robots.test_cameras import write_video

    cam = OpenCVCamera(FrameSpec("vid", W, H, 5.0), device=str(write_video(tmp_path / "v.avi")), loop=True)
    cam.start()
    try:
        remote = cam._remote
        frame = cam.read()
        assert not frame.image.flags.writeable and frame.intact()
        assert any(np.shares_memory(frame.image, v) for v in remote.ring._slot_views["image"])
    finally:
        cam.stop()
    last = remote._newest()
    assert last.intact_check is None and last.image.flags.writeable  # its own copy, taken at stop


# ------------------------------------------------------------------------------------ sim devices
def sim_cameras(max_frame_age_s: float = 30.0) -> dict:
    """Generous frame ages: staleness has its own tests; here a starved host must not trip it."""
    return {
        name: partial(SimCamera, frames=FrameSpec(name, W, H, max_frame_age_s), source=src, fps=15)
        for name, src in {"head": "top", "left": "left_wrist"}.items()
    }


def sim_blocks(robot: SimRobot) -> list[str]:
    names = [robot.physics_block()[0]]
    names += [cam._remote.ring.name for cam in robot.cameras.values()]
    return names


def test_sim_devices_run_in_processes_and_leave_no_shared_memory() -> None:
    robot = SimRobot(cameras=sim_cameras(), realtime=True, max_state_age_s=30.0)
    robot.start()
    try:
        blocks = sim_blocks(robot)
        pids = [robot._proc.pid] + [cam._remote.pid for cam in robot.cameras.values()]
        assert len(set(pids + [os.getpid()])) == len(pids) + 1  # physics and each camera: own processes
        assert all(shm_exists(b) for b in blocks)
        # The counter restarts at the reset. A load-proof bound on it after home(): physics never
        # steps before a tick's deadline, and a backlog it may still owe at the reset is at most
        # max_lag_s (it re-anchors past that), so steps since the reset <= periods since home() was
        # called + max_lag_s / period + 2. A slow host only lowers the count; it cannot trip this.
        backlog_ticks = robot.max_lag_s / robot.spec.period_s + 2
        # let the start-up episode's counter run well past that (a condition, not a duration)
        assert wait_until(lambda: robot.read().info["step"] > 3 * backlog_ticks, 120.0)
        before = robot.read()
        homed_at = time.monotonic()
        robot.home(3)
        first = robot.read()
        periods_since_home = (time.monotonic() - homed_at) / robot.spec.period_s
        assert first.info["episode"] == before.info["episode"] + 1
        assert first.info["step"] <= periods_since_home + backlog_ticks, (first.info, periods_since_home)
        k, obs = 0, first

        def moved_and_rendered() -> bool:
            return (
                obs.info["step"] > first.info["step"]
                and np.abs(obs.state - first.state).max() > 1e-3
                and all(f.index > first.images[n].index for n, f in obs.images.items())
            )

        deadline = time.monotonic() + 120.0
        while not moved_and_rendered() and time.monotonic() < deadline:
            k += 1
            robot.send(robot.spec.home + 0.02 * np.sin(0.3 * k))
            time.sleep(robot.spec.period_s)
            obs = robot.read()
        assert obs.info["step"] > first.info["step"]  # physics ticks in its process
        assert np.abs(obs.state - first.state).max() > 1e-3  # and applied the commands sent over shm
        for name, frame in obs.images.items():
            assert frame.image.shape == (3, H, W) and frame.image.dtype == np.uint8 and frame.image.any()
            assert frame.index > first.images[name].index
    finally:
        robot.stop()
    assert not any(shm_exists(b) for b in blocks)
    assert not any(_pid_alive(p) for p in pids)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie (not yet reaped) counts as gone
    try:
        return open(f"/proc/{pid}/stat").read().split()[2] != "Z"
    except OSError:
        return False


def test_kill_9_of_a_camera_process_is_a_fault_naming_the_camera() -> None:
    robot = SimRobot(cameras=sim_cameras(), realtime=True, max_state_age_s=30.0)
    robot.start()
    try:
        blocks = sim_blocks(robot)
        robot.read()
        os.kill(robot.cameras["left"]._remote.pid, signal.SIGKILL)
        with pytest.raises(RobotError, match=r"camera left: camera process \(pid \d+\) died: killed by signal 9"):
            wait_until(lambda: robot.read() is None, 120.0)  # read() raises once it sees the death
    finally:
        robot.stop()
    assert not any(shm_exists(b) for b in blocks)


def test_kill_9_of_the_physics_process_is_a_robot_fault() -> None:
    robot = SimRobot(cameras={}, realtime=True, max_state_age_s=30.0)
    robot.start()
    try:
        block = robot.physics_block()[0]
        robot.read()
        os.kill(robot._proc.pid, signal.SIGKILL)
        with pytest.raises(RobotError, match=r"sim physics process \(pid \d+\) died: killed by signal 9"):
            wait_until(lambda: robot.read() is None, 120.0)
        with pytest.raises(RobotError, match="sim physics process"):
            robot.home(1)
    finally:
        robot.stop()
    assert not shm_exists(block)
    robot.read()  # after stop: the last state, as before start


def test_a_failing_camera_process_reports_why(tmp_path) -> None:
    cam = OpenCVCamera(FrameSpec("head", 32, 24, 0.5), device=str(tmp_path / "missing.avi"))
    with pytest.raises(RobotError, match=r"camera head: video file .*missing.avi does not exist"):
        cam.start()
    with pytest.raises(RobotError, match="camera head"):
        cam.read()


CONTROL_SCRIPT = """
import sys, time
from functools import partial
from robots import gl
gl.select_backend()
from robots.cameras.base import FrameSpec
from robots.sim import SimCamera, SimRobot

if __name__ == "__main__":
    cams = {"head": partial(SimCamera, frames=FrameSpec("head", 32, 24, 2.0), source="top", fps=10)}
    robot = SimRobot(cameras=cams, realtime=True, max_state_age_s=2.0)
    robot.start()
    print(robot.physics_block()[0], robot.cameras["head"]._remote.ring.name, robot._proc.pid,
          robot.cameras["head"]._remote.pid, flush=True)
    time.sleep(60)
"""


def test_kill_9_of_the_control_process_leaves_no_device_and_no_shared_memory(tmp_path) -> None:
    script = tmp_path / "control.py"
    script.write_text(CONTROL_SCRIPT)
    proc = subprocess.Popen(
        [sys.executable, str(script)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    try:
        line = proc.stdout.readline().split()
        assert len(line) == 4, "control script did not start its devices"
        physics_block, ring, physics_pid, camera_pid = line[0], line[1], int(line[2]), int(line[3])
        assert shm_exists(physics_block) and shm_exists(ring)
        proc.send_signal(signal.SIGKILL)
        proc.wait(60)
        assert wait_until(lambda: not _pid_alive(physics_pid) and not _pid_alive(camera_pid), 120.0)
        assert wait_until(lambda: not shm_exists(physics_block) and not shm_exists(ring), 120.0)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_every_child_end_is_said_in_the_same_words():
    """``exit_cause`` reads ``multiprocessing``'s exitcode and ``subprocess``'s returncode alike
    (negative: the signal), as every child of the engine is reported."""
    import subprocess
    import sys

    from services.devproc import exit_cause

    assert exit_cause(None) == "still running"
    assert exit_cause(0) == "exited with code 0"
    assert exit_cause(3) == "exited with code 3"
    assert exit_cause(-9) == "killed by signal 9 (SIGKILL)"
    assert exit_cause(-15) == "killed by signal 15 (SIGTERM)"
    assert exit_cause(-999) == "killed by signal 999 (?)"
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    child.kill()
    assert exit_cause(child.wait(timeout=60)) == "killed by signal 9 (SIGKILL)"
