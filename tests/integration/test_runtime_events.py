"""Events against the real API server: written in the background, repeats folded into a series."""

from __future__ import annotations

import asyncio
import contextlib

from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS, EVENTS, NAMESPACES
from aimd.runtime.events import EventRecorder


async def test_events_are_written_and_repeats_fold_into_a_series(
    kube: KubeClient, namespace: str
) -> None:
    subject = await kube.create(
        CONFIG_MAPS,
        {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "subject"}},
        namespace,
    )
    recorder = EventRecorder(kube, "aimd-test", "replica-0")
    writer = asyncio.create_task(recorder.run())
    try:
        for _ in range(4):
            recorder.normal(subject, "Created", "made the thing", action="Create")
        recorder.warning(subject, "Failed", "x" * 5000)
        await asyncio.wait_for(recorder.flush(), 30)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer

    events = (await kube.list(EVENTS, namespace))["items"]
    by_reason = {event["reason"]: event for event in events}
    assert sorted(by_reason) == ["Created", "Failed"]
    created = by_reason["Created"]
    assert created["regarding"]["uid"] == subject["metadata"]["uid"]
    assert created["regarding"]["kind"] == "ConfigMap"
    assert created["reportingController"] == "aimd-test"
    assert created["series"]["count"] == 4
    assert by_reason["Failed"]["type"] == "Warning"
    assert len(by_reason["Failed"]["note"]) == 1024


async def test_events_about_cluster_scoped_objects_go_to_default(
    kube: KubeClient, namespace: str
) -> None:
    subject = await kube.get(NAMESPACES, namespace)
    recorder = EventRecorder(kube, "aimd-test", "replica-0")
    writer = asyncio.create_task(recorder.run())
    reason = f"Checked{namespace.replace('-', '')[-6:]}"
    try:
        recorder.normal(subject, reason, "a cluster-scoped object")
        await asyncio.wait_for(recorder.flush(), 30)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
    events = (await kube.list(EVENTS, "default"))["items"]
    assert [e["regarding"]["name"] for e in events if e["reason"] == reason] == [namespace]
