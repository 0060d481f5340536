"""What aimd knows about the cluster: the informers' indexes, and the questions the rules ask
of them (which MCs have this URI, which TCs need it, who else uses this cache).

Every answer comes from the shared index, never from a GET: a reconcile reads state, decides, and
the watch brings its own writes back (ARCHITECTURE "Rules of thumb").
"""

from __future__ import annotations

from collections.abc import Hashable
from typing import Any

from aimd.api import kinds
from aimd.caching.templates import Resolved, Templates, problems, source_uris
from aimd.kube import resources
from aimd.runtime import Informer, Manager

Object = dict[str, Any]

ANY_NAMESPACE = "*"
SOURCE_URI = "sourceUri"
TEMPLATE_NAME = "templateName"
CREATED_BY_SERVICE = "createdByService"
CREATED_BY_TEMPLATE_CACHE = "createdByTemplateCache"
MODEL_CACHE = "modelCache"
SERVICE = "service"


def _ns(obj: Object) -> str:
    return str(obj["metadata"].get("namespace") or "")


def _template_uris(obj: Object) -> list[Hashable]:
    namespace = _ns(obj)
    return [(namespace, uri) if namespace else uri for uri in source_uris(obj)]


def _by_template_name(obj: Object) -> list[Hashable]:
    name = (obj.get("spec") or {}).get("templateName")
    return [(_ns(obj), name), (ANY_NAMESPACE, name)] if name else []


def _by_label(key: str) -> Any:
    def values(obj: Object) -> list[Hashable]:
        value = (obj["metadata"].get("labels") or {}).get(key)
        return [(_ns(obj), value)] if value else []

    return values


def _model_cache_uri(obj: Object) -> list[Hashable]:
    uri = (obj.get("spec") or {}).get("sourceUri")
    return [(_ns(obj), uri)] if uri else []


def live(obj: Object | None) -> bool:
    return obj is not None and not obj["metadata"].get("deletionTimestamp")


def oldest_first(objects: list[Object]) -> list[Object]:
    return sorted(
        objects,
        key=lambda o: (o["metadata"].get("creationTimestamp") or "", o["metadata"]["name"]),
    )


def preferred_model_cache(candidates: list[Object]) -> Object | None:
    """The MC a consumer uses for a URI: a live one, Available first, then the oldest, so every
    consumer picks the same one however many exist (hand-made ones included)."""
    usable = [mc for mc in oldest_first(candidates) if live(mc)]
    available = [mc for mc in usable if (mc.get("status") or {}).get("status") == "Available"]
    chosen = available or usable
    return chosen[0] if chosen else None


