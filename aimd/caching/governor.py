"""The download governor: at most ``--max-concurrent-downloads`` download Jobs run at once,
cluster-wide (0: no cap). The others wait their turn, Pending with reason
``WaitingForDownloadSlot`` and their place in the queue.

Whose turn: caches a live service waits for come first (someone is waiting to serve), then the
rest, oldest first. The decision is level-based like the rest: who holds a slot and who waits is
read from the index (a cache holds a slot while its status says it is downloading); the only
memory is of slots this process granted that the index has not caught up with (the cache's
resourceVersion is still the one it had when its slot was granted), so two workers cannot both
take the last slot.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from aimd.api.meta import condition, live
from aimd.api.reasons import Reason
from aimd.api.types import ModelCache

# A granted slot counts until the index shows the cache changed since (the status that records
# the download), or at most this many seconds.
GRANT_MEMORY = 60.0
# A waiting cache looks again this often even if no slot's release woke it.
WAIT_RECHECK = 60.0


def downloading(mc: ModelCache) -> bool:
    """The cache holds a slot: its status says a download Job runs for it."""
    ready = condition(mc, "Ready")
    return (
        live(mc)
        and mc["status"].get("status") == "Progressing"
        and ready is not None
        and ready.get("reason") == Reason.DOWNLOADING
    )


def waiting(mc: ModelCache) -> bool:
    ready = condition(mc, "Ready")
    return (
        live(mc) and ready is not None and ready.get("reason") == Reason.WAITING_FOR_DOWNLOAD_SLOT
    )


def queue_order(mc: ModelCache, urgent: bool) -> tuple[bool, str, str]:
    """Sort key of the queue: urgent first, then by creation, then by name."""
    meta = mc["metadata"]
    return (not urgent, meta.get("creationTimestamp", ""), f"{meta['namespace']}/{meta['name']}")


def place_in_queue(
    candidate: ModelCache,
    waiters: Iterable[ModelCache],
    holders: int,
    limit: int,
    urgent: Callable[[ModelCache], bool],
) -> int:
    """0 if ``candidate`` may start its download now, else its place in the queue (1: next).

    ``holders`` slots are taken; ``waiters`` are the other caches waiting for one. The free slots
    go to the first of the queue, so a candidate behind others waits even when a slot is free
    (they are woken too, and take it)."""
    if limit <= 0:
        return 0
    uid = candidate["metadata"]["uid"]
    queue = sorted(
        {mc["metadata"]["uid"]: mc for mc in [*waiters, candidate]}.values(),
        key=lambda mc: queue_order(mc, urgent(mc)),
    )
    position = next(i for i, mc in enumerate(queue) if mc["metadata"]["uid"] == uid)
    free = max(0, limit - holders)
    return 0 if position < free else position - free + 1


def said_place(place: int) -> str:
    """A place as the status says it: exact near the front, in tens further back (a place that
    changes with every download that ends would otherwise be a write on every waiting cache)."""
    if place <= 10:
        return f"{place}{_suffix(place)}"
    return f"about {round(place, -1)}th"


def _suffix(n: int) -> str:
    return {1: "st", 2: "nd", 3: "rd"}.get(n if n < 20 else n % 10, "th")


@dataclass
class Governor:
    """The cap, and the slots this process granted that the index does not show yet."""

    limit: int
    clock: Callable[[], float] = time.monotonic
    _granted: dict[str, tuple[str, float]] = field(default_factory=dict)  # uid → (rv, when)

    @property
    def capped(self) -> bool:
        return self.limit > 0

    def place(
        self,
        candidate: ModelCache,
        caches: Sequence[ModelCache],
        urgent: Callable[[ModelCache], bool],
    ) -> int:
        """0 (start now, and the slot is held from this moment) or the place in the queue."""
        if not self.capped:
            return 0
        now = self.clock()
        holding = {mc["metadata"]["uid"] for mc in caches if downloading(mc)}
        versions = {mc["metadata"]["uid"]: mc["metadata"].get("resourceVersion") for mc in caches}
        self._granted = {
            uid: (rv, at)
            for uid, (rv, at) in self._granted.items()
            if now - at < GRANT_MEMORY and versions.get(uid) == rv
        }
        uid = candidate["metadata"]["uid"]
        if uid in holding or uid in self._granted:
            return 0
        waiters = [mc for mc in caches if waiting(mc) and mc["metadata"]["uid"] != uid]
        taken = len(holding | self._granted.keys())
        place = place_in_queue(candidate, waiters, taken, self.limit, urgent)
        if place == 0:
            self._granted[uid] = (candidate["metadata"].get("resourceVersion", ""), now)
        return place
