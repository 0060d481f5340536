"""Who is woken by what (B7): each kind's change maps to the keys that depend on it, read from an
index filled by hand (no server: these are pure functions of the index)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

from aimd.api.sources import source_key
from aimd.api.types import ModelCache, Service, Template, TemplateCache, view
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


def with_status(tc: Object, **status: Any) -> Object:
    return {**tc, "status": {**tc["status"], **status}}


def test_a_template_cache_wakes_its_services_only_when_it_changes_what_they_read() -> None:
    s = blank()
    add(s.services, service("svc", "a"))
    tc = template_cache("tc", "a", "hf://org/model")
    pending = with_status(tc, status="Pending")
    progressing = with_status(tc, status="Progressing")
    refs = [{"uid": "uid-a", "kind": "AIMServiceTemplate"}]
    owned = {**progressing, "metadata": {**progressing["metadata"], "ownerReferences": refs}}
    available = with_status(
        tc,
        status="Available",
        modelCaches=[{"sourceUri": "hf://org/model", "persistentVolumeClaim": "pvc-1"}],
    )
    moved = with_status(available, modelCaches=[{"sourceUri": "hf://org/model"}])
    failed = with_status(tc, status="Failed", conditions=[{"type": "Ready", "reason": "X"}])
    failed_again = with_status(failed, conditions=[{"type": "Ready", "reason": "Y"}])
    going = {**available, "metadata": {**available["metadata"], "deletionTimestamp": "t"}}

    def woken(old: Object | None, new: Object | None) -> set[tuple[str, str]]:
        keys = wiring.on_template_cache(
            s, view(old, TemplateCache) if old else None, view(new, TemplateCache) if new else None
        )
        assert keys.template_caches == {(NS, "tc")}  # the TC itself, always
        assert keys.model_caches == {(NS, "hf://org/model")}
        return keys.services

    # Progress, a finalizer or an owner reference: the service would write nothing new.
    assert woken(pending, progressing) == set()
    assert woken(progressing, owned) == set()
    # What a service acts on: the TC appearing, going, turning Available, its volumes, failing
    # and why.
    for old, new in (
        (None, pending),
        (available, None),
        (owned, available),
        (available, moved),
        (progressing, failed),
        (failed, failed_again),
        (available, going),
    ):
        assert woken(old, new) == {(NS, "svc")}, (old, new)


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


def test_what_a_namespace_allows_changing_judges_its_caches_again() -> None:
    s = blank()
    add(s.model_caches, model_cache("mc", "s3://bucket/x"))
    before = {"metadata": {"name": NS, "resourceVersion": "1"}}
    annotations = {"aim.eai.amd.com/allowed-endpoints": "https://minio.example:9000"}
    after = {"metadata": {"name": NS, "resourceVersion": "2", "annotations": annotations}}
    assert wiring.on_namespace(s, before, after).model_caches == {(NS, "s3://bucket/x")}
    relabelled = {"metadata": {**after["metadata"], "labels": {"team": "a"}}}
    assert wiring.on_namespace(s, after, relabelled) == wiring.Keys()


def test_a_service_is_not_woken_by_its_own_write_coming_back_but_by_any_other_change() -> None:
    s = blank()
    woken: list[wiring.Keys] = []
    # As install() wires it: a handler added after the store's own.
    s.services.informer.add_handler(
        lambda _, old, new: woken.append(
            wiring.on_service(s, cast(Service | None, old), cast(Service | None, new))
        )
    )
    add(s.services, service("svc", "a"))
    assert woken.pop().services == {(NS, "svc")}

    def version(rv: str, status: str) -> Object:
        return {
            **service("svc", "a"),
            "metadata": meta("svc", resourceVersion=rv),
            "status": {"status": status},
        }

    # aimd writes its status; the watch brings exactly that write back: nothing new to decide.
    s.services.wrote(version("1", ""), version("2", "Starting"))
    s.services.informer.changed("MODIFIED", version("2", "Starting"))
    assert woken.pop().services == set()
    # Someone else's change wakes it, and so does an event past aimd's write (another writer
    # came in between): only the very version the write returned is its echo.
    s.services.informer.changed("MODIFIED", version("3", "Starting"))
    assert woken.pop().services == {(NS, "svc")}
    s.services.wrote(version("3", "Starting"), version("4", "Running"))
    s.services.informer.changed("MODIFIED", version("5", "Running"))
    assert woken.pop().services == {(NS, "svc")}
