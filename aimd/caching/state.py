"""What aimd knows about the cluster: the informers' indexes, typed, and the questions the rules
ask of them (which MCs serve this URI, which TCs need it, who else uses this cache).

Every answer comes from the shared index, never from a GET: a reconcile reads state, decides, and
the watch brings its own writes back (ARCHITECTURE "Rules of thumb"). Until it has, a store
answers ``get`` with what aimd itself wrote (:meth:`Store.wrote`, as client-go's mutation cache
does): a pass that comes before the watch event would otherwise decide from the state before that
write, make it again, and be refused with Conflict. Objects of the five AIM kinds enter the index
shaped (:func:`aimd.api.types.shaped`), so the typed views hold.

URIs are compared by :func:`aimd.api.sources.source_key` everywhere (SPEC B10): the index files a
model cache, and a template's sources, under the key, never under the spelling.
"""

from __future__ import annotations

import builtins
from collections.abc import Callable, Hashable, Iterable
from datetime import datetime
from typing import Generic, TypeVar, cast

from aimd.api import kinds
from aimd.api.meta import label_value, labels_of, live, namespace_of, oldest_first, owned_by
from aimd.api.sources import source_key
from aimd.api.types import (
    ModelCache,
    Object,
    ObjectLike,
    Service,
    Template,
    TemplateCache,
    shaped,
)
from aimd.caching.templates import Resolved, Templates, problems, source_uris
from aimd.kube import resources
from aimd.runtime import Informer, Manager

T = TypeVar("T", bound=ObjectLike)

ANY_NAMESPACE = "*"
SOURCE_KEY = "sourceKey"
LISTED_SOURCE = "listedSource"
TEMPLATE_NAME = "templateName"
CREATED_BY = "createdBy"
UID = "uid"
OWNER = "owner"
MODEL_CACHE = "modelCache"
LABEL_VALUE = "labelValue"


