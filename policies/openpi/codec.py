"""msgpack with NumPy arrays, byte-compatible with ``openpi_client.msgpack_numpy``.

openpi's wire format (and so ours): a msgpack map per message; every ``np.ndarray`` becomes the
map ``{b"__ndarray__": True, b"data": <C-order bytes>, b"dtype": dtype.str, b"shape": shape}`` and
every NumPy scalar ``{b"__npgeneric__": True, b"data": item, b"dtype": dtype.str}``. Object, void
and complex dtypes are refused: nothing on the wire is ever unpickled. We keep our own copy
because ``openpi-client`` 0.1.2 pins ``numpy<2`` while this project runs on NumPy 2; the format
is plain msgpack, so the two interoperate (tests/test_openpi_interop.py runs openpi's own client
against our server).

Decoded arrays are read-only views of the received buffer (as in openpi); copy before writing.
"""

from __future__ import annotations

from typing import Any

import msgpack
import numpy as np

_REFUSED_KINDS = ("V", "O", "c")


class CodecError(ValueError):
    """A value cannot go on the wire (unsupported dtype) or a message is malformed."""


def _default(obj: Any) -> Any:
    if isinstance(obj, (np.ndarray, np.generic)) and obj.dtype.kind in _REFUSED_KINDS:
        raise CodecError(f"msgpack-numpy: unsupported dtype {obj.dtype} (object/void/complex never go on the wire)")
    if isinstance(obj, np.ndarray):
        return {
            b"__ndarray__": True,
            b"data": np.ascontiguousarray(obj).tobytes(),
            b"dtype": obj.dtype.str,
            b"shape": obj.shape,
        }
    if isinstance(obj, np.generic):
        return {b"__npgeneric__": True, b"data": obj.item(), b"dtype": obj.dtype.str}
    raise TypeError(f"msgpack-numpy: cannot serialize {type(obj).__name__}")


def _object_hook(obj: dict) -> Any:
    if b"__ndarray__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _REFUSED_KINDS:
            raise CodecError(f"msgpack-numpy: refusing array of dtype {dtype}")
        return np.ndarray(buffer=obj[b"data"], dtype=dtype, shape=tuple(obj[b"shape"]))
    if b"__npgeneric__" in obj:
        dtype = np.dtype(obj[b"dtype"])
        if dtype.kind in _REFUSED_KINDS:
            raise CodecError(f"msgpack-numpy: refusing scalar of dtype {dtype}")
        return dtype.type(obj[b"data"])
    return obj


def packb(obj: Any) -> bytes:
    """Serialize a tree of dicts/lists/str/numbers/NumPy arrays to msgpack bytes."""
    return msgpack.packb(obj, default=_default, use_bin_type=True)


def unpackb(data: bytes) -> Any:
    """Inverse of :func:`packb` (and of ``openpi_client.msgpack_numpy.packb``)."""
    try:
        return msgpack.unpackb(data, object_hook=_object_hook, raw=False, strict_map_key=False)
    except (
        msgpack.exceptions.ExtraData,
        msgpack.exceptions.FormatError,
        msgpack.exceptions.StackError,
        ValueError,
    ) as exc:
        if isinstance(exc, CodecError):
            raise
        raise CodecError(f"msgpack-numpy: malformed message ({exc})") from exc


class Packer:
    """Reusable packer (openpi's ``msgpack_numpy.Packer`` API: ``.pack(obj) -> bytes``)."""

    def __init__(self) -> None:
        self._packer = msgpack.Packer(default=_default, use_bin_type=True)

    def pack(self, obj: Any) -> bytes:
        return self._packer.pack(obj)
