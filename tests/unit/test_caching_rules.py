"""The seed's rules as pure functions (aimd/caching/rules.py), each on its own."""

from __future__ import annotations

from typing import Any

from aimd.caching.rules import (
    Release,
    is_available,
    may_delete,
    plan_release,
    prefer_available_then_oldest,
    worst,
)

Object = dict[str, Any]


def cache(name: str, status: str | None = None, created: str = "2026-01-01T00:00:00Z") -> Object:
    return {
        "metadata": {"name": name, "uid": name, "creationTimestamp": created},
        "spec": {},
        "status": {"status": status} if status else {},
    }


def going(obj: Object) -> Object:
    obj["metadata"]["deletionTimestamp"] = "2026-01-02T00:00:00Z"
    return obj


def test_an_available_cache_is_preserved_when_its_creator_goes() -> None:
    plan = plan_release(cache("c", "Available"), [cache("other")], available=True)
    assert plan.action is Release.KEEP


def test_a_cache_nobody_else_waits_for_is_deleted() -> None:
    for status in ("Pending", "Progressing", "Failed", None):
        assert plan_release(cache("c", status), [], available=False).action is Release.DELETE


def test_a_cache_another_consumer_waits_for_goes_to_the_oldest_of_them() -> None:
    consumers = [
        cache("young", created="2026-03-01T00:00:00Z"),
        cache("old", created="2026-02-01T00:00:00Z"),
        going(cache("older", created="2026-01-01T00:00:00Z")),
    ]
    plan = plan_release(cache("c", "Progressing"), consumers, available=False)
    assert plan.action is Release.HAND_OVER
    assert plan.heir == "old", "a consumer that is itself going inherits nothing"


def test_a_cache_already_going_is_left_alone() -> None:
    assert plan_release(going(cache("c", "Failed")), [], available=False).action is Release.KEEP


def test_every_consumer_picks_the_same_cache_available_first_then_the_oldest() -> None:
    old_failed = cache("a", "Failed", "2025-01-01T00:00:00Z")
    new_ready = cache("b", "Available", "2026-01-01T00:00:00Z")
    newer_ready = cache("c", "Available", "2026-06-01T00:00:00Z")
    assert prefer_available_then_oldest([newer_ready, old_failed, new_ready]) is new_ready
    assert prefer_available_then_oldest([cache("y", "Pending"), old_failed]) is old_failed
    assert prefer_available_then_oldest([going(cache("z", "Available"))]) is None
    assert prefer_available_then_oldest([]) is None


def test_a_template_cache_is_as_far_as_its_least_advanced_model_cache() -> None:
    assert worst(["Available", "Progressing", "Pending"]) == "Pending"
    assert worst(["Progressing", "Failed"]) == "Failed"
    assert worst([]) == "Pending"


def test_an_available_cache_may_never_be_deleted_by_aimd() -> None:
    assert not may_delete(cache("c", "Available"))
    assert may_delete(cache("c", "Progressing"))
    assert is_available(cache("c", "Available"))
    assert not is_available(None)