class State:
    """The informers the caching reconcilers share, and the questions they ask of them."""

    def __init__(self, manager: Manager) -> None:
        label_selector = kinds.LABEL_MODEL_CACHE
        self.templates_ns = manager.informer(kinds.SERVICE_TEMPLATES)
        self.templates_cluster = manager.informer(kinds.CLUSTER_SERVICE_TEMPLATES)
        self.services = manager.informer(kinds.SERVICES)
        self.template_caches = manager.informer(kinds.TEMPLATE_CACHES)
        self.model_caches = manager.informer(kinds.MODEL_CACHES)
        self.namespaces = manager.informer(resources.NAMESPACES)
        self.pvcs = manager.informer(
            resources.PERSISTENT_VOLUME_CLAIMS, label_selector=label_selector
        )
        self.jobs = manager.informer(resources.JOBS, label_selector=label_selector)
        self.service_accounts = manager.informer(
            resources.SERVICE_ACCOUNTS, label_selector=label_selector
        )
        self.roles = manager.informer(resources.ROLES, label_selector=label_selector)
        self.role_bindings = manager.informer(
            resources.ROLE_BINDINGS, label_selector=label_selector
        )
        self.deployments = manager.informer(
            resources.DEPLOYMENTS, label_selector=kinds.LABEL_SERVICE
        )
        self.workload_services = manager.informer(
            resources.SERVICES, label_selector=kinds.LABEL_SERVICE
        )
        self.templates_ns.add_index(SOURCE_URI, _template_uris)
        self.templates_cluster.add_index(SOURCE_URI, _template_uris)
        self.template_caches.add_index(TEMPLATE_NAME, _by_template_name)
        self.template_caches.add_index(
            CREATED_BY_SERVICE, _by_label(kinds.LABEL_CREATED_BY_SERVICE)
        )
        self.services.add_index(TEMPLATE_NAME, _by_template_name)
        self.model_caches.add_index(SOURCE_URI, _model_cache_uri)
        self.model_caches.add_index(
            CREATED_BY_TEMPLATE_CACHE, _by_label(kinds.LABEL_CREATED_BY_TEMPLATE_CACHE)
        )
        self.jobs.add_index(MODEL_CACHE, _by_label(kinds.LABEL_MODEL_CACHE))
        self.templates = Templates(self.templates_ns.index, self.templates_cluster.index)

    @property
    def children(self) -> list[Informer]:
        """The informers of what a model cache owns."""
        return [self.pvcs, self.jobs, self.service_accounts, self.roles, self.role_bindings]

    # -- questions ---------------------------------------------------------------------------

    def namespace_terminating(self, namespace: str) -> bool:
        """True once the namespace is being deleted; a namespace the index does not know yet
        (its event may trail its objects' events) counts as live."""
        found = self.namespaces.index.get(namespace)
        return found is not None and bool(
            found["metadata"].get("deletionTimestamp")
            or (found.get("status") or {}).get("phase") == "Terminating"
        )

    def model_caches_for(self, namespace: str, uri: str) -> list[Object]:
        return self.model_caches.index.by(SOURCE_URI, (namespace, uri))

    def resolve_for_template_cache(self, tc: Object) -> Resolved | None:
        spec = tc.get("spec") or {}
        return self.templates.resolve(
            _ns(tc), spec.get("templateName", ""), spec.get("templateScope")
        )

    def template_caches_needing(self, namespace: str, uri: str) -> list[Object]:
        """Live TCs in ``namespace`` whose (valid) template needs ``uri``: the demand for it."""
        templates = self.templates_ns.index.by(SOURCE_URI, (namespace, uri))
        templates += self.templates_cluster.index.by(SOURCE_URI, uri)
        found: dict[str, Object] = {}
        for template in templates:
            name = template["metadata"]["name"]
            for tc in self.template_caches.index.by(TEMPLATE_NAME, (namespace, name)):
                if not live(tc):
                    continue
                resolved = self.resolve_for_template_cache(tc)
                if (
                    resolved is not None
                    and resolved.template["metadata"]["uid"] == template["metadata"]["uid"]
                    and not problems(resolved.template)
                ):
                    found[tc["metadata"]["name"]] = tc
        return oldest_first(list(found.values()))

    def template_caches_for_template(self, namespace: str, name: str) -> list[Object]:
        return self.template_caches.index.by(TEMPLATE_NAME, (namespace, name))

    def services_for_template(self, namespace: str, name: str) -> list[Object]:
        return self.services.index.by(TEMPLATE_NAME, (namespace, name))

    def model_cache_of(self, child: Object) -> Object | None:
        name = (child["metadata"].get("labels") or {}).get(kinds.LABEL_MODEL_CACHE)
        return self.model_caches.index.get_by_name(name, _ns(child)) if name else None

    def jobs_of(self, mc: Object) -> dict[str, Object]:
        jobs = self.jobs.index.by(MODEL_CACHE, (_ns(mc), mc["metadata"]["name"]))
        uid = mc["metadata"]["uid"]
        return {
            job["metadata"]["name"]: job
            for job in jobs
            if any(ref.get("uid") == uid for ref in job["metadata"].get("ownerReferences") or ())
        }

    def owned(self, informer: Informer, mc: Object, name: str) -> Object | None:
        """The child ``name`` if it exists and belongs to this MC (not to a namesake's past)."""
        child = informer.index.get_by_name(name, _ns(mc))
        if child is None:
            return None
        uid = mc["metadata"]["uid"]
        refs = child["metadata"].get("ownerReferences") or ()
        return child if any(ref.get("uid") == uid for ref in refs) else None
