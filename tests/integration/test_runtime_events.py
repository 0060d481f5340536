"""Events against the real API server: written in the background, repeats folded into a series,
similar ones aggregated, and at most a bounded number per object (drops counted, one summary)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client import REGISTRY

from aimd.dev.controlplane import ControlPlane
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


class CountingClient(KubeClient):
    """A real client that also counts the writes it sends, to show what the recorder costs."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.writes: list[str] = []

    async def request(self, method: str, path: str, **kwargs: Any) -> Any:
        if method.upper() != "GET":
            self.writes.append(method.upper())
        return await super().request(method, path, **kwargs)


@contextlib.asynccontextmanager
async def writing(recorder: EventRecorder) -> AsyncIterator[EventRecorder]:
    writer = asyncio.create_task(recorder.run())
    try:
        yield recorder
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer


async def subject(kube: KubeClient, namespace: str, name: str = "subject") -> dict[str, Any]:
    body = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}}
    return await kube.create(CONFIG_MAPS, body, namespace)


def dropped(reason: str) -> float:
    return REGISTRY.get_sample_value("aim_events_dropped_total", {"reason": reason}) or 0.0


async def test_repeats_of_a_written_event_cost_one_patch_per_interval(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    regarding = await subject(kube, namespace)
    client = await CountingClient.from_kubeconfig(str(control_plane.kubeconfig))
    recorder = EventRecorder(client, "aimd-test", "replica-0", series_interval=3600)
    try:
        async with writing(recorder):
            recorder.warning(regarding, "BackOff", "retrying")
            await asyncio.wait_for(recorder.flush(), 30)
            for _ in range(50):
                recorder.warning(regarding, "BackOff", "retrying")
            await asyncio.wait_for(recorder.flush(), 30)
    finally:
        await client.close()
    assert client.writes == ["POST", "PATCH"], "fifty repeats, one patch"
    (event,) = (await kube.list(EVENTS, namespace))["items"]
    assert event["series"]["count"] == 51


async def test_similar_events_aggregate_and_each_object_gets_a_bounded_number(
    kube: KubeClient, namespace: str, caplog: pytest.LogCaptureFixture
) -> None:
    noisy, quiet = await subject(kube, namespace, "noisy"), await subject(kube, namespace, "quiet")
    recorder = EventRecorder(kube, "aimd-test", "replica-0")
    spam_before = dropped("spam")
    with caplog.at_level(logging.WARNING, logger="aimd.runtime.events"):
        async with writing(recorder):
            for attempt in range(12):  # similar: one reason, twelve notes
                recorder.warning(noisy, "RetryScheduled", f"attempt {attempt} failed")
            for number in range(30):  # thirty different reasons on one object
                recorder.normal(noisy, f"Step{number}", "done")
            recorder.normal(quiet, "Created", "another object has its own budget")
            await asyncio.wait_for(recorder.flush(), 60)

    events = (await kube.list(EVENTS, namespace))["items"]
    about_noisy = [e for e in events if e["regarding"]["name"] == "noisy"]
    assert len(about_noisy) == 25, "the spam filter's burst per object"
    retries = sorted(e["note"] for e in about_noisy if e["reason"] == "RetryScheduled")
    assert len(retries) == 11, "ten notes of their own, then one combined Event"
    combined = [e for e in about_noisy if e["note"].startswith("(combined from similar events)")]
    assert len(combined) == 1
    assert combined[0]["series"]["count"] == 2
    assert [e["reason"] for e in events if e["regarding"]["name"] == "quiet"] == ["Created"]
    assert dropped("spam") - spam_before == 30 - (25 - 11)
    summaries = [r for r in caplog.records if "dropped" in r.getMessage()]
    assert len(summaries) == 1, "one summary line, not one per dropped Event"
    assert "spam: 16" in summaries[0].getMessage()


async def test_a_few_events_go_one_by_one_and_a_burst_a_few_at_a_time_none_lost(
    kube: KubeClient, namespace: str
) -> None:
    subjects = [
        await kube.create(
            CONFIG_MAPS,
            {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": f"subject-{i}"}},
            namespace,
        )
        for i in range(24)
    ]
    in_flight, peak = 0, 0
    create = kube.create

    async def counted_create(*args: Any, **kwargs: Any) -> Any:
        # The real request, counted: how many of the recorder's POSTs overlap.
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await create(*args, **kwargs)
        finally:
            in_flight -= 1

    kube.create = counted_create  # type: ignore[method-assign]
    # From 10 waiting on it is a burst: 24 at once are, 3 are not.
    recorder = EventRecorder(kube, "aimd-test", "replica-0", writers=4, burst_at=10)
    writer = asyncio.create_task(recorder.run())
    try:
        for subject in subjects[:3]:
            recorder.normal(subject, "Created", "made the thing")
        await asyncio.wait_for(recorder.flush(), 30)
        assert peak == 1
        for subject in subjects[3:]:
            recorder.normal(subject, "Created", "made the thing")
        await asyncio.wait_for(recorder.flush(), 30)
    finally:
        writer.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await writer
        kube.create = create  # type: ignore[method-assign]

    events = (await kube.list(EVENTS, namespace))["items"]
    assert sorted(e["regarding"]["name"] for e in events) == sorted(
        s["metadata"]["name"] for s in subjects
    )
    # One POST at a time fell behind a busy API server at 10,000 services and dropped Events.
    assert peak == 4
