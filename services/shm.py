"""Shared-memory numpy arrays from explicit specs, a seqlock, and a single-writer ring.

One ``multiprocessing.shared_memory`` block holds every array of a spec list at 64-byte aligned
offsets (diffusion_policy's ``shared_memory`` habit: name, shape, dtype per array, created once,
attached by name, unlinked by the creator). Nothing is pickled per tick: processes exchange the
spec list once at spawn and then read/write numpy views.

Cleanup: only the creator unlinks. With the ``spawn`` start method the child shares the parent's
``resource_tracker`` process, so a child attaching registers the same name again (a set: no
double unlink), and if the creator is killed with -9 the tracker unlinks the block when the last
process holding its pipe exits. ``ShmRegistry`` unlinks every block a process created on normal
exit, on exceptions (``try/finally``), on SIGTERM/SIGINT (handlers raise) and at interpreter exit
(``atexit``).
"""

from __future__ import annotations

import atexit
import logging
import os
import secrets
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from multiprocessing import shared_memory

import numpy as np

log = logging.getLogger(__name__)

_ALIGN = 64
_RETRY_SLEEP_S = 20e-6  # seqlock reader backoff while a write is in flight


@dataclass(frozen=True)
class ArraySpec:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64)) * np.dtype(self.dtype).itemsize


