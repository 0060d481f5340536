"""The stand-in kubelet, and the watches the benchmark waits on.

The control plane runs no Job controller, PV binder or pods, so the benchmark plays them for
aimd and the floor alike: it binds each PVC, completes each Job and readies each Deployment as
soon as its watch shows it. Watches, not polling lists: a list of 10,000 Deployments every half
second would cost the API server (and this process, on the same two cores) more than the work
being measured, and would add up to half a second to every step. Each object is written once.

:class:`Watched` is one resource in one namespace, watched by aimd's own informer, with counts
kept as events arrive (a count over 10,000 objects recomputed on each of 40,000 events would
not be) and a way to wait until a condition on them holds.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from typing import Any

from aimd.dev.kubelet import completed_status, job_finished
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError
from aimd.kube.resources import DEPLOYMENTS, JOBS, PERSISTENT_VOLUME_CLAIMS, Resource
from aimd.runtime.informer import Informer

Object = dict[str, Any]
Predicate = Callable[[Object], bool]
CONCURRENCY = 32


class Tally:
    """How many objects of one watch satisfy ``predicate`` now."""

    def __init__(self, predicate: Predicate) -> None:
        self.predicate = predicate
        self.value = 0

    def update(self, old: Object | None, new: Object | None) -> None:
        self.value += int(new is not None and self.predicate(new))
        self.value -= int(old is not None and self.predicate(old))


class Watched:
    def __init__(self, client: KubeClient, resource: Resource, namespace: str) -> None:
        self.informer = Informer(client, resource, namespace)
        self.tallies: list[Tally] = []
        self._changed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.informer.add_handler(self._handle)

    def tally(self, predicate: Predicate) -> Tally:
        tally = Tally(predicate)
        self.tallies.append(tally)
        for obj in self.informer.index:
            tally.update(None, obj)
        return tally

    def _handle(self, event: str, old: Object | None, new: Object | None) -> None:
        for tally in self.tallies:
            tally.update(old, new)
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def start(self) -> None:
        self._task = asyncio.create_task(self.informer.run(), name=f"watch {self.informer.name}")
        await self.informer.wait_synced()

    async def until(self, condition: Callable[[], bool]) -> float:
        """Waits until ``condition()`` holds (checked after every event); time.monotonic() then."""
        while not condition():
            await self._changed.wait()
        return time.monotonic()

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task


def pvc_bound(claim: Object) -> bool:
    return (claim.get("status") or {}).get("phase") == "Bound"


def deployment_ready(deployment: Object) -> bool:
    return bool((deployment.get("status") or {}).get("readyReplicas"))


def bound_status(claim: Object) -> Object:
    return {
        "phase": "Bound",
        "accessModes": claim["spec"]["accessModes"],
        "capacity": claim["spec"]["resources"]["requests"],
    }


def ready_status(_: Object) -> Object:
    return {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


class StandInKubelet:
    """Binds PVCs, completes Jobs and readies Deployments in one namespace as they appear."""

    def __init__(self, client: KubeClient, namespace: str) -> None:
        self.client = client
        self.namespace = namespace
        self.claims = Watched(client, PERSISTENT_VOLUME_CLAIMS, namespace)
        self.jobs = Watched(client, JOBS, namespace)
        self.deployments = Watched(client, DEPLOYMENTS, namespace)
        self.bound = self.claims.tally(pvc_bound)
        self.finished = self.jobs.tally(job_finished)
        self.ready = self.deployments.tally(deployment_ready)
        self.writes = 0
        self._done: set[str] = set()  # uids written: each object once
        self._tasks: set[asyncio.Task[None]] = set()
        self._limit = asyncio.Semaphore(CONCURRENCY)
        for watched, resource, settled, status in (
            (self.claims, PERSISTENT_VOLUME_CLAIMS, pvc_bound, bound_status),
            (self.jobs, JOBS, job_finished, lambda _: completed_status(now())),
            (self.deployments, DEPLOYMENTS, deployment_ready, ready_status),
        ):
            watched.informer.add_handler(self._handler(resource, settled, status))

    def _handler(
        self, resource: Resource, settled: Predicate, status: Callable[[Object], Object]
    ) -> Callable[[str, Object | None, Object | None], None]:
        def handle(event: str, old: Object | None, new: Object | None) -> None:
            if new is None or settled(new) or new["metadata"]["uid"] in self._done:
                return
            self._done.add(new["metadata"]["uid"])
            task = asyncio.create_task(self._write(resource, new, status(new)))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

        return handle

    async def _write(self, resource: Resource, obj: Object, status: Object) -> None:
        async with self._limit:
            self.writes += 1
            with contextlib.suppress(ApiError):  # gone meanwhile: nothing to play
                await self.client.patch(
                    resource,
                    obj["metadata"]["name"],
                    {"status": status},
                    self.namespace,
                    subresource="status",
                )

    async def start(self) -> None:
        await asyncio.gather(self.claims.start(), self.jobs.start(), self.deployments.start())

    async def stop(self) -> None:
        for watched in (self.claims, self.jobs, self.deployments):
            await watched.stop()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
