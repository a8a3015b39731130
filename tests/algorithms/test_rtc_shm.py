"""Shared-memory arrays and the seqlock the RTC transport uses (services/shm.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import time

import numpy as np
import pytest

from services.shm import ArraySpec, SeqLock, SharedArrays, ShmRegistry, unique_block_name

SPECS = [
    ArraySpec("seq", (1,), "int64"),
    ArraySpec("big", (3, 3, 240, 320), "uint8"),
    ArraySpec("vec", (7,), "float32"),
]


def _writer(name: str, n: int) -> None:
    arrays = SharedArrays.attach(name, SPECS)
    lock = SeqLock(arrays["seq"])
    for k in range(n):
        lock.write_begin()
        arrays["big"][...] = k % 251
        arrays["vec"][...] = k % 251
        lock.write_end()
    arrays.close()


def test_create_attach_layout_and_unlink():
    arrays = SharedArrays.create(SPECS, name=unique_block_name("test"))
    try:
        other = SharedArrays.attach(arrays.name, SPECS)
        other["vec"][3] = 5.0
        assert arrays["vec"][3] == 5.0
        assert arrays["big"].shape == (3, 3, 240, 320) and arrays["big"].dtype == np.uint8
        # arrays do not overlap
        arrays["big"][...] = 255
        assert other["vec"][3] == 5.0 and other["seq"][0] == 0
        other.close()
        assert os.path.exists(f"/dev/shm/{arrays.name}")  # a reader's close never unlinks
    finally:
        arrays.close()
    assert not os.path.exists(f"/dev/shm/{arrays.name}")
    arrays.close()  # twice is fine


def test_duplicate_spec_names_rejected():
    with pytest.raises(ValueError):
        SharedArrays.create([ArraySpec("a", (1,), "int64"), ArraySpec("a", (2,), "int64")])


def test_registry_releases_everything():
    a = SharedArrays.create(SPECS, name=unique_block_name("test"))
    ShmRegistry.add(a)
    ShmRegistry.release_all()
    assert not os.path.exists(f"/dev/shm/{a.name}")


def test_seqlock_reader_never_sees_a_torn_write():
    """A writer in another process rewrites a 2 MB array as fast as it can; every read the
    seqlock lets through is uniform (one write, never a mix of two)."""
    arrays = SharedArrays.create(SPECS, name=unique_block_name("test"))
    ShmRegistry.add(arrays)
    try:
        proc = mp.get_context("spawn").Process(target=_writer, args=(arrays.name, 3000))
        proc.start()
        lock = SeqLock(arrays["seq"])
        reads, torn_unlocked = 0, 0
        deadline = time.monotonic() + 120  # the writer's 3000 writes, however slow the host
        while proc.is_alive() and time.monotonic() < deadline:
            big, vec = lock.read(lambda: (arrays["big"].copy(), arrays["vec"].copy()))
            assert big.min() == big.max() == vec[0], "torn read through the seqlock"
            reads += 1
            raw = arrays["big"].copy()  # the same copy without the lock does tear
            torn_unlocked += int(raw.min() != raw.max())
        proc.join(120)
        assert proc.exitcode == 0
        assert reads > 10
    finally:
        ShmRegistry.release(arrays)
    assert not os.path.exists(f"/dev/shm/{arrays.name}")


def test_seqlock_times_out_on_a_dead_writer():
    counter = np.zeros(1, np.int64)
    lock = SeqLock(counter)
    lock.write_begin()  # writer "died" mid-write
    with pytest.raises(TimeoutError):
        lock.read(lambda: 1, timeout_s=0.05)


def test_rtc_reply_carries_what_the_policy_reported_and_nothing_it_did_not():
    """The shared-memory reply carries a policy's ``last_info`` keys that the wire has a slot for
    (select's stale gate), so a real-time run records them as the in-process transports do; a key
    the policy did not report stays absent rather than reading as 0."""
    from algorithms.rtc.layout import Layout, SharedState, build_specs, decode_reply, encode_reply

    H, A = 4, 2
    specs, keys, scalar = build_specs((1, 3), {}, {}, H, A)
    name = unique_block_name("test")
    arrays = SharedArrays.create(specs, name=name)
    try:
        shared = SharedState(arrays, Layout(name, tuple(specs), H, A, (), keys, scalar))
        chunk = np.arange(H * A, dtype=np.float32).reshape(H, A)
        n = encode_reply(shared, 7, chunk, chunk + 1, 1.0, 2.0, 3.5, {"select_stale": 1.0, "not_on_this_wire": 9})
        seq, reply = decode_reply(shared)
        assert seq == n and reply.seq == 7 and reply.policy_ms == 3.5 and dict(reply.fields) == {"select_stale": 1.0}
        np.testing.assert_array_equal(reply.robot, chunk + 1)
        encode_reply(shared, 8, chunk, chunk, 1.0, 2.0, 3.5)  # a policy with nothing to report
        assert dict(decode_reply(shared)[1].fields) == {}
        encode_reply(shared, 9, chunk, chunk, 1.0, 2.0, 3.5, {"select_stale": 0.0})
        assert dict(decode_reply(shared)[1].fields) == {"select_stale": 0.0}
    finally:
        arrays.close()
