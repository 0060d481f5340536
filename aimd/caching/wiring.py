"""Who is woken by what: the B7 rule written down, one small pure function per kind.

Each maps one change (``old`` → ``new``; either may be None) to every key that depends on it:

- a template's change to itself, its TCs, the services naming it, and the URIs it needs;
- a TC's change to itself and the URIs it needs, and to the services naming its template when
  it changed what a service reads (:func:`aimd.caching.service.what_a_service_reads`);
- an MC's change to its URI and every TC whose template needs that URI (not only the TC that
  made it) or whose status lists it;
- a child's change (PVC, Job, ...) to its MC's URI; a workload's change to its service;
- a service's change to itself, except aimd's own write of it coming back unchanged;
- a namespace beginning to terminate to every TC and service in it (D7: finalizers go at once).

The functions read the index (which already holds ``new``: the informer's order promise) and
return :class:`Keys`; :func:`aimd.caching.controller.install` enqueues them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeVar

from aimd.api.meta import deleting, namespace_of
from aimd.api.sources import source_key
from aimd.api.types import ModelCache, Object, Service, Template, TemplateCache
from aimd.caching import governor, policy
from aimd.caching.service import what_a_service_reads
from aimd.caching.state import ANY_NAMESPACE, State
from aimd.caching.templates import source_uris

Key = tuple[str, str]
T = TypeVar("T")


@dataclass
class Keys:
    """The keys one change wakes, per controller."""

    templates: set[Key] = field(default_factory=set)
    template_caches: set[Key] = field(default_factory=set)
    model_caches: set[Key] = field(default_factory=set)
    services: set[Key] = field(default_factory=set)

    def uris(self, namespace: str, uris: set[str]) -> None:
        self.model_caches |= {(namespace, source_key(uri)) for uri in uris if uri}

    def template_cache(self, state: State, tc: TemplateCache, services: bool = True) -> None:
        """A TC, the URIs it needs or lists, and (unless told not to) the services naming its
        template."""
        namespace, name = namespace_of(tc), tc["metadata"]["name"]
        self.template_caches.add((namespace, name))
        if services:
            self.services |= {
                (namespace, svc["metadata"]["name"])
                for svc in state.services_for_template(
                    namespace, tc["spec"].get("templateName", "")
                )
            }
        resolved = state.resolve_for_template_cache(tc)
        self.uris(namespace, source_uris(resolved.template) if resolved else set())
        self.uris(
            namespace, {e.get("sourceUri", "") for e in tc["status"].get("modelCaches") or ()}
        )


def _either(old: T | None, new: T | None) -> T:
    found = new if new is not None else old
    assert found is not None
    return found


def on_template(state: State, old: Template | None, new: Template | None) -> Keys:
    template = _either(old, new)
    keys = Keys()
    namespace, name = namespace_of(template), template["metadata"]["name"]
    keys.templates.add((namespace, name))
    scope = namespace or ANY_NAMESPACE
    for tc in state.template_caches_for_template(scope, name):
        keys.template_cache(state, tc)
        keys.uris(namespace_of(tc), source_uris(old) | source_uris(new))
    keys.services |= {
        (namespace_of(svc), svc["metadata"]["name"])
        for svc in state.services_for_template(scope, name)
    }
    return keys


def on_template_cache(state: State, old: TemplateCache | None, new: TemplateCache | None) -> Keys:
    services = old is None or new is None or what_a_service_reads(old) != what_a_service_reads(new)
    keys = Keys()
    for tc in (old, new):
        if tc is not None:
            keys.template_cache(state, tc, services)
    return keys


def on_model_cache(state: State, old: ModelCache | None, new: ModelCache | None) -> Keys:
    mc = _either(old, new)
    namespace, uri = namespace_of(mc), mc["spec"].get("sourceUri", "")
    keys = Keys()
    keys.uris(namespace, {uri})
    keys.template_caches |= {
        (namespace, tc["metadata"]["name"])
        for tc in state.template_caches_needing(namespace, uri)
        + state.template_caches_listing(namespace, uri)
    }
    if old is not None and governor.downloading(old) and not (new and governor.downloading(new)):
        # A download slot freed: the caches waiting for one take their turn (or learn their
        # new place).
        for waiter in state.model_caches.list():
            if governor.waiting(waiter):
                keys.uris(namespace_of(waiter), {waiter["spec"]["sourceUri"]})
    return keys


def on_model_cache_child(state: State, old: Object | None, new: Object | None) -> Keys:
    """A child wakes the MC that owns it, and any MC of the same name waiting for it to go."""
    child = _either(old, new)
    keys = Keys()
    owner = state.model_cache_owning(child)
    for mc in [owner] if owner is not None else state.model_caches_named_by(child):
        keys.uris(namespace_of(mc), {mc["spec"]["sourceUri"]})
    return keys


def on_service(state: State, old: Service | None, new: Service | None) -> Keys:
    """A service's change wakes the service, unless it is aimd's own write of it coming back
    (its finalizer, its status): the pass that wrote it has decided on all else it read."""
    svc = _either(old, new)
    if old is not None and new is not None and state.services.is_own_write(new):
        return Keys()
    return Keys(services={(namespace_of(svc), svc["metadata"]["name"])})


def on_workload(state: State, old: Object | None, new: Object | None) -> Keys:
    svc = state.service_owning(_either(old, new))
    if svc is None:
        return Keys()
    return Keys(services={(namespace_of(svc), svc["metadata"]["name"])})


def on_namespace(state: State, old: Object | None, new: Object | None) -> Keys:
    """A namespace began terminating: let finalizers go at once (D7). What the namespace allows
    changed (its admin's annotations, S1): its caches are judged again."""
    if new is None:
        return Keys()
    namespace = new["metadata"]["name"]
    if deleting(new):
        return Keys(
            template_caches={
                (namespace, tc["metadata"]["name"]) for tc in state.template_caches.list(namespace)
            },
            services={
                (namespace, svc["metadata"]["name"]) for svc in state.services.list(namespace)
            },
        )
    keys = Keys()
    if old is not None and policy.Additions.of(old) != policy.Additions.of(new):
        keys.uris(namespace, {mc["spec"]["sourceUri"] for mc in state.model_caches.list(namespace)})
    return keys