class Store(Generic[T]):
    """One informer's index seen as objects of one typed view, with aimd's own latest writes."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        # (namespace, name) → (the resourceVersion a write was made over, the object it returned)
        self._written: dict[tuple[str | None, str], tuple[str, Object]] = {}
        # While an event is delivered: its resourceVersion, when it brings back exactly a write
        # aimd remembered (this handler runs before any other of the informer's).
        self._echo: str | None = None
        informer.add_handler(self._caught_up)

    def get(self, name: str, namespace: str | None = None) -> T | None:
        """The object as the index has it, or as aimd last wrote it while the index still holds
        the version that write replaced."""
        indexed = self.informer.index.get_by_name(name, namespace)
        written = self._written.get((namespace, name))
        if written is not None and indexed is not None:
            replaced, answer = written
            if indexed["metadata"].get("resourceVersion") == replaced:
                return cast(T, answer)
        return cast(T | None, indexed)

    def wrote(self, before: ObjectLike, after: Object) -> None:
        """Records that a write of ``before`` returned ``after`` (shaped like the index's)."""
        metadata = before["metadata"]
        name, namespace, replaced = (
            metadata["name"],
            metadata.get("namespace"),
            metadata.get("resourceVersion"),
        )
        indexed = self.informer.index.get_by_name(name, namespace)
        if (
            replaced
            and after["metadata"].get("resourceVersion") != replaced
            and indexed is not None
            and indexed["metadata"].get("resourceVersion") == replaced
        ):
            # (When the watch has brought the write already, the index answers by itself.)
            self._written[(namespace, name)] = (replaced, after)

    def is_own_write(self, obj: ObjectLike) -> bool:
        """Whether the event being delivered brings back, unchanged, a write aimd remembered: it
        tells the pass that wrote it nothing that pass did not decide on. (Only a write the watch
        had not yet brought when it returned is remembered; any other change has a newer
        resourceVersion.)"""
        return self._echo is not None and obj["metadata"].get("resourceVersion") == self._echo

    def _caught_up(self, event_type: str, old: Object | None, new: Object | None) -> None:
        """An event for an object aimd wrote: the index has moved past that write's base (to the
        write itself or beyond), so the index answers again."""
        self._echo = None
        if not self._written:
            return
        obj = new if new is not None else old
        if obj is not None:
            metadata = obj["metadata"]
            written = self._written.pop((metadata.get("namespace"), metadata["name"]), None)
            if written is not None and new is not None:
                version = new["metadata"].get("resourceVersion")
                if version == written[1]["metadata"].get("resourceVersion"):
                    self._echo = version

    def list(self, namespace: str | None = None) -> builtins.list[T]:
        return cast(builtins.list[T], self.informer.index.list(namespace))

    def by(self, index: str, value: Hashable) -> builtins.list[T]:
        return cast(builtins.list[T], self.informer.index.by(index, value))

    def add_index(self, name: str, func: Callable[[T], Iterable[Hashable]]) -> None:
        self.informer.add_index(name, cast(Callable[[Object], Iterable[Hashable]], func))


# -- index functions ------------------------------------------------------------------------------


def _template_sources(template: Template) -> list[Hashable]:
    namespace = namespace_of(template)
    keys = {source_key(uri) for uri in source_uris(template)}
    return [(namespace, key) if namespace else key for key in keys]


def _by_template_name(obj: TemplateCache | Service) -> list[Hashable]:
    name = obj["spec"].get("templateName")
    return [(namespace_of(obj), name), (ANY_NAMESPACE, name)] if name else []


def _by_label(key: str) -> Callable[[ObjectLike], list[Hashable]]:
    def values(obj: ObjectLike) -> list[Hashable]:
        value = labels_of(obj).get(key)
        return [(namespace_of(obj), value)] if value else []

    return values


def _model_cache_source(mc: ModelCache) -> list[Hashable]:
    uri = mc["spec"].get("sourceUri")
    return [(namespace_of(mc), source_key(uri))] if uri else []


def _listed_sources(tc: TemplateCache) -> list[Hashable]:
    namespace = namespace_of(tc)
    entries = tc["status"].get("modelCaches") or ()
    return list({(namespace, source_key(e["sourceUri"])) for e in entries if e.get("sourceUri")})


def _uid(obj: ObjectLike) -> list[Hashable]:
    return [obj["metadata"]["uid"]]


def _owners(obj: ObjectLike) -> list[Hashable]:
    return [ref["uid"] for ref in obj["metadata"].get("ownerReferences") or () if "uid" in ref]


def _owner_in(store: Store[T], child: ObjectLike) -> T | None:
    """The object of ``store`` that one of ``child``'s ownerReferences names (by uid)."""
    for uid in _owners(child):
        found = store.by(UID, uid)
        if found:
            return found[0]
    return None


class State:
    """The informers the caching reconcilers share, and the questions they ask of them."""

    def __init__(self, manager: Manager) -> None:
        def aim(resource: resources.Resource) -> Informer:
            return manager.informer(resource, transform=shaped)

        def labelled(resource: resources.Resource, label: str) -> Informer:
            # Only what aimd made: the label is on every child it creates.
            return manager.informer(resource, label_selector=label)

        self.templates_ns: Store[Template] = Store(aim(kinds.SERVICE_TEMPLATES))
        self.templates_cluster: Store[Template] = Store(aim(kinds.CLUSTER_SERVICE_TEMPLATES))
        self.services: Store[Service] = Store(aim(kinds.SERVICES))
        self.template_caches: Store[TemplateCache] = Store(aim(kinds.TEMPLATE_CACHES))
        self.model_caches: Store[ModelCache] = Store(aim(kinds.MODEL_CACHES))
        self.namespaces: Store[Object] = Store(manager.informer(resources.NAMESPACES))
        self.pvcs: Store[Object] = Store(
            labelled(resources.PERSISTENT_VOLUME_CLAIMS, kinds.LABEL_MODEL_CACHE)
        )
        self.jobs: Store[Object] = Store(labelled(resources.JOBS, kinds.LABEL_MODEL_CACHE))
        # The Jobs' pods carry the label too (the Job's template has it): one that cannot start
        # is reported on its model cache (aimd.caching.pods).
        self.pods: Store[Object] = Store(labelled(resources.PODS, kinds.LABEL_MODEL_CACHE))
        self.service_accounts: Store[Object] = Store(
            labelled(resources.SERVICE_ACCOUNTS, kinds.LABEL_MODEL_CACHE)
        )
        self.roles: Store[Object] = Store(labelled(resources.ROLES, kinds.LABEL_MODEL_CACHE))
        self.role_bindings: Store[Object] = Store(
            labelled(resources.ROLE_BINDINGS, kinds.LABEL_MODEL_CACHE)
        )
        self.deployments: Store[Object] = Store(
            labelled(resources.DEPLOYMENTS, kinds.LABEL_SERVICE)
        )
        self.workload_services: Store[Object] = Store(
            labelled(resources.SERVICES, kinds.LABEL_SERVICE)
        )
        self.storage_classes: Store[Object] = Store(manager.informer(resources.STORAGE_CLASSES))

        self.templates_ns.add_index(SOURCE_KEY, _template_sources)
        self.templates_cluster.add_index(SOURCE_KEY, _template_sources)
        self.template_caches.add_index(TEMPLATE_NAME, _by_template_name)
        self.template_caches.add_index(CREATED_BY, _by_label(kinds.LABEL_CREATED_BY_SERVICE))
        self.template_caches.add_index(LISTED_SOURCE, _listed_sources)
        self.services.add_index(TEMPLATE_NAME, _by_template_name)
        self.services.add_index(UID, _uid)
        self.model_caches.add_index(SOURCE_KEY, _model_cache_source)
        self.model_caches.add_index(CREATED_BY, _by_label(kinds.LABEL_CREATED_BY_TEMPLATE_CACHE))
        self.model_caches.add_index(UID, _uid)
        self.model_caches.add_index(
            LABEL_VALUE, lambda mc: [(namespace_of(mc), label_value(mc["metadata"]["name"]))]
        )
        for child in self.children:
            child.add_index(OWNER, _owners)
        self.pvcs.add_index(MODEL_CACHE, _by_label(kinds.LABEL_MODEL_CACHE))
        self.templates = Templates(self.templates_ns, self.templates_cluster)
        # (namespace, source key) → (since, the API server's words): a model cache the API server
        # refused to create, for the template caches that wait for it to report (SPEC E6).
        self.refusals: dict[tuple[str, str], tuple[datetime, str]] = {}

    @property
    def children(self) -> list[Store[Object]]:
        """The stores of what a model cache owns (pods through its Jobs)."""
        return [
            self.pvcs,
            self.jobs,
            self.pods,
            self.service_accounts,
            self.roles,
            self.role_bindings,
        ]

    @property
    def workloads(self) -> list[Store[Object]]:
        """The stores of what a service owns."""
        return [self.deployments, self.workload_services]

    # -- questions -------------------------------------------------------------------------------

    def namespace_terminating(self, namespace: str) -> bool:
        """True once the namespace is being deleted; a namespace the index does not know yet
        (its event may trail its objects' events) counts as live."""
        found = self.namespaces.get(namespace)
        return found is not None and bool(
            found["metadata"].get("deletionTimestamp")
            or (found.get("status") or {}).get("phase") == "Terminating"
        )

    def model_caches_for(self, namespace: str, uri: str) -> list[ModelCache]:
        """The MCs in ``namespace`` that serve ``uri`` (however it is spelled)."""
        return self.model_caches.by(SOURCE_KEY, (namespace, source_key(uri)))

    def model_cache_owning(self, child: ObjectLike) -> ModelCache | None:
        """The MC a PVC, Job, ServiceAccount, Role or RoleBinding belongs to."""
        return _owner_in(self.model_caches, child)

    def model_caches_named_by(self, child: ObjectLike) -> list[ModelCache]:
        """The MCs whose name the child's model-cache label carries: its owner, or a namesake
        created since (which waits for this child's volume to go)."""
        value = labels_of(child).get(kinds.LABEL_MODEL_CACHE)
        return self.model_caches.by(LABEL_VALUE, (namespace_of(child), value)) if value else []

    def service_owning(self, workload: ObjectLike) -> Service | None:
        """The AIMService a Deployment or Service belongs to."""
        return _owner_in(self.services, workload)

    def model_caches_created_by(self, tc: TemplateCache) -> list[ModelCache]:
        key = (namespace_of(tc), label_value(tc["metadata"]["name"]))
        return self.model_caches.by(CREATED_BY, key)

    def template_caches_created_by(self, svc: Service) -> list[TemplateCache]:
        key = (namespace_of(svc), label_value(svc["metadata"]["name"]))
        return self.template_caches.by(CREATED_BY, key)

    def resolve_for_template_cache(self, tc: TemplateCache) -> Resolved | None:
        spec = tc["spec"]
        return self.templates.resolve(
            namespace_of(tc), spec.get("templateName", ""), spec.get("templateScope")
        )

    def template_caches_needing(self, namespace: str, uri: str) -> list[TemplateCache]:
        """Live TCs in ``namespace`` whose (valid) template needs ``uri``: the demand for it,
        oldest first."""
        key = source_key(uri)
        templates = self.templates_ns.by(SOURCE_KEY, (namespace, key))
        templates += self.templates_cluster.by(SOURCE_KEY, key)
        found: dict[str, TemplateCache] = {}
        for template in templates:
            name = template["metadata"]["name"]
            for tc in self.template_caches.by(TEMPLATE_NAME, (namespace, name)):
                if not live(tc):
                    continue
                resolved = self.resolve_for_template_cache(tc)
                if (
                    resolved is not None
                    and resolved.template["metadata"]["uid"] == template["metadata"]["uid"]
                    and not problems(resolved.template)
                ):
                    found[tc["metadata"]["name"]] = tc
        return oldest_first(found.values())

    def template_caches_listing(self, namespace: str, uri: str) -> list[TemplateCache]:
        """TCs whose status lists ``uri`` (a template that no longer needs it included)."""
        return self.template_caches.by(LISTED_SOURCE, (namespace, source_key(uri)))

    def needed_by_a_service(self, mc: ModelCache) -> bool:
        """A live service with caching on waits for this MC (through its template's TC)."""
        namespace = namespace_of(mc)
        for tc in self.template_caches_needing(namespace, mc["spec"]["sourceUri"]):
            for svc in self.services_for_template(namespace, tc["spec"].get("templateName", "")):
                if live(svc) and svc["spec"].get("cacheModel"):
                    return True
        return False

    def template_caches_for_template(self, namespace: str, name: str) -> list[TemplateCache]:
        return self.template_caches.by(TEMPLATE_NAME, (namespace, name))

    def services_for_template(self, namespace: str, name: str) -> list[Service]:
        return self.services.by(TEMPLATE_NAME, (namespace, name))

    def jobs_of(self, mc: ModelCache) -> dict[str, Object]:
        return {job["metadata"]["name"]: job for job in self.jobs.by(OWNER, mc["metadata"]["uid"])}

    def pods_of(self, job: ObjectLike) -> list[Object]:
        """The pods a Job made, newest last."""
        return oldest_first(self.pods.by(OWNER, job["metadata"]["uid"]))

    def storage_class_exists(self, claim: ObjectLike | None) -> bool | None:
        """Whether the StorageClass a PVC names exists (None: it names none)."""
        name = ((claim or {}).get("spec") or {}).get("storageClassName")
        return None if not name else self.storage_classes.get(name) is not None

    def owned(self, store: Store[Object], mc: ModelCache, name: str) -> Object | None:
        """The child ``name`` if it exists and belongs to this MC (not to a namesake's past)."""
        child = store.get(name, namespace_of(mc))
        return child if child is not None and owned_by(child, mc["metadata"]["uid"]) else None

    def expandable(self, pvc: ObjectLike) -> bool:
        """True if the PVC's StorageClass lets a bound volume grow (allowVolumeExpansion)."""
        name = (pvc.get("spec") or {}).get("storageClassName")
        found = self.storage_classes.get(name) if name else None
        return bool(found and found.get("allowVolumeExpansion"))

    def volumes_of_namesakes(self, mc: ModelCache) -> list[Object]:
        """PVCs made for an earlier MC of the same name (another uid) that still exist: the
        volume of a deleted cache that a pod still holds, or that the collector has yet to take."""
        key = (namespace_of(mc), label_value(mc["metadata"]["name"]))
        uid = mc["metadata"]["uid"]
        return [pvc for pvc in self.pvcs.by(MODEL_CACHE, key) if not owned_by(pvc, uid)]
