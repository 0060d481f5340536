"""aimd's caching end to end with the real Job side: the controller in-process, `aimd probe` and
`aimd download` run by the local kubelet against a local hub, under each cache's own
ServiceAccount and Role. A size nobody gave is probed (B3); a source that does not exist yet fails
with the downloader's reason and is retried by itself until it appears (B4); the service then runs
on the downloaded files (B5)."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.dev.kubelet import LocalKubelet
from aimd.dev.localhub import serve_hub
from aimd.kube.client import KubeClient
from tests.integration.test_caching_harness import (
    items,
    service,
    start_controller,
    status_of,
    template,
)
from tests.support import eventually

PRESENT = ("org/present", "hf://org/present")
LATER = ("org/later", "hf://org/later")


async def _model_caches(kube: KubeClient, namespace: str) -> dict[str, Any]:
    return {mc["spec"]["sourceUri"]: mc for mc in await items(kube, kinds.MODEL_CACHES, namespace)}


async def test_probe_download_failure_retry_and_serving_with_the_real_job_side(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    running = start_controller(str(control_plane.kubeconfig))
    async with serve_hub() as hub:
        hub.add_model(PRESENT[0], size_mib=1)
        local = LocalKubelet(
            kube,
            tmp_path,
            control_plane.server,
            ca_file=str(control_plane.ca_file),
            namespace=namespace,
            extra_env={"HF_ENDPOINT": hub.url},
        )
        kubelet = asyncio.create_task(local.run())
        try:
            await kube.create(
                kinds.SERVICE_TEMPLATES, template("tpl", PRESENT, LATER, size=None), namespace
            )
            await kube.create(kinds.SERVICES, service("chat", "tpl"), namespace)

            async def one_available_one_failed() -> dict[str, Any] | None:
                caches = await _model_caches(kube, namespace)
                statuses = {uri: status_of(mc) for uri, mc in caches.items()}
                wanted = {PRESENT[1]: "Available", LATER[1]: "Failed"}
                return caches if statuses == wanted else None

            caches = await eventually(
                one_available_one_failed, timeout=180, what="present Available, later Failed"
            )
            present, later = caches[PRESENT[1]], caches[LATER[1]]
            assert present["status"]["probe"]["sizeBytes"] > 0, "the size was probed"
            files = list(
                local.volume_dir(namespace, present["status"]["persistentVolumeClaim"]).rglob("*")
            )
            assert files, "the model is on the volume"
            ready = next(c for c in later["status"]["conditions"] if c["type"] == "Ready")
            assert ready["reason"] == "SourceNotFound", ready
            assert later["status"]["nextRetryTime"]
            svc = await kube.get(kinds.SERVICES, "chat", namespace)
            assert svc["status"]["status"] in ("Failed", "Starting")

            hub.add_model(LATER[0], size_mib=1)

            async def chat_running() -> bool:
                svc = await kube.get(kinds.SERVICES, "chat", namespace)
                return status_of(svc) == "Running"

            await eventually(chat_running, timeout=180, what="the service running after retry")
            caches = await _model_caches(kube, namespace)
            assert {status_of(mc) for mc in caches.values()} == {"Available"}
            assert caches[LATER[1]]["status"]["failures"] >= 1
        finally:
            kubelet.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await kubelet
            await running.stop()
