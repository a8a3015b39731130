"""The RTC runtime's shared-memory primitives live in ``services.shm`` (devices use them too)."""

from services.shm import ArraySpec, SeqLock, SharedArrays, ShmRegistry, unique_block_name

__all__ = ["ArraySpec", "SeqLock", "SharedArrays", "ShmRegistry", "unique_block_name"]
