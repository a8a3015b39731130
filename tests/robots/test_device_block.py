"""The device-process lifecycle the sim and gym robots share (``robots.device_block``), driven with a
real spawned process on a small block of its own: READY or the cause, home requests, reads, stop."""

from __future__ import annotations

import time
from collections.abc import Callable

import pytest

from robots.base import RobotError
from robots.device_block import (
    Ctl,
    DeviceBlock,
    control_specs,
    read_state,
    request_home,
    run_clock,
    stop_process,
    wait_ready,
)
from services.devproc import DeviceProcess
from services.shm import ArraySpec, SharedArrays, unique_block_name

SPECS = [ArraySpec("state.lock", (1,), "int64"), ArraySpec("state.i64", (3,), "int64")] + control_specs(2)


class CounterBlock(DeviceBlock):
    """state.i64: seq, the last home seed (-1: none asked, -2: homed without a seed), steps since it."""

    def write(self, seq: int, seed: int, steps: int) -> None:
        self.state_lock.write_begin()
        self.arrays["state.i64"][:] = (seq, seed, steps)
        self.state_lock.write_end()

    def state_seq(self) -> int:
        return int(self.arrays["state.i64"][0])

    def read_state(self) -> tuple[int, int, int]:
        return self.state_lock.read(lambda: tuple(int(v) for v in self.arrays["state.i64"]))


def _counter_device(block: str, failure: str, exit_code: int, *, parent_alive: Callable[[], bool]) -> None:
    """A device counting its steps at 100 Hz; ``failure``: fail at start with it; ``exit_code``: exit
    before READY with it (0: run)."""
    arrays = SharedArrays.attach(block, SPECS)
    shared = CounterBlock(arrays)
    try:
        if failure:
            shared.record_failure(ValueError(failure))
            raise SystemExit(1)
        if exit_code:
            raise SystemExit(exit_code)
        seq, seed, steps = shared.read_state()
        shared.write(seq + 1, -1, 0)
        shared.ctl[Ctl.READY] = 1

        def home(new_seed: int | None) -> None:
            s = shared.read_state()
            shared.write(s[0] + 1, -2 if new_seed is None else new_seed, 0)

        def step(deadline: float) -> None:
            s = shared.read_state()
            shared.write(s[0] + 1, s[1], s[2] + 1)

        run_clock(shared, 0.01, 5.0, parent_alive, step, home, "counter")
    finally:
        arrays.close(orphaned=not parent_alive())


@pytest.fixture
def block():
    arrays = SharedArrays.create(SPECS, name=unique_block_name("devblock"))
    yield arrays
    arrays.close()


def _start(arrays: SharedArrays, failure: str = "", exit_code: int = 0) -> tuple[DeviceProcess, CounterBlock]:
    proc = DeviceProcess("counter", _counter_device, (arrays.name, failure, exit_code))
    proc.start()
    return proc, CounterBlock(arrays)


def test_a_device_failing_at_start_is_a_robot_error_with_its_message_and_is_stopped(block) -> None:
    proc, shared = _start(block, failure="no such model")
    stopped = []
    with pytest.raises(RobotError, match=r"^counter process failed at start: ValueError: no such model$"):
        wait_ready(proc, shared, 60.0, "counter", lambda: stopped.append(stop_process(proc, shared)))
    assert len(stopped) == 1 and stopped[0]["ticks"] == 0 and not proc.alive()


def test_a_device_exiting_before_ready_is_named_by_its_exit_code(block) -> None:
    proc, shared = _start(block, exit_code=3)
    with pytest.raises(RobotError, match=r"^counter process failed at start: exited with code 3$"):
        wait_ready(proc, shared, 60.0, "counter", lambda: stop_process(proc, shared))


def test_a_running_device_homes_reads_and_stops_with_its_clock_stats(block) -> None:
    proc, shared = _start(block)
    try:
        wait_ready(proc, shared, 60.0, "counter", lambda: stop_process(proc, shared))
        request_home(proc, shared, 7, 60.0, "counter", "home")
        assert shared.read_state()[1] == 7  # answered only once the device reset with that seed
        request_home(proc, shared, None, 60.0, "counter", "home")
        assert shared.read_state()[1] == -2
        first = read_state(proc, shared, -1, "counter")
        deadline = time.monotonic() + 60.0
        while shared.state_seq() == first[0] and time.monotonic() < deadline:
            time.sleep(0.01)
        assert read_state(proc, shared, first[0], "counter")[0] > first[0]  # it steps on its own clock
    finally:
        stats = stop_process(proc, shared)
    assert stats["ticks"] >= 1 and set(stats) == set(Ctl.STATS)
    assert not proc.alive()


def test_a_dead_device_is_a_fault_naming_how_it_died(block) -> None:
    proc, shared = _start(block)
    try:
        wait_ready(proc, shared, 60.0, "counter", lambda: stop_process(proc, shared))
        proc.proc.kill()
        proc.proc.join(30.0)
        seq = shared.state_seq()
        with pytest.raises(RobotError, match=r"^counter process \(pid \d+\) died: killed by signal 9 \(SIGKILL\)$"):
            read_state(proc, shared, seq, "counter")  # nothing new since: is it still there?
        with pytest.raises(RobotError, match=r"^counter process \(pid \d+\) died: killed by signal 9"):
            request_home(proc, shared, 1, 60.0, "counter", "home")
    finally:
        stop_process(proc, shared)
