"""An informer's transform shapes every object once, before the index and the handlers see it."""

from __future__ import annotations

from typing import Any, cast

from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.kube.watch import Listed
from aimd.runtime.informer import Informer

THINGS = Resource("example.com", "v1", "things", "Thing", True)


def tagged(obj: dict[str, Any]) -> dict[str, Any]:
    return {**obj, "status": obj.get("status") or {"seen": True}}


def thing(name: str, rv: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "namespace": "ns", "resourceVersion": rv}}


def test_listed_and_watched_objects_are_transformed_before_handlers_run() -> None:
    informer = Informer(cast(KubeClient, None), THINGS, transform=tagged)
    informer.add_index("seen", lambda o: [o["status"]["seen"]])
    handled: list[tuple[str, Any]] = []
    informer.add_handler(
        lambda event, old, new: handled.append(
            (event, (new if new is not None else old or {})["status"])
        )
    )

    informer.listed(Listed([thing("a", "1")], "1", "initial"))
    informer.changed("MODIFIED", thing("a", "2"))
    informer.changed("ADDED", thing("b", "3"))

    assert [o["metadata"]["name"] for o in informer.index.by("seen", True)] == ["a", "b"]
    assert handled == [
        ("ADDED", {"seen": True}),
        ("MODIFIED", {"seen": True}),
        ("ADDED", {"seen": True}),
    ]
