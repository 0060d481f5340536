"""The download governor on the real API server: with one slot, one download runs at a time, a
cache a service waits for goes before an older one nobody waits for, and each waiting cache says
its place (issue 13)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.resources import JOBS
from tests.integration.test_caching_harness import (
    Running,
    finish,
    get_or_none,
    live_items,
    service,
    start_controller,
    template,
)
from tests.support import eventually

MC = kinds.MODEL_CACHES
Object = dict[str, Any]


@pytest.fixture
async def one_slot(control_plane: ControlPlane) -> AsyncIterator[Running]:
    running = start_controller(str(control_plane.kubeconfig), max_concurrent_downloads=1)
    try:
        yield running
    finally:
        await running.stop()


def model_cache(name: str, uri: str) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": MC.kind,
        "metadata": {"name": name},
        "spec": {"sourceUri": uri, "size": "1Gi"},
    }


def ready(mc: Object | None) -> Object:
    conditions = ((mc or {}).get("status") or {}).get("conditions") or ()
    return next((c for c in conditions if c["type"] == "Ready"), {})


async def reason_of(kube: KubeClient, namespace: str, name: str) -> str | None:
    return ready(await get_or_none(kube, MC, name, namespace)).get("reason")


async def only_running_job(kube: KubeClient, namespace: str, cache: str) -> Object | None:
    running = [j for j in await live_items(kube, JOBS, namespace) if not j.get("status")]
    labels = [j["metadata"]["labels"].get(kinds.LABEL_MODEL_CACHE) for j in running]
    return running[0] if labels == [cache] else None


async def test_one_slot_serves_the_cache_a_service_waits_for_first(
    kube: KubeClient, namespace: str, one_slot: Running
) -> None:
    await kube.create(MC, model_cache("first", "hf://org/first"), namespace)
    job = await eventually(lambda: only_running_job(kube, namespace, "first"), what="first runs")
    await kube.create(MC, model_cache("older", "hf://org/older"), namespace)

    async def waits(name: str) -> Object | None:
        mc = await get_or_none(kube, MC, name, namespace)
        return mc if ready(mc).get("reason") == "WaitingForDownloadSlot" else None

    older = await eventually(lambda: waits("older"), what="older waiting for a slot")
    assert older["status"]["status"] == "Pending"
    await kube.create(
        kinds.SERVICE_TEMPLATES, template("t", ("org/wanted", "hf://org/wanted")), namespace
    )
    await kube.create(kinds.SERVICES, service("svc", "t"), namespace)

    async def wanted_waits() -> Object | None:
        found = [
            mc
            for mc in await live_items(kube, MC, namespace)
            if mc["spec"]["sourceUri"] == "hf://org/wanted"
        ]
        return (
            found[0]
            if found and ready(found[0]).get("reason") == "WaitingForDownloadSlot"
            else None
        )

    wanted = await eventually(wanted_waits, what="the service's cache waiting for a slot")
    assert "1st in the queue" in ready(wanted)["message"], "a service waits for it: it goes first"
    await finish(kube, job)
    name = wanted["metadata"]["name"]
    job = await eventually(lambda: only_running_job(kube, namespace, name), what="wanted runs next")
    assert await reason_of(kube, namespace, "older") == "WaitingForDownloadSlot"
    await finish(kube, job)
    await eventually(lambda: only_running_job(kube, namespace, "older"), what="then the older one")
