"""The download governor's order and bookkeeping, as pure functions (issue 13)."""

from __future__ import annotations

from typing import Any

from aimd.api.types import ModelCache, view
from aimd.caching.governor import Governor, place_in_queue, said_place


def cache(name: str, created: str, reason: str | None = None) -> ModelCache:
    status: dict[str, Any] = {}
    if reason == "Downloading":
        status["status"] = "Progressing"
    if reason:
        status["conditions"] = [{"type": "Ready", "status": "False", "reason": reason}]
    return view(
        {
            "metadata": {
                "name": name,
                "namespace": "ns",
                "uid": name,
                "creationTimestamp": created,
                "resourceVersion": "1",
            },
            "spec": {"sourceUri": f"hf://org/{name}"},
            "status": status,
        },
        ModelCache,
    )


OLD, MID, NEW = "2026-01-01T00:00:00Z", "2026-01-02T00:00:00Z", "2026-01-03T00:00:00Z"


def never(mc: ModelCache) -> bool:
    return False


def test_without_a_cap_every_download_starts() -> None:
    assert (
        place_in_queue(cache("a", OLD), [cache("b", OLD)], holders=99, limit=0, urgent=never) == 0
    )


def test_caches_a_service_waits_for_go_first_then_the_oldest() -> None:
    old, mid, new = cache("old", OLD), cache("mid", MID), cache("new", NEW)

    def wanted(mc: ModelCache) -> bool:
        return mc["metadata"]["name"] == "new"

    assert place_in_queue(new, [old, mid], holders=1, limit=1, urgent=wanted) == 1
    assert place_in_queue(old, [mid, new], holders=1, limit=1, urgent=wanted) == 2
    assert place_in_queue(mid, [old, new], holders=1, limit=1, urgent=wanted) == 3
    assert place_in_queue(new, [old, mid], holders=0, limit=1, urgent=wanted) == 0
    assert place_in_queue(old, [mid, new], holders=0, limit=1, urgent=wanted) == 1, (
        "a free slot goes to the head of the queue, not to whoever asks first"
    )


def test_a_granted_slot_counts_until_the_index_shows_its_download() -> None:
    now = [0.0]
    governor = Governor(limit=1, clock=lambda: now[0])
    first, second = cache("first", OLD), cache("second", MID)
    assert governor.place(first, [first, second], never) == 0
    assert governor.place(second, [first, second], never) == 1, "the grant is held in memory"
    shown = cache("first", OLD, reason="Downloading")
    shown["metadata"]["resourceVersion"] = "2"
    assert governor.place(second, [shown, second], never) == 1, "and then by the index"
    done = cache("first", OLD, reason="Available")
    done["metadata"]["resourceVersion"] = "3"
    assert governor.place(second, [done, second], never) == 0


def test_a_grant_the_index_never_saw_expires() -> None:
    now = [0.0]
    governor = Governor(limit=1, clock=lambda: now[0])
    first, second = cache("first", OLD), cache("second", MID)
    assert governor.place(first, [first, second], never) == 0
    now[0] = 61.0
    assert governor.place(second, [first, second], never) == 0


def test_places_far_back_are_said_in_tens() -> None:
    assert [said_place(n) for n in (1, 2, 3, 4, 11)] == ["1st", "2nd", "3rd", "4th", "about 10th"]
    assert said_place(44) == said_place(41) == "about 40th"
