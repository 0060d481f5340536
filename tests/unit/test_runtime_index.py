"""The index: keys, secondary indexes kept exact through updates, and relist diffs."""

from __future__ import annotations

from typing import Any

import pytest

from aimd.runtime.index import Index, controller_uid, key_of, label, owner_uids


def obj(name: str, namespace: str | None = "ns", rv: str = "1", **extra: Any) -> dict[str, Any]:
    metadata: dict[str, Any] = {"name": name, "resourceVersion": rv}
    if namespace:
        metadata["namespace"] = namespace
    metadata.update(extra.pop("metadata", {}))
    return {"metadata": metadata, **extra}


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
    assert ("ns", "hf://x") not in index.values("uri"), "empty values do not linger"
    with pytest.raises(KeyError):
        index.by("unknown", "x")


def test_an_index_declared_late_files_existing_objects() -> None:
    index = Index()
    index.apply(obj("a", metadata={"labels": {"app": "web"}}))
    index.add_index("app", label("app"))
    assert [o["metadata"]["name"] for o in index.by("app", "web")] == ["a"]


def test_an_unreadable_object_is_stored_but_not_filed() -> None:
    index = Index()
    index.add_index("uri", uri_index)
    index.apply(obj("no-spec"))
    assert index.get("ns/no-spec") is not None
    assert index.values("uri") == []


def test_owner_and_namespace_indexes() -> None:
    index = Index()
    index.add_index("owner", owner_uids)
    index.add_index("controller", controller_uid)
    refs = [{"uid": "u1", "controller": True}, {"uid": "u2"}]
    index.apply(obj("child", metadata={"ownerReferences": refs}))
    index.apply(obj("other", namespace="elsewhere"))
    assert [o["metadata"]["name"] for o in index.by("owner", "u2")] == ["child"]
    assert index.by("controller", "u2") == []
    assert [o["metadata"]["name"] for o in index.list("elsewhere")] == ["other"]
    assert len(index.list()) == 2


def test_replace_reports_adds_changes_and_deletions_by_resource_version() -> None:
    index = Index()
    for name in ("same", "changed", "gone"):
        index.apply(obj(name))
    changes = index.replace([obj("same"), obj("changed", rv="2"), obj("new")])
    summary = [(t, (new or old)["metadata"]["name"]) for t, old, new in changes]
    assert summary == [("MODIFIED", "changed"), ("ADDED", "new"), ("DELETED", "gone")]
    deleted = changes[-1]
    assert deleted[1] is not None
    assert deleted[1]["metadata"]["name"] == "gone"
    assert sorted(index.keys()) == ["ns/changed", "ns/new", "ns/same"]
