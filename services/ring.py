"""Records in a shared-memory ring, drained by a process of their own (telemetry, recording).

The control loop must not lose time to what it reports: writing files, W&B, MCAP, JPEG encoding and
the status line all run in other processes, so they never hold the control process's interpreter.
What the control thread does per record is a few ``struct.pack_into`` calls and one ``np.copyto``
per array into a :class:`RecordRing`: one shared-memory block, one producer, one consumer, records
laid out back to back (8-byte aligned, a record never wraps: a zero length word sends the reader to
the start). The producer never waits: when the ring is full (or holds ``max_records`` unread), the
record is dropped and counted. Memory order: the record's bytes are stored before the head counter
that publishes them (CPython issues the stores in program order; x86 keeps store order), and the
reader reads the head before the bytes (like ``services.shm.SeqLock``).

Record: ``u32 length, u16 kind, u16 n_arrays``, then per array a 24-byte descriptor (dtype code,
ndim, up to 4 dims), then each array's bytes at an 8-byte aligned offset.

:class:`SinkProcess` starts the consumer (``python -m services.ring``: a fresh interpreter that
imports only what its worker needs, not the app), hands it the ring's name and a picklable worker
over a socket pair, and waits until the worker says it is ready (files open, W&B run started, encoder
warmed up), so nothing of it initialises after the first tick. ``stop()`` asks it to drain and
finish and returns what it sends back. A consumer whose parent died (even with its whole process
group: the consumer has a session of its own) drains, finishes, unlinks the ring and exits.
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Sequence
from multiprocessing import resource_tracker
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import numpy as np

from services.errors import AlgorithmFault, FaultKind
from services.logs import FILE_ONLY, LogSetup
from services.shm import ArraySpec, SharedArrays, unique_block_name

log = logging.getLogger(__name__)
LOG_FORMAT = "[%(asctime)s][%(name)s][%(levelname)s] - %(message)s"  # the app's (Hydra's) format

_HEAD, _TAIL, _DROPPED, _WRITTEN, _READ = range(5)  # in ring.counters
_RECORD = struct.Struct("<IHH")
_DESC_SIZE = 24
_DTYPES = tuple(np.dtype(d) for d in ("u1", "i1", "i4", "i8", "f4", "f8", "bool"))
_DTYPE_CODE = {d: i for i, d in enumerate(_DTYPES)}
_DESC = struct.Struct("<BB2x4I")  # 20 bytes, 4 of padding to _DESC_SIZE


def _align(n: int) -> int:
    return (n + 7) & ~7


class RecordRing:
    """One producer, one consumer; fixed layout per record (see the module docstring)."""

    def __init__(self, block: SharedArrays, max_records: int | None = None) -> None:
        self.block = block
        self.counters = block["ring.counters"]
        self.data = block["ring.data"]
        self.capacity = self.data.size
        self.buf = memoryview(self.data)
        self.max_records = max_records
        self._lock = threading.Lock()  # several control-process threads may produce
        self._closed = False

    @staticmethod
    def _specs(capacity_bytes: int) -> list[ArraySpec]:
        return [
            ArraySpec("ring.counters", (8,), "int64"),
            ArraySpec("ring.data", (_align(int(capacity_bytes)),), "uint8"),
        ]

    @classmethod
    def create(cls, capacity_bytes: int, max_records: int | None = None) -> RecordRing:
        # SharedArrays.create zeroes the block: every page is touched now, not on the first ticks
        ring = cls(SharedArrays.create(cls._specs(capacity_bytes), name=unique_block_name("rec")), max_records)
        atexit.register(ring.close)  # a run that never reached close(): no block left behind
        return ring

    @classmethod
    def attach(cls, name: str, capacity_bytes: int) -> RecordRing:
        block = SharedArrays.attach(name, cls._specs(capacity_bytes))
        # Python < 3.13 registers an attached block with this process's resource tracker (a fresh
        # interpreter has its own), which would unlink it at exit: only the creator unlinks.
        resource_tracker.unregister(block.shm._name, "shared_memory")  # noqa: SLF001
        return cls(block)

    @property
    def name(self) -> str:
        return self.block.name

    @property
    def dropped(self) -> int:
        return int(self.counters[_DROPPED])

    @property
    def written(self) -> int:
        return int(self.counters[_WRITTEN])

    # ------------------------------------------------------------------ producer
    def put(self, kind: int, arrays: Sequence[np.ndarray]) -> bool:
        """Copy one record in; False (and counted) when it does not fit. Never waits."""
        size = _RECORD.size + _DESC_SIZE * len(arrays)
        for a in arrays:
            size = _align(size) + a.nbytes
        size = _align(size)
        with self._lock:
            if self._closed:  # a late record (an exit path after close()): nowhere to go
                return False
            c = self.counters
            head, tail = int(c[_HEAD]), int(c[_TAIL])
            pos = head % self.capacity
            pad = self.capacity - pos if pos + size > self.capacity else 0
            full = self.max_records is not None and int(c[_WRITTEN]) - int(c[_READ]) >= self.max_records
            if full or size > self.capacity or head + pad + size - tail > self.capacity:
                c[_DROPPED] += 1
                return False
            if pad:
                _RECORD.pack_into(self.buf, pos, 0, 0, 0)  # "continue at the start"
                pos = 0
            _RECORD.pack_into(self.buf, pos, size, kind, len(arrays))
            off = pos + _RECORD.size + _DESC_SIZE * len(arrays)
            for i, a in enumerate(arrays):
                shape = tuple(a.shape) + (0,) * (4 - a.ndim)
                _DESC.pack_into(self.buf, pos + _RECORD.size + _DESC_SIZE * i, _DTYPE_CODE[a.dtype], a.ndim, *shape)
                off = _align(off)
                if a.flags.c_contiguous:  # one memcpy, no temporary
                    self.buf[off : off + a.nbytes] = a.data.cast("B") if a.ndim else a.tobytes()
                else:
                    np.copyto(self.data[off : off + a.nbytes].view(a.dtype).reshape(a.shape), a, casting="no")
                off += a.nbytes
            c[_WRITTEN] += 1
            c[_HEAD] = head + pad + size  # publish
            return True

    # ------------------------------------------------------------------ consumer
    def drain(self, handle: Callable[[int, list[np.ndarray]], None], limit: int | None = None) -> int:
        """Call ``handle(kind, arrays)`` for each unread record (``arrays`` are views into the ring,
        valid only during the call), then release it; returns how many were handled."""
        c, n = self.counters, 0
        head = int(c[_HEAD])
        while int(c[_TAIL]) < head and (limit is None or n < limit):
            tail = int(c[_TAIL])
            pos = tail % self.capacity
            size, kind, count = _RECORD.unpack_from(self.buf, pos)
            if size == 0:
                c[_TAIL] = tail + self.capacity - pos
                continue
            arrays, off = [], pos + _RECORD.size + _DESC_SIZE * count
            for i in range(count):
                code, ndim, *dims = _DESC.unpack_from(self.buf, pos + _RECORD.size + _DESC_SIZE * i)
                dtype, shape = _DTYPES[code], tuple(dims[:ndim])
                off = _align(off)
                nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
                arrays.append(self.data[off : off + nbytes].view(dtype).reshape(shape))
                off += nbytes
            try:
                handle(kind, arrays)
            finally:
                c[_READ] += 1
                c[_TAIL] = tail + size
            n += 1
        return n

    def close(self, orphaned: bool = False) -> None:
        """Unmap (the creator also unlinks; an ``orphaned`` attacher too); safe to call twice."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        del self.counters, self.data
        self.buf.release()
        self.block.close(orphaned)


