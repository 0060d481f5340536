"""(No tests here.) What the caching integration tests share: the controller run in-process,
a kubelet stand-in that finishes Jobs and binds PVCs by patching their status, and small readers.

No mock of the API: every object lives in the real API server, and the garbage collector of the
test control plane does the collecting. The controller runs as its own ServiceAccount bound to
the roles manifests/rbac/ ships (tests/integration/controller_identity.py), so a right it lacks
fails the test.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from aimd.api import kinds
from aimd.caching.controller import Caching, run
from aimd.caching.model_cache_plan import RetryPolicy
from aimd.dev.kubelet import completed_status, failed_status, job_finished
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.resources import DEPLOYMENTS, JOBS, PERSISTENT_VOLUME_CLAIMS
from aimd.runtime import Manager
from aimd.settings import Settings
from tests.integration.controller_identity import controller_kubeconfig

Object = dict[str, Any]
IMAGE = "example.com/aimd:test"
FAST_RETRIES = RetryPolicy(base=2.0, cap=10.0)


@dataclass
class Running:
    task: asyncio.Task[int]
    manager: Manager | None = None
    caching: Caching | None = None

    async def stop(self) -> None:
        if self.manager is not None:
            self.manager.stop()
        try:
            await asyncio.wait_for(asyncio.shield(self.task), 30)
        except TimeoutError:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task


def start_controller(
    kubeconfig: str, policy: RetryPolicy = FAST_RETRIES, **settings: Any
) -> Running:
    """aimd on the API server of the admin ``kubeconfig``, as aimd's own ServiceAccount;
    ``settings`` override the Settings fields."""
    holder: Running

    def started(manager: Manager, caching: Caching) -> None:
        holder.manager, holder.caching = manager, caching

    async def as_controller() -> int:
        configured = Settings(
            kubeconfig=await controller_kubeconfig(kubeconfig),
            metrics_bind_address="0",
            health_probe_bind_address="0",
            shutdown_grace=5.0,
            **settings,
        )
        return await run(configured, IMAGE, retries=policy, handle_signals=False, started=started)

    task = asyncio.create_task(as_controller())
    holder = Running(task)
    return holder


@contextlib.asynccontextmanager
async def controller(kubeconfig: str) -> AsyncIterator[Running]:
    running = start_controller(kubeconfig)
    try:
        yield running
    finally:
        await running.stop()


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


async def bind(kube: KubeClient, claim: Object) -> None:
    requested = claim["spec"].get("resources", {}).get("requests", {})
    status = {
        "phase": "Bound",
        "accessModes": claim["spec"].get("accessModes", ["ReadWriteOnce"]),
        "capacity": {"storage": requested.get("storage", "1Gi")},
    }
    meta = claim["metadata"]
    with contextlib.suppress(NotFound):
        await kube.patch(
            PERSISTENT_VOLUME_CLAIMS, meta["name"], {"status": status}, meta["namespace"],
            subresource="status",
        )  # fmt: skip


async def finish(kube: KubeClient, job: Object, ok: bool = True, message: str = "exit 1") -> None:
    meta = job["metadata"]
    status = completed_status(now()) if ok else failed_status(now(), message)
    with contextlib.suppress(NotFound):
        await kube.patch(
            JOBS, meta["name"], {"status": status}, meta["namespace"], subresource="status"
        )


@dataclass
class FakeKubelet:
    """Binds every PVC and finishes every Job of one namespace, as a node would; ``hold`` keeps
    Jobs whose name it matches running."""

    kube: KubeClient
    namespace: str
    hold: Callable[[Object], bool] = lambda job: False
    finished: set[str] = field(default_factory=set)

    async def sync_once(self) -> None:
        for claim in (await self.kube.list(PERSISTENT_VOLUME_CLAIMS, self.namespace))["items"]:
            if (claim.get("status") or {}).get("phase") != "Bound" and not claim["metadata"].get(
                "deletionTimestamp"
            ):
                await bind(self.kube, claim)
        for job in (await self.kube.list(JOBS, self.namespace))["items"]:
            if job_finished(job) or self.hold(job) or job["metadata"].get("deletionTimestamp"):
                continue
            await finish(self.kube, job)
            self.finished.add(job["metadata"]["name"])

    async def run(self) -> None:
        while True:
            with contextlib.suppress(ApiError):
                await self.sync_once()
            await asyncio.sleep(0.3)


@contextlib.asynccontextmanager
async def kubelet(
    kube: KubeClient, namespace: str, hold: Callable[[Object], bool] = lambda job: False
) -> AsyncIterator[FakeKubelet]:
    fake = FakeKubelet(kube, namespace, hold)
    task = asyncio.create_task(fake.run())
    try:
        yield fake
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def template(name: str, *sources: tuple[str, str], size: str | None = "1Gi") -> Object:
    model_sources: list[Object] = []
    for model_id, uri in sources:
        source: Object = {"modelId": model_id, "sourceUri": uri}
        if size is not None:
            source["size"] = size
        model_sources.append(source)
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICE_TEMPLATES.kind,
        "metadata": {"name": name},
        "spec": {"image": "example.com/vllm:1", "modelSources": model_sources},
    }


def service(name: str, template_name: str, cache: bool = True) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICES.kind,
        "metadata": {"name": name},
        "spec": {"templateName": template_name, "cacheModel": cache},
    }


def template_cache(name: str, template_name: str) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.TEMPLATE_CACHES.kind,
        "metadata": {"name": name},
        "spec": {"templateName": template_name},
    }


async def items(kube: KubeClient, resource: Any, namespace: str) -> list[Object]:
    found: list[Object] = (await kube.list(resource, namespace))["items"]
    return found


async def live_items(kube: KubeClient, resource: Any, namespace: str) -> list[Object]:
    return [
        o
        for o in await items(kube, resource, namespace)
        if not o["metadata"].get("deletionTimestamp")
    ]


def status_of(obj: Object | None) -> str | None:
    return ((obj or {}).get("status") or {}).get("status")


async def get_or_none(kube: KubeClient, resource: Any, name: str, namespace: str) -> Object | None:
    try:
        return await kube.get(resource, name, namespace)
    except NotFound:
        return None


async def all_with_status(
    kube: KubeClient, resource: Any, namespace: str, status: str, count: int
) -> list[Object] | None:
    """The objects of ``resource``, if there are exactly ``count`` and all have ``status``."""
    found = await items(kube, resource, namespace)
    if len(found) == count and all(status_of(o) == status for o in found):
        return found
    return None


async def services_running(kube: KubeClient, namespace: str, count: int) -> list[Object] | None:
    """Services whose Deployment exists (no Deployment controller here: the test marks it ready)."""
    deployments = await items(kube, DEPLOYMENTS, namespace)
    for deployment in deployments:
        if not (deployment.get("status") or {}).get("readyReplicas"):
            await kube.patch(
                DEPLOYMENTS,
                deployment["metadata"]["name"],
                {"status": {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}},
                namespace,
                subresource="status",
            )
    return await all_with_status(kube, kinds.SERVICES, namespace, "Running", count)
