"""Who is woken by what (B7): each kind's change maps to the keys that depend on it, read from an
index filled by hand (no server: these are pure functions of the index)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aimd.api.sources import source_key
from aimd.api.types import ModelCache, Template, view
from aimd.caching import wiring
from aimd.caching.state import State, Store
from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.runtime import Informer, Manager

Object = dict[str, Any]
NS = "ns"


class Declarations:
    """The part of a Manager that State uses: one informer per resource, never started."""

    def __init__(self) -> None:
        self.informers: dict[tuple[Resource, str | None], Informer] = {}

    def informer(self, resource: Resource, **options: Any) -> Informer:
        key = (resource, options.get("label_selector"))
        if key not in self.informers:
            self.informers[key] = Informer(
                cast(KubeClient, None),
                resource,
                label_selector=options.get("label_selector"),
                transform=options.get("transform"),
            )
        return self.informers[key]


def add(store: Store[Any], obj: Mapping[str, Any]) -> None:
    store.informer.changed("ADDED", dict(obj))


def blank() -> State:
    return State(cast(Manager, Declarations()))


def meta(name: str, **extra: Any) -> Object:
    return {"name": name, "namespace": NS, "uid": f"uid-{name}", "resourceVersion": "1", **extra}


def template(name: str, *uris: str) -> Template:
    sources = [{"modelId": f"org/m{i}", "sourceUri": uri} for i, uri in enumerate(uris)]
    return view(
        {"metadata": meta(name), "spec": {"image": "img", "modelSources": sources}}, Template
    )


def template_cache(name: str, template_name: str, *listed: str) -> Object:
    return {
        "metadata": meta(name),
        "spec": {"templateName": template_name},
        "status": {"modelCaches": [{"sourceUri": uri} for uri in listed]},
    }


def model_cache(name: str, uri: str) -> ModelCache:
    return view({"metadata": meta(name), "spec": {"sourceUri": uri}}, ModelCache)


def service(name: str, template_name: str) -> Object:
    return {"metadata": meta(name), "spec": {"templateName": template_name, "cacheModel": True}}


def test_a_model_cache_wakes_every_template_cache_that_needs_or_lists_its_uri() -> None:
    s = blank()
    for store, obj in (
        (s.templates_ns, template("a", "hf://Org/Model")),
        (s.templates_ns, template("b", "s3://x/y")),
        (s.template_caches, template_cache("needs", "a")),
        (s.template_caches, template_cache("lists", "b", "hf://org/model")),
        (s.template_caches, template_cache("other", "b")),
    ):
        add(store, obj)
    keys = wiring.on_model_cache(s, None, model_cache("mc", "hf://org/model"))
    assert keys.model_caches == {(NS, source_key("hf://org/model"))}
    assert keys.template_caches == {(NS, "needs"), (NS, "lists")}


def test_a_template_wakes_its_caches_services_and_the_uris_it_needs_before_and_after() -> None:
    s = blank()
    add(s.template_caches, template_cache("tc", "a"))
    add(s.services, service("svc", "a"))
    old, new = template("a", "hf://org/old"), template("a", "hf://org/new")
    add(s.templates_ns, new)
    keys = wiring.on_template(s, old, new)
    assert keys.templates == {(NS, "a")}
    assert keys.template_caches == {(NS, "tc")}
    assert keys.services == {(NS, "svc")}
    assert keys.model_caches == {(NS, "hf://org/old"), (NS, "hf://org/new")}


def test_a_child_wakes_the_uri_of_the_model_cache_that_owns_it() -> None:
    mc = model_cache("mc", "s3://bucket/prefix/")
    s = blank()
    add(s.model_caches, mc)
    pvc = {"metadata": {**meta("mc-data"), "ownerReferences": [{"uid": "uid-mc"}]}}
    assert wiring.on_model_cache_child(s, None, pvc).model_caches == {(NS, "s3://bucket/prefix")}
    stranger = {"metadata": {**meta("x"), "ownerReferences": [{"uid": "nobody"}]}}
    assert wiring.on_model_cache_child(s, None, stranger).model_caches == set()


def test_a_workload_wakes_the_service_that_owns_it_by_uid_not_label() -> None:
    s = blank()
    long_name = "s" * 120
    add(s.services, service(long_name, "a"))
    deployment = {
        "metadata": {**meta("short"), "ownerReferences": [{"uid": f"uid-{long_name}"}]},
    }
    assert wiring.on_workload(s, None, deployment).services == {(NS, long_name)}


def test_a_terminating_namespace_wakes_every_finalized_object_in_it() -> None:
    s = blank()
    add(s.template_caches, template_cache("tc", "a"))
    add(s.services, service("svc", "a"))
    live = {"metadata": {"name": NS, "resourceVersion": "1"}}
    assert wiring.on_namespace(s, None, live) == wiring.Keys()
    going = {"metadata": {**live["metadata"], "deletionTimestamp": "2026-01-01T00:00:00Z"}}
    keys = wiring.on_namespace(s, live, going)
    assert keys.template_caches == {(NS, "tc")}
    assert keys.services == {(NS, "svc")}
