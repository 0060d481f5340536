"""The index: keys, secondary indexes kept exact through updates, and relist diffs."""

from __future__ import annotations

from typing import Any

import pytest

from aimd.runtime.index import Index, key_of


def obj(name: str, namespace: str | None = "ns", rv: str = "1", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": rv}
    if namespace:
        metadata["namespace"] = namespace
    metadata.update(extra.pop("metadata", {}))
    return {"metadata": metadata, **extra}


def name_of(o: dict[str, Any] | None) -> str:
    assert o is not None
    return str(o["metadata"]["name"])


def uri_index(o: dict[str, Any]) -> list[tuple[str, str]]:
    return [(o["metadata"]["namespace"], o["spec"]["sourceUri"])]


def test_keys_follow_client_go() -> None:
    assert key_of(obj("a")) == "ns/a"
    assert key_of(obj("node-1", namespace=None)) == "node-1"


def test_secondary_index_follows_updates_and_deletes() -> None:
    index = Index()
    index.add_index("uri", uri_index)
    index.apply(obj("a", spec={"sourceUri": "hf://x"}))
    index.apply(obj("b", spec={"sourceUri": "hf://x"}))
    assert [o["metadata"]["name"] for o in index.by("uri", ("ns", "hf://x"))] == ["a", "b"]
    index.apply(obj("a", rv="2", spec={"sourceUri": "hf://y"}))
    assert [o["metadata"]["name"] for o in index.by("uri", ("ns", "hf://x"))] == ["b"]
    assert [o["metadata"]["name"] for o in index.by("uri", ("ns", "hf://y"))] == ["a"]
    index.remove("ns/b")
    assert index.by("uri", ("ns", "hf://x")) == []
    with pytest.raises(KeyError):
        index.by("unknown", "x")


def app_label(o: dict[str, Any]) -> list[str]:
    labels = o["metadata"].get("labels") or {}
    return [labels["app"]] if "app" in labels else []


def test_an_index_declared_late_files_existing_objects() -> None:
    index = Index()
    index.apply(obj("a", metadata={"labels": {"app": "web"}}))
    index.add_index("app", app_label)
    assert [o["metadata"]["name"] for o in index.by("app", "web")] == ["a"]


def test_an_unreadable_object_is_stored_but_not_filed() -> None:
    index = Index()
    index.add_index("uri", uri_index)
    index.apply(obj("no-spec"))
    assert index.get("ns/no-spec") is not None


def test_namespace_index() -> None:
    index = Index()
    index.apply(obj("child"))
    index.apply(obj("other", namespace="elsewhere"))
    assert [o["metadata"]["name"] for o in index.list("elsewhere")] == ["other"]
    assert len(index.list()) == 2


def test_replace_reports_adds_changes_and_deletions_by_resource_version() -> None:
    index = Index()
    for name in ("same", "changed", "gone"):
        index.apply(obj(name))
    changes = index.replace([obj("same"), obj("changed", rv="2"), obj("new")])
    summary = [(t, name_of(new or old)) for t, old, new in changes]
    assert summary == [("MODIFIED", "changed"), ("ADDED", "new"), ("DELETED", "gone")]
    deleted = changes[-1]
    assert deleted[1] is not None
    assert deleted[1]["metadata"]["name"] == "gone"
    assert sorted(index.keys()) == ["ns/changed", "ns/new", "ns/same"]


def test_replace_of_one_namespace_leaves_the_others_alone() -> None:
    """One informer may list several namespaces into one index: a relist of one namespace
    must not take the other namespaces' objects for deletions."""
    index = Index()
    index.apply(obj("a", namespace="one"))
    index.apply(obj("b", namespace="one"))
    index.apply(obj("c", namespace="two"))
    changes = index.replace([obj("a", namespace="one")], namespace="one")
    assert [(t, name_of(new or old)) for t, old, new in changes] == [("DELETED", "b")]
    assert sorted(index.keys()) == ["one/a", "two/c"]
