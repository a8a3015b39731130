"""Frames between the engine and the LeRobot policy host: length-prefixed pickles of plain values.

Both ends run different interpreters (ours: Python 3.11, NumPy 2.x; LeRobot's: 3.12 with its own NumPy),
so arrays travel as ``("__nd__", dtype, shape, bytes)`` and every pickle holds builtins only: nothing
depends on the two NumPy versions agreeing on their pickled internals.
"""

from __future__ import annotations

import pickle
import struct
from typing import Any, BinaryIO

import numpy as np

_HEADER = struct.Struct("<Q")
_ND = "__nd__"


def pack(tree: Any) -> Any:
    if isinstance(tree, np.ndarray):
        arr = np.ascontiguousarray(tree)
        return (_ND, arr.dtype.str, tuple(arr.shape), arr.tobytes())
    if isinstance(tree, np.generic):
        return tree.item()
    if isinstance(tree, dict):
        return {k: pack(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(pack(v) for v in tree)
    return tree


def unpack(tree: Any) -> Any:
    if isinstance(tree, tuple) and len(tree) == 4 and tree[0] == _ND:
        return np.frombuffer(tree[3], dtype=np.dtype(tree[1])).reshape(tree[2]).copy()
    if isinstance(tree, dict):
        return {k: unpack(v) for k, v in tree.items()}
    if isinstance(tree, (list, tuple)):
        return type(tree)(unpack(v) for v in tree)
    return tree


def send(stream: BinaryIO, message: Any) -> None:
    payload = pickle.dumps(pack(message), protocol=4)
    stream.write(_HEADER.pack(len(payload)))
    stream.write(payload)
    stream.flush()


def recv(stream: BinaryIO) -> Any:
    """One message, or ``EOFError`` when the other end closed."""
    header = _read(stream, _HEADER.size)
    return unpack(pickle.loads(_read(stream, _HEADER.unpack(header)[0])))


def _read(stream: BinaryIO, n: int) -> bytes:
    chunks = []
    while n:
        chunk = stream.read(n)
        if not chunk:
            raise EOFError("policy host pipe closed")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)
