"""Read-your-own-writes: until the watch brings aimd's write back, a store answers with it."""

from __future__ import annotations

from typing import Any, cast

from aimd.caching.state import Store
from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.kube.watch import Listed
from aimd.runtime.informer import Informer

THINGS = Resource("example.com", "v1", "things", "Thing", True)


def thing(rv: str, status: str) -> dict[str, Any]:
    return {
        "metadata": {"name": "a", "namespace": "ns", "resourceVersion": rv},
        "status": {"status": status},
    }


def status_of(store: Store[Any]) -> str:
    found = store.get("a", "ns")
    assert found is not None
    return str(found["status"]["status"])


def store_with(*objects: dict[str, Any]) -> tuple[Informer, Store[Any]]:
    informer = Informer(cast(KubeClient, None), THINGS)
    store: Store[Any] = Store(informer)
    informer.listed(Listed(list(objects), "1", "initial"))
    return informer, store


def test_a_write_is_read_back_until_its_watch_event_comes() -> None:
    informer, store = store_with(thing("1", "Pending"))
    before = store.get("a", "ns")
    assert before is not None
    store.wrote(before, thing("2", "Available"))
    assert status_of(store) == "Available"
    # The watch brings the write: the index answers again, and so it does for what comes later.
    informer.changed("MODIFIED", thing("2", "Available"))
    informer.changed("MODIFIED", thing("3", "Failed"))
    assert status_of(store) == "Failed"


def test_another_writers_change_wins_over_a_remembered_write() -> None:
    informer, store = store_with(thing("1", "Pending"))
    store.wrote(thing("1", "Pending"), thing("2", "Progressing"))
    informer.changed("MODIFIED", thing("5", "Failed"))
    assert status_of(store) == "Failed"
    # A write the watch brought before it was recorded is not remembered at all.
    store.wrote(thing("1", "Failed"), thing("6", "Available"))
    assert status_of(store) == "Failed"
    # Nor is a write that changed nothing (same resourceVersion), nor one of a deleted object.
    store.wrote(thing("5", "Failed"), thing("5", "Failed"))
    informer.changed("DELETED", thing("7", "Failed"))
    store.wrote(thing("7", "Failed"), thing("8", "Available"))
    assert store.get("a", "ns") is None