def text_array(text: str) -> np.ndarray:
    return np.frombuffer(text.encode(), dtype=np.uint8)


def array_text(arr: np.ndarray) -> str:
    return arr.tobytes().decode()


class SinkProcess:
    """A consumer process for one ring: ``worker.run(ring, conn)`` in ``python -m services.ring``.

    ``worker`` is pickled to the child; it must send ``("ready", info)`` once warmed up, drain
    until it receives ``("stop", payload)``, then send ``("done", result)``.
    """

    def __init__(
        self, worker: Any, ring: RecordRing, name: str, ready_timeout_s: float = 120.0, python: str | None = None
    ) -> None:
        """``python``: the consumer's interpreter (default this one; e.g. LeRobot's for ``record=lerobot``)."""
        self.name = name
        self.ring = ring
        parent_sock, child_sock = socket.socketpair()
        self.conn = Connection(parent_sock.detach())
        root = str(Path(__file__).resolve().parents[1])
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH")) if p))
        t0 = time.monotonic()
        # A start that fails is a STARTUP fault naming the process (one line from the app, never a
        # traceback); the child's own traceback is in the run's log file.
        try:
            self.proc = subprocess.Popen(
                [python or sys.executable, "-m", "services.ring", str(child_sock.fileno())],
                pass_fds=[child_sock.fileno()],
                env=env,
                cwd=os.getcwd(),
                # its own session: Ctrl-C to the terminal's group or a kill of the whole group must not cut
                # it short; it learns that the control process is gone from the socket and finishes
                start_new_session=True,
            )
        except OSError as exc:
            child_sock.close()
            self.conn.close()
            raise AlgorithmFault(
                f"{name} process cannot start: {python or sys.executable}: {exc.strerror or exc}", FaultKind.STARTUP
            ) from None
        child_sock.close()
        self.conn.send_bytes(pickle.dumps((ring.name, ring.capacity, worker, LogSetup.current())))
        if not self.conn.poll(ready_timeout_s):
            self.kill()
            raise AlgorithmFault(f"{name} process not ready within {ready_timeout_s} s", FaultKind.STARTUP)
        try:
            kind, self.ready_info = self.conn.recv()
        except EOFError:
            self.kill()
            raise AlgorithmFault(f"{name} process died at start (exit {self.proc.wait()})", FaultKind.STARTUP) from None
        if kind != "ready":  # ("error", text)
            self.kill()
            raise AlgorithmFault(f"{name} process failed at start: {self.ready_info}", FaultKind.STARTUP)
        self.ready_s = time.monotonic() - t0

    def send(self, message: Any) -> None:
        self.conn.send(message)

    def stop(self, payload: Any = None, timeout_s: float = 600.0) -> Any:
        """Let it drain and finish (a long lockstep run may leave it a backlog: it is waited for
        while it lives, up to ``timeout_s``); its result, or None if it died or hung (then killed)."""
        result = None
        deadline = time.monotonic() + timeout_s
        try:
            self.conn.send(("stop", payload))
            while not self.conn.poll(1.0):
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    raise TimeoutError
            kind, result = self.conn.recv()
            if kind != "done":
                log.error("%s process: %s", self.name, result)
                result = None
        except (EOFError, OSError, TimeoutError):
            log.error("%s process did not finish (exit %s)", self.name, self.proc.poll())
        finally:
            self.kill()
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.wait(timeout=5.0)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.conn.close()


def _child_main(fd: int) -> None:
    parent = os.getppid()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the control process stops us once all is flushed
    try:
        os.nice(5)  # behind the control loop when the cores are busy
    except OSError:
        pass
    conn = Connection(fd)
    ring_name, capacity, worker, log_setup = pickle.loads(conn.recv_bytes())
    # stderr filtered like the app's console; the run's log file (Hydra's) appended to like the control process does
    log_setup.apply(LOG_FORMAT)
    ring = RecordRing.attach(ring_name, capacity)
    try:
        worker.run(ring, conn)
    except Exception as exc:  # noqa: BLE001 - reported to the parent, which logs it
        log.exception("sink process failed", extra=FILE_ONLY)  # the parent says it as one named line
        try:
            conn.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
        raise SystemExit(1) from None
    finally:
        ring.close(orphaned=os.getppid() != parent)


if __name__ == "__main__":
    logging.basicConfig(format=LOG_FORMAT)  # stderr, like the app (until the parent's LogSetup arrives)
    _child_main(int(sys.argv[1]))
