"""The floor: the minimum writes the rules need, made by a plain script as fast as the API server
allows, each stage as soon as what it depends on exists.

It builds the same bodies aimd builds (:mod:`aimd.caching.builders`, same names), writes with the
same concurrency limit everywhere (32 requests in flight, no client-side rate limit), and waits
on the same stand-in kubelet. Its statuses are minimal (no conditions): the floor is what the
rules cost, not what aimd says about them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable
from typing import Any

from aimd.api import kinds
from aimd.api.types import ModelCache, Service, Template, view
from aimd.caching import builders, names
from aimd.kube.client import KubeClient
from aimd.kube.resources import (
    DEPLOYMENTS,
    JOBS,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    SERVICES,
    Resource,
)
from tests.bench.converge.scenario import TEMPLATE_SIZE, Size, model_id, uri
from tests.bench.converge.standin import CONCURRENCY, StandInKubelet

Object = dict[str, Any]
DOWNLOADS = builders.Downloads("example.com/aimd:bench")


class Floor:
    def __init__(self, client: KubeClient, namespace: str, kubelet: StandInKubelet) -> None:
        self.client = client
        self.namespace = namespace
        self.kubelet = kubelet
        self.writes = 0
        self._limit = asyncio.Semaphore(CONCURRENCY)

    async def _write(self, request: Awaitable[Object]) -> Object:
        async with self._limit:
            self.writes += 1
            return await request

    def status(self, resource: Resource, name: str, body: Object) -> Awaitable[Object]:
        patch = self.client.patch(
            resource, name, {"status": body}, self.namespace, subresource="status"
        )
        return self._write(patch)

    def finalizer(self, resource: Resource, name: str) -> Awaitable[Object]:
        patch = {"metadata": {"finalizers": [kinds.FINALIZER]}}
        return self._write(self.client.patch(resource, name, patch, self.namespace))

    def create(self, resource: Resource, body: Object) -> Awaitable[Object]:
        return self._write(self.client.create(resource, body, self.namespace))

    async def run(self, size: Size) -> float:
        """Makes every service Running; returns the seconds it took."""
        ns = self.namespace
        started = time.monotonic()
        templates = [
            view(t, Template)
            for t in (await self.client.list(kinds.SERVICE_TEMPLATES, ns))["items"]
        ]
        services = [view(s, Service) for s in (await self.client.list(kinds.SERVICES, ns))["items"]]
        by_name = {t["metadata"]["name"]: t for t in templates}
        available = {"status": "Available"}
        await asyncio.gather(
            *(
                self.status(kinds.SERVICE_TEMPLATES, t["metadata"]["name"], available)
                for t in templates
            ),
            *(self.finalizer(kinds.SERVICES, s["metadata"]["name"]) for s in services),
            *(
                self.status(kinds.SERVICES, s["metadata"]["name"], {"status": "Starting"})
                for s in services
            ),
        )
        # The service that asks for template i first is svc-i; model cache u is first needed by
        # tpl-u's template cache.
        tcs = await asyncio.gather(
            *(
                self.create(
                    kinds.TEMPLATE_CACHES,
                    builders.template_cache(ns, by_name[f"tpl-{i}"], "Namespace", f"svc-{i}"),
                )
                for i in range(size.templates)
            )
        )
        await asyncio.gather(
            *(self.finalizer(kinds.TEMPLATE_CACHES, tc["metadata"]["name"]) for tc in tcs)
        )
        tc_name = names.template_cache_name
        mcs = [
            view(mc, ModelCache)
            for mc in await asyncio.gather(
                *(
                    self.create(
                        kinds.MODEL_CACHES,
                        builders.model_cache(
                            ns, uri(u), model_id(u), TEMPLATE_SIZE, tc_name(f"tpl-{u}", "Namespace")
                        ),
                    )
                    for u in range(size.uris)
                )
            )
        ]
        claims = await asyncio.gather(*(self._children(mc) for mc in mcs))
        await self.kubelet.jobs.until(lambda: self.kubelet.finished.value >= size.uris)
        await self.kubelet.claims.until(lambda: self.kubelet.bound.value >= size.uris)
        await asyncio.gather(
            *(self.status(kinds.MODEL_CACHES, mc["metadata"]["name"], available) for mc in mcs)
        )
        await asyncio.gather(
            *(self.status(kinds.TEMPLATE_CACHES, tc["metadata"]["name"], available) for tc in tcs)
        )
        claim_of = {mc["spec"]["sourceUri"]: claim for mc, claim in zip(mcs, claims, strict=True)}
        workload = []
        for svc in services:
            template = by_name[svc["spec"]["templateName"]]
            source = template["spec"]["modelSources"][0]
            mounts = [(source["modelId"], claim_of[source["sourceUri"]])]
            workload += [
                self.create(DEPLOYMENTS, builders.deployment(svc, template, mounts)),
                self.create(SERVICES, builders.service(svc, template)),
            ]
        await asyncio.gather(*workload)
        await self.kubelet.deployments.until(lambda: self.kubelet.ready.value >= size.services)
        await asyncio.gather(
            *(
                self.status(kinds.SERVICES, s["metadata"]["name"], {"status": "Running"})
                for s in services
            )
        )
        return time.monotonic() - started

    async def _children(self, mc: ModelCache) -> str:
        """The downloader's identity and the PVC, then (it needs the PVC's uid) the Job and the
        Progressing status; the claim's name."""
        claim = names.pvc_name(mc["metadata"]["name"], mc["metadata"]["uid"])
        *_, pvc = await asyncio.gather(
            self.create(SERVICE_ACCOUNTS, builders.service_account(mc)),
            self.create(ROLES, builders.role(mc)),
            self.create(ROLE_BINDINGS, builders.role_binding(mc)),
            self.create(
                PERSISTENT_VOLUME_CLAIMS, builders.persistent_volume_claim(mc, claim, 1024**3)
            ),
        )
        job = names.download_job_name(mc["metadata"]["name"], pvc["metadata"]["uid"], 0)
        await asyncio.gather(
            self.create(JOBS, builders.download_job(mc, job, claim, DOWNLOADS)),
            self.status(kinds.MODEL_CACHES, mc["metadata"]["name"], {"status": "Progressing"}),
        )
        return claim
