"""The rendezvous of episodes stepped side by side: when to answer their requests with one batch.

Pure logic, no threads or clocks (``algorithms/episode_batcher.py`` wraps it in a lock). A cell's
episode workers are its *live* members; a member that needs a chunk *parks* its request and waits.
When every live member is parked, the parked requests form one batch (sorted by their key, the
episode index, so a batch's rows do not depend on which thread parked first) and nobody is parked
any more. A member that has no episode left *leaves*; if everyone still live is parked then, the
leave completes the batch. Members run freely between requests (no per-tick barrier): each episode's
trajectory depends only on its own requests' answers, so a batch holds one request of every live
episode, the largest batch there can be.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Batch:
    """The requests answered together: ``(member, request)`` rows in key order."""

    rows: tuple[tuple[Hashable, Any], ...]

    @property
    def members(self) -> tuple[Hashable, ...]:
        return tuple(member for member, _ in self.rows)

    @property
    def requests(self) -> tuple[Any, ...]:
        return tuple(request for _, request in self.rows)


class Rendezvous:
    """Who is live, who is parked with which request; ``park`` / ``leave`` return the batch they
    complete (None while some live member still runs)."""

    def __init__(self, members: tuple[Hashable, ...] = ()) -> None:
        self.live: set[Hashable] = set()
        self._parked: dict[Hashable, tuple[Any, Any]] = {}  # member -> (key, request)
        for member in members:
            self.join(member)

    @property
    def parked(self) -> frozenset[Hashable]:
        return frozenset(self._parked)

    def join(self, member: Hashable) -> None:
        if member in self.live:
            raise ValueError(f"rendezvous: {member!r} is already live")
        self.live.add(member)

    def park(self, member: Hashable, request: Any, key: Any) -> Batch | None:
        """``member`` waits for ``request`` to be answered; ``key`` orders the batch's rows."""
        self._check_running(member)
        self._parked[member] = (key, request)
        return self._complete()

    def leave(self, member: Hashable) -> Batch | None:
        """``member`` has nothing more to ask: the others no longer wait for it."""
        self._check_running(member)
        self.live.remove(member)
        return self._complete()

    def _check_running(self, member: Hashable) -> None:
        if member not in self.live:
            raise ValueError(f"rendezvous: {member!r} is not live")
        if member in self._parked:
            raise ValueError(f"rendezvous: {member!r} is already parked")

    def _complete(self) -> Batch | None:
        if not self._parked or len(self._parked) < len(self.live):
            return None
        rows = sorted(self._parked.items(), key=lambda item: item[1][0])
        self._parked = {}
        return Batch(tuple((member, request) for member, (_key, request) in rows))