def _layout(specs: Iterable[ArraySpec]) -> tuple[dict[str, int], int]:
    offsets, offset = {}, 0
    for spec in specs:
        if spec.name in offsets:
            raise ValueError(f"duplicate shared array name {spec.name!r}")
        offsets[spec.name] = offset
        offset += -(-spec.nbytes // _ALIGN) * _ALIGN
    return offsets, max(offset, _ALIGN)


def unique_block_name(tag: str) -> str:
    """``rtc_<tag>_<pid>_<random>``: unique per run, short enough for macOS' 31-char limit."""
    return f"rtc_{tag}_{os.getpid()}_{secrets.token_hex(4)}"


class SharedArrays:
    """Numpy views over one shared-memory block, by spec name (``arrays["obs.state"]``)."""

    def __init__(self, shm: shared_memory.SharedMemory, specs: list[ArraySpec], owner: bool) -> None:
        self.shm = shm
        self.specs = list(specs)
        self.owner = owner
        offsets, _ = _layout(self.specs)
        self.arrays: dict[str, np.ndarray] = {
            spec.name: np.ndarray(spec.shape, np.dtype(spec.dtype), buffer=shm.buf, offset=offsets[spec.name])
            for spec in self.specs
        }
        self._closed = False

    @property
    def name(self) -> str:
        return self.shm.name

    @classmethod
    def create(cls, specs: list[ArraySpec], name: str | None = None) -> SharedArrays:
        _, size = _layout(specs)
        shm = shared_memory.SharedMemory(name=name or unique_block_name("blk"), create=True, size=size)
        arrays = cls(shm, specs, owner=True)
        for arr in arrays.arrays.values():
            arr.fill(0)
        return arrays

    @classmethod
    def attach(cls, name: str, specs: list[ArraySpec]) -> SharedArrays:
        shm = shared_memory.SharedMemory(name=name, create=False)
        return cls(shm, specs, owner=False)

    def __getitem__(self, key: str) -> np.ndarray:
        return self.arrays[key]

    def close(self, orphaned: bool = False) -> None:
        """Drop the views and unmap; the creator also unlinks, and so does an attached process that
        outlived it (``orphaned``: the creator was killed with -9, alone or with its whole process
        group, resource tracker included, so nobody else will). Safe to call twice."""
        if orphaned and not self._closed:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass
        if self._closed:
            return
        self._closed = True
        self.arrays = {}
        try:
            self.shm.close()
        except BufferError:  # a view escaped; the mapping goes away with the process
            log.debug("shared block %s still has exported views", self.shm.name)
        if self.owner:
            try:
                self.shm.unlink()
            except FileNotFoundError:
                pass


class SeqLock:
    """Single-writer sequence lock over a 1-element int64 shared counter.

    The writer makes the counter odd, writes, makes it even; a reader copies and retries until it
    saw the same even value before and after. The writer never waits, so a reader that dies (even
    by kill -9) can never block the control loop, unlike a process-shared mutex. Python statements
    and numpy copies are issued in program order; on x86 (TSO) stores are not reordered.
    """

    def __init__(self, counter: np.ndarray) -> None:
        if counter.dtype != np.int64 or counter.size != 1:
            raise ValueError("seqlock counter must be a 1-element int64 array")
        self.counter = counter.reshape(-1)

    def write_begin(self) -> None:
        self.counter[0] += 1

    def write_end(self) -> None:
        self.counter[0] += 1

    def read(self, copy_fn, timeout_s: float = 1.0):
        """Call ``copy_fn()`` (which must copy, not view) until it ran without a concurrent write."""
        deadline = time.monotonic() + timeout_s
        while True:
            before = int(self.counter[0])
            if before % 2 == 0:
                result = copy_fn()
                if int(self.counter[0]) == before:
                    return result
            if time.monotonic() > deadline:
                raise TimeoutError("seqlock: writer stuck mid-write (dead writer?)")
            # a real sleep, not sched_yield: a reader at SCHED_FIFO must let a preempted writer run
            time.sleep(_RETRY_SLEEP_S)


class ShmRegistry:
    """Every block this process created, unlinked on exit however it happens (except kill -9 of
    the creator, which the resource tracker covers)."""

    _lock = threading.Lock()
    _blocks: dict[str, SharedArrays] = {}
    _installed = False

    @classmethod
    def add(cls, arrays: SharedArrays) -> None:
        with cls._lock:
            cls._blocks[arrays.name] = arrays
            if not cls._installed:
                atexit.register(cls.release_all)
                cls._installed = True

    @classmethod
    def release(cls, arrays: SharedArrays) -> None:
        with cls._lock:
            cls._blocks.pop(arrays.name, None)
        arrays.close()

    @classmethod
    def release_all(cls) -> None:
        with cls._lock:
            blocks = list(cls._blocks.values())
            cls._blocks.clear()
        for arrays in blocks:
            arrays.close()


def _readonly(view: np.ndarray) -> np.ndarray:
    out = view.view()
    out.flags.writeable = False
    return out


def write_text(buf: np.ndarray, text: str) -> None:
    """Store a one-line message in a shared uint8 buffer (truncated, NUL-terminated)."""
    raw = text.encode("utf-8", "replace")[: buf.size - 1]
    buf[: len(raw)] = np.frombuffer(raw, np.uint8)
    buf[len(raw)] = 0


def read_text(buf: np.ndarray) -> str:
    return bytes(buf).split(b"\0", 1)[0].decode("utf-8", "replace")


class ShmRing:
    """Single-writer ring of ``slots`` fixed-size samples in one shared block, newest by index.

    Every sample is the arrays of ``fields`` (name -> (shape, dtype), e.g. an image) plus its
    ``capture_time`` and ``receive_time`` (monotonic s) and the source's ``index``. ``head`` counts
    the samples written; sample ``n`` (from 1) lives in slot ``n % slots``, whose ``ring.seq`` is
    ``-n`` while it is written and ``n`` once complete. A reader takes ``n = head``, copies slot
    ``n % slots`` and keeps the copy only if that slot still says ``n`` afterwards (the writer did
    not lap the ring meanwhile); otherwise it retries with the newer head. The writer never waits
    for readers, so a dead or slow reader cannot stall it, and a dead writer leaves the newest
    complete sample readable (its times tell how old it is).

    ``status`` is a small int64 vector the writer owns (pid, state) and ``message`` a byte buffer
    for a one-line failure cause, so a device process can say why it stopped.
    """

    STATE_STARTING, STATE_RUNNING, STATE_FAILED, STATE_STOPPED = 0, 1, 2, 3
    PID, STATE, STOP, N_STATUS = 0, 1, 2, 3
    MESSAGE_BYTES = 512

    def __init__(self, arrays: SharedArrays, fields: dict[str, tuple[tuple[int, ...], str]], slots: int) -> None:
        self.arrays = arrays
        self.fields = dict(fields)
        self.slots = int(slots)
        self.head = arrays["ring.head"]
        self.seq = arrays["ring.seq"]
        self.times = arrays["ring.times"]  # (slots, 2): capture, receive
        self.index = arrays["ring.index"]
        self.status = arrays["ring.status"]
        self.message = arrays["ring.message"]
        self.data = {name: arrays[f"ring.{name}"] for name in self.fields}
        # the reader's hot path: plain memoryviews (indexing gives Python numbers without numpy
        # scalars) and one view per slot, made once
        self._head_mv = memoryview(self.head)
        self._seq_mv = memoryview(self.seq)
        self._times_mv = memoryview(self.times.reshape(-1))
        self._index_mv = memoryview(self.index)
        self._slot_views = {name: [arr[k] for k in range(self.slots)] for name, arr in self.data.items()}
        self._readonly_views = {name: [_readonly(v) for v in views] for name, views in self._slot_views.items()}
        self._closed = False

    @staticmethod
    def specs(fields: dict[str, tuple[tuple[int, ...], str]], slots: int) -> list[ArraySpec]:
        if slots < 2:
            raise ValueError(f"a ring needs >= 2 slots (got {slots})")
        out = [
            ArraySpec("ring.head", (1,), "int64"),
            ArraySpec("ring.seq", (slots,), "int64"),
            ArraySpec("ring.times", (slots, 2), "float64"),
            ArraySpec("ring.index", (slots,), "int64"),
            ArraySpec("ring.status", (ShmRing.N_STATUS,), "int64"),
            ArraySpec("ring.message", (ShmRing.MESSAGE_BYTES,), "uint8"),
        ]
        out += [
            ArraySpec(f"ring.{name}", (slots, *tuple(shape)), str(dtype)) for name, (shape, dtype) in fields.items()
        ]
        return out

    @classmethod
    def create(cls, fields: dict[str, tuple[tuple[int, ...], str]], slots: int, tag: str = "ring") -> ShmRing:
        """Create (and register for unlinking) a new ring; its ``name`` attaches it elsewhere."""
        arrays = SharedArrays.create(cls.specs(fields, slots), name=unique_block_name(tag))
        ShmRegistry.add(arrays)
        return cls(arrays, fields, slots)

    @classmethod
    def attach(cls, name: str, fields: dict[str, tuple[tuple[int, ...], str]], slots: int) -> ShmRing:
        return cls(SharedArrays.attach(name, cls.specs(fields, slots)), fields, slots)

    @property
    def name(self) -> str:
        return self.arrays.name

    def newest(self) -> int:
        """Number of the newest complete sample (0: none yet)."""
        return self._head_mv[0]

    def close(self, orphaned: bool = False) -> None:
        """Unmap (the creator also unlinks; an ``orphaned`` attacher too, see ``SharedArrays.close``)."""
        for mv in (self._head_mv, self._seq_mv, self._times_mv, self._index_mv):
            mv.release()
        self._slot_views = {}
        self._readonly_views = {}
        self._closed = True
        self.head = self.seq = self.times = self.index = self.status = self.message = None
        self.data = {}
        if self.arrays.owner:
            ShmRegistry.release(self.arrays)
        else:
            self.arrays.close(orphaned)

    # ------------------------------------------------------------------ writer
    def slot_for_write(self) -> tuple[int, int]:
        """Begin sample ``n = head + 1``: returns (n, slot) with the slot marked as being written."""
        n = int(self.head[0]) + 1
        slot = n % self.slots
        self.seq[slot] = -n
        return n, slot

    def commit(self, n: int, slot: int, capture_time: float, receive_time: float, index: int) -> None:
        self.times[slot, 0] = capture_time
        self.times[slot, 1] = receive_time
        self.index[slot] = index
        self.seq[slot] = n
        self.head[0] = n

    def write(self, capture_time: float, receive_time: float, index: int, **values: np.ndarray) -> int:
        """Copy one sample in (``values``: one array per field); returns its number."""
        n, slot = self.slot_for_write()
        for name, value in values.items():
            np.copyto(self.data[name][slot], value)
        self.commit(n, slot, capture_time, receive_time, index)
        return n

    def set_message(self, text: str) -> None:
        write_text(self.message, text)

    def get_message(self) -> str:
        return read_text(self.message)

    # ------------------------------------------------------------------ reader
    def read_newest(self, out: dict[str, np.ndarray], retries: int = 8) -> tuple[int, float, float, int]:
        """Copy the newest complete sample into ``out`` (one array per field, preallocated).

        Returns (n, capture_time, receive_time, index); n == 0 when nothing was written yet (``out``
        untouched). Raises ``TimeoutError`` if the writer lapped the ring ``retries`` times in a row.
        """
        head, seq, times, index, views = self._head_mv, self._seq_mv, self._times_mv, self._index_mv, self._slot_views
        for _ in range(retries):
            n = head[0]
            if n == 0:
                return 0, 0.0, 0.0, 0
            slot = n % self.slots
            capture, receive, idx = times[2 * slot], times[2 * slot + 1], index[slot]
            for name, dst in out.items():
                np.copyto(dst, views[name][slot])
            if seq[slot] == n:
                return n, capture, receive, idx
        raise TimeoutError(f"ring {self.name}: writer lapped the reader {retries} times")

    def view_newest(self, name: str, retries: int = 8) -> tuple[int, float, float, int, np.ndarray | None]:
        """The newest complete sample of field ``name`` without copying it: (n, capture_time,
        receive_time, index, read-only view of its slot); n == 0 and no view before the first.

        The view stays that sample until the writer comes round to its slot again (``slots - 1``
        samples later): whoever copies it checks ``intact(n)`` after the copy (as a seqlock reader
        does), and a sample held longer than that must be copied first.
        """
        head, seq, times, index = self._head_mv, self._seq_mv, self._times_mv, self._index_mv
        for _ in range(retries):
            n = head[0]
            if n == 0:
                return 0, 0.0, 0.0, 0, None
            slot = n % self.slots
            capture, receive, idx = times[2 * slot], times[2 * slot + 1], index[slot]
            if seq[slot] == n:
                return n, capture, receive, idx, self._readonly_views[name][slot]
        raise TimeoutError(f"ring {self.name}: writer lapped the reader {retries} times")

    def intact(self, n: int) -> bool:
        """True while sample ``n``'s slot still holds it (no rewrite has begun). A closed ring's
        views no longer change (the writer is gone), so they stay intact."""
        return self._closed or self._seq_mv[n % self.slots] == n
