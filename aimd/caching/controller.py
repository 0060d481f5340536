"""`aimd run`: every caching reconciler on the runtime's Manager, in one process.

The handlers here are the B7 rule written down: each maps a change to every key that depends on
it — an MC's change to every TC whose template needs its URI (not only the TC that made it), a
TC's change to every service naming its template, a template's change to its TCs, services and
the URIs it needs.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from aimd.api.kinds import LABEL_SERVICE
from aimd.caching import metrics
from aimd.caching.model_cache import ModelCacheReconciler, RetryPolicy
from aimd.caching.service import ServiceReconciler
from aimd.caching.state import ANY_NAMESPACE, State
from aimd.caching.template import TemplateReconciler
from aimd.caching.template_cache import TemplateCacheReconciler
from aimd.caching.templates import source_uris
from aimd.kube.client import KubeClient
from aimd.kube.errors import Conflict
from aimd.runtime import Controller, Manager, Result
from aimd.settings import Settings, add_arguments

log = logging.getLogger(__name__)

Object = dict[str, Any]
DEFAULT_IMAGE = "ghcr.io/aimd/aimd:latest"


@dataclass
class Caching:
    """The caching controllers of one manager (tests reach into them)."""

    state: State
    templates: Controller[Any]
    template_caches: Controller[Any]
    model_caches: Controller[Any]
    services: Controller[Any]


def _meta(old: Object | None, new: Object | None) -> Object:
    obj = new if new is not None else old
    assert obj is not None
    return obj


def _ns(obj: Object) -> str:
    return str(obj["metadata"].get("namespace") or "")


def conflicts_retried(reconcile: Callable[[Any], Awaitable[Result | None]]) -> Any:
    """A 409 means the decision was taken on state older than the server's: not an error, just
    a reason to decide again (with the key's backoff) once the watch has brought the news."""

    async def wrapped(key: Any) -> Result | None:
        try:
            return await reconcile(key)
        except Conflict:
            log.debug("conflict on %r; retrying from fresh state", key)
            return Result(requeue=True)

    return wrapped


def install(manager: Manager, image: str, policy: RetryPolicy | None = None) -> Caching:
    """Declares informers, indexes, controllers and handlers on ``manager``."""
    state = State(manager)
    metrics.watch(state.model_caches.index, state.template_caches.index)
    caching = Caching(
        state,
        manager.controller(
            "template", conflicts_retried(TemplateReconciler(manager, state).reconcile)
        ),
        manager.controller(
            "templatecache", conflicts_retried(TemplateCacheReconciler(manager, state).reconcile)
        ),
        manager.controller(
            "modelcache",
            conflicts_retried(ModelCacheReconciler(manager, state, image, policy).reconcile),
        ),
        manager.controller(
            "service", conflicts_retried(ServiceReconciler(manager, state).reconcile)
        ),
    )
    _wire(caching)
    return caching


def _wire(c: Caching) -> None:
    s = c.state

    def tc_keys(namespace: str, tc: Object) -> None:
        """A TC changed: it, the services naming its template, and the URIs it needs."""
        c.template_caches.enqueue((namespace, tc["metadata"]["name"]))
        template_name = (tc.get("spec") or {}).get("templateName", "")
        for svc in s.services_for_template(namespace, template_name):
            c.services.enqueue((namespace, svc["metadata"]["name"]))
        resolved = s.resolve_for_template_cache(tc)
        uris = source_uris(resolved.template) if resolved else set()
        uris |= {e.get("sourceUri") for e in (tc.get("status") or {}).get("modelCaches") or ()}
        for uri in uris:
            if uri:
                c.model_caches.enqueue((namespace, uri))

    def on_template(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        namespace, name = _ns(obj), obj["metadata"]["name"]
        c.templates.enqueue((namespace, name))
        scope = namespace or ANY_NAMESPACE
        for tc in s.template_caches_for_template(scope, name):
            tc_keys(_ns(tc), tc)
            for uri in source_uris(old) | source_uris(new):
                c.model_caches.enqueue((_ns(tc), uri))
        for svc in s.services_for_template(scope, name):
            c.services.enqueue((_ns(svc), svc["metadata"]["name"]))

    def on_template_cache(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        tc_keys(_ns(obj), obj)
        if old is not None and new is not None:
            tc_keys(_ns(old), old)

    def on_model_cache(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        namespace, uri = _ns(obj), (obj.get("spec") or {}).get("sourceUri", "")
        c.model_caches.enqueue((namespace, uri))
        for tc in s.template_caches_needing(namespace, uri):
            c.template_caches.enqueue((namespace, tc["metadata"]["name"]))
        for tc in s.template_caches.index.list(namespace):
            entries = (tc.get("status") or {}).get("modelCaches") or ()
            if any(e.get("sourceUri") == uri for e in entries):
                c.template_caches.enqueue((namespace, tc["metadata"]["name"]))

    def on_child(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        mc = s.model_cache_of(obj)
        if mc is not None:
            c.model_caches.enqueue((_ns(mc), mc["spec"]["sourceUri"]))

    def on_service(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        c.services.enqueue((_ns(obj), obj["metadata"]["name"]))

    def on_workload(event: str, old: Object | None, new: Object | None) -> None:
        obj = _meta(old, new)
        name = (obj["metadata"].get("labels") or {}).get(LABEL_SERVICE)
        if name:
            c.services.enqueue((_ns(obj), name))

    def on_namespace(event: str, old: Object | None, new: Object | None) -> None:
        """A namespace began terminating: let finalizers go at once (D7)."""
        if new is None or not new["metadata"].get("deletionTimestamp"):
            return
        namespace = new["metadata"]["name"]
        for tc in s.template_caches.index.list(namespace):
            c.template_caches.enqueue((namespace, tc["metadata"]["name"]))
        for svc in s.services.index.list(namespace):
            c.services.enqueue((namespace, svc["metadata"]["name"]))

    handlers: list[tuple[Any, Callable[[str, Object | None, Object | None], None]]] = [
        (s.templates_ns, on_template),
        (s.templates_cluster, on_template),
        (s.template_caches, on_template_cache),
        (s.model_caches, on_model_cache),
        (s.services, on_service),
        (s.deployments, on_workload),
        (s.workload_services, on_workload),
        (s.namespaces, on_namespace),
        *((informer, on_child) for informer in s.children),
    ]
    for informer, handler in handlers:
        informer.add_handler(handler)


def configure(parser: argparse.ArgumentParser) -> None:
    add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    settings = Settings.from_args(args)
    logging.basicConfig(
        level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    image = settings.image or DEFAULT_IMAGE
    return asyncio.run(run(settings, image))


async def run(
    settings: Settings,
    image: str,
    *,
    policy: RetryPolicy | None = None,
    handle_signals: bool = True,
    started: Callable[[Manager, Caching], None] | None = None,
) -> int:
    """Runs every caching controller until SIGTERM (or ``manager.stop()``)."""
    client = await KubeClient.auto(settings.kubeconfig)
    try:
        manager = Manager(client, settings, handle_signals=handle_signals)
        caching = install(manager, image, policy)
        if started is not None:
            started(manager, caching)
        await manager.run()
    finally:
        await client.close()
    return 0
