"""`aimd run`: every caching reconciler on the runtime's Manager, in one process.

:func:`install` declares the informers (:class:`~aimd.caching.state.State`), one controller per
reconciler, and the handlers that map each change to the keys it wakes
(:mod:`aimd.caching.wiring`, the B7 rule).
"""

from __future__ import annotations

import argparse
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast

from aimd.api.types import Object, ObjectLike
from aimd.caching import builders, metrics, wiring
from aimd.caching.model_cache import ModelCacheReconciler, RetryPolicy
from aimd.caching.service import ServiceReconciler
from aimd.caching.state import State, Store
from aimd.caching.template import TemplateReconciler
from aimd.caching.template_cache import TemplateCacheReconciler
from aimd.runtime import Controller, Manager, Result, app
from aimd.settings import Settings

log = logging.getLogger(__name__)

Key = tuple[str, str]
DEFAULT_IMAGE = "ghcr.io/aimd/aimd:latest"
V = TypeVar("V", bound=ObjectLike)


@dataclass
class Caching:
    """The caching controllers of one manager (tests reach into them)."""

    state: State
    templates: Controller[Key]
    template_caches: Controller[Key]
    model_caches: Controller[Key]
    services: Controller[Key]

    def enqueue(self, keys: wiring.Keys) -> None:
        for controller, wanted in (
            (self.templates, keys.templates),
            (self.template_caches, keys.template_caches),
            (self.model_caches, keys.model_caches),
            (self.services, keys.services),
        ):
            for key in wanted:
                controller.enqueue(key)


def install(manager: Manager, image: str, policy: RetryPolicy | None = None) -> Caching:
    """Declares informers, indexes, controllers and handlers on ``manager``."""
    state = State(manager)
    metrics.watch(state.model_caches.informer.index, state.template_caches.informer.index)

    def controller(name: str, reconcile: Callable[[Key], Awaitable[Result | None]]) -> Any:
        return manager.controller(name, reconcile)

    template_caches = controller("templatecache", TemplateCacheReconciler(manager, state).reconcile)
    downloads = builders.Downloads(image, manager.settings.log_format)
    model_caches = ModelCacheReconciler(
        manager,
        state,
        downloads,
        policy,
        wake_template_cache=lambda namespace, name: template_caches.enqueue((namespace, name)),
    )
    caching = Caching(
        state,
        templates=controller("template", TemplateReconciler(manager, state).reconcile),
        template_caches=template_caches,
        model_caches=controller("modelcache", model_caches.reconcile),
        services=controller("service", ServiceReconciler(manager, state).reconcile),
    )
    _wire(caching)
    return caching


def _wire(c: Caching) -> None:
    s = c.state

    def handle(store: Store[V], keys: Callable[[State, V | None, V | None], wiring.Keys]) -> None:
        def handler(event: str, old: Object | None, new: Object | None) -> None:
            c.enqueue(keys(s, cast(V | None, old), cast(V | None, new)))

        store.informer.add_handler(handler)

    handle(s.templates_ns, wiring.on_template)
    handle(s.templates_cluster, wiring.on_template)
    handle(s.template_caches, wiring.on_template_cache)
    handle(s.model_caches, wiring.on_model_cache)
    handle(s.services, wiring.on_service)
    handle(s.namespaces, wiring.on_namespace)
    for workload in s.workloads:
        handle(workload, wiring.on_workload)
    for child in s.children:
        handle(child, wiring.on_model_cache_child)


def configure(parser: argparse.ArgumentParser) -> None:
    app.add_arguments(parser)


def main(args: argparse.Namespace) -> int:
    """``aimd run``: the runtime's one entry point, with every caching controller declared."""

    def setup(manager: Manager) -> None:
        install(manager, manager.settings.image or DEFAULT_IMAGE)

    return app.main(args, setup)


async def run(
    settings: Settings,
    image: str,
    *,
    policy: RetryPolicy | None = None,
    handle_signals: bool = True,
    started: Callable[[Manager, Caching], None] | None = None,
) -> int:
    """Runs every caching controller until SIGTERM (or ``manager.stop()``); the exit code.

    For embedders (``aimd dev``, the tests) that configure logging themselves and reach into the
    controllers through ``started``."""

    def setup(manager: Manager) -> None:
        caching = install(manager, image, policy)
        if started is not None:
            started(manager, caching)

    return await app.run(settings, setup, handle_signals=handle_signals)
