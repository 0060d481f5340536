"""Informers against a real API server: order, index-before-handler, restarts, 410 Gone."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import logging
import urllib.request
from collections.abc import AsyncIterator
from typing import Any

from prometheus_client import REGISTRY

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS
from aimd.kube.watch import Watcher
from aimd.runtime.index import key_of
from aimd.runtime.informer import Informer
from tests.support import eventually

Event = tuple[str, str, str | None]  # type, name, data["v"] of new (or old for DELETED)


def config_map(name: str, namespace: str, value: str, **labels: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "data": {"v": value},
    }


class Recorder:
    """A handler that records events and checks the index already holds what the event says."""

    def __init__(self, informer: Informer) -> None:
        self.informer = informer
        self.events: list[Event] = []
        self.violations: list[str] = []
        informer.add_handler(self)

    def __call__(self, event_type: str, old: Any, new: Any) -> None:
        obj = new if new is not None else old
        key = f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"
        stored = self.informer.index.get(key)
        if event_type == "DELETED" and stored is not None:
            self.violations.append(f"{key} still indexed when DELETED was delivered")
        if event_type != "DELETED" and stored is not new:
            self.violations.append(f"{key} not yet indexed when {event_type} was delivered")
        if (event_type == "ADDED") != (old is None):
            self.violations.append(f"{event_type} with old={old is not None}")
        self.events.append((event_type, obj["metadata"]["name"], (obj.get("data") or {}).get("v")))

    def names(self, event_type: str) -> set[str]:
        return {name for t, name, _ in self.events if t == event_type}


@contextlib.asynccontextmanager
async def running(informer: Informer) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(informer.run())
    try:
        await asyncio.wait_for(informer.wait_synced(), 30)
        yield task
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


def relists(resource: str, reason: str) -> float:
    return (
        REGISTRY.get_sample_value(
            "aim_informer_relists_total", {"resource": resource, "reason": reason}
        )
        or 0.0
    )


async def test_changes_reach_index_then_handlers_in_order(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIG_MAPS, config_map("before", namespace, "0", app="x"))
    informer = Informer(kube, CONFIG_MAPS, namespace)
    informer.add_index("app", lambda o: [(o["metadata"].get("labels") or {}).get("app")])
    recorder = Recorder(informer)
    async with running(informer):
        assert informer.synced
        assert recorder.events == [("ADDED", "before", "0")]
        listed = informer.index.get(f"{namespace}/before")
        assert listed is not None
        assert (listed["apiVersion"], listed["kind"]) == ("v1", "ConfigMap"), "as from a watch"
        assert [o["metadata"]["name"] for o in informer.index.by("app", "x")] == ["before"]

        await kube.create(CONFIG_MAPS, config_map("a", namespace, "1", app="x"))
        await kube.patch(CONFIG_MAPS, "a", {"data": {"v": "2"}}, namespace)
        await kube.patch(CONFIG_MAPS, "a", {"metadata": {"labels": {"app": "y"}}}, namespace)
        await kube.delete(CONFIG_MAPS, "before", namespace)
        await eventually(lambda: _async(len(recorder.events) >= 5), timeout=30, what="5 events")

        assert recorder.events == [
            ("ADDED", "before", "0"),
            ("ADDED", "a", "1"),
            ("MODIFIED", "a", "2"),
            ("MODIFIED", "a", "2"),
            ("DELETED", "before", "0"),
        ]
        assert recorder.violations == []
        assert informer.index.by("app", "x") == []
        assert [o["metadata"]["name"] for o in informer.index.by("app", "y")] == ["a"]
        assert informer.index.keys() == [f"{namespace}/a"]
        stored = informer.index.get(f"{namespace}/a")
        assert stored is not None
        assert "managedFields" not in stored["metadata"]


async def test_a_late_handler_is_told_about_existing_objects(
    kube: KubeClient, namespace: str
) -> None:
    await kube.create(CONFIG_MAPS, config_map("present", namespace, "1"))
    informer = Informer(kube, CONFIG_MAPS, namespace)
    async with running(informer):
        late = Recorder(informer)
        assert late.events == [("ADDED", "present", "1")]


async def test_an_object_larger_than_a_mebibyte_parses(kube: KubeClient, namespace: str) -> None:
    """The largest object the API server stores (1 MiB of ConfigMap data, 1.3 MiB as base64 on
    the wire); the multi-MiB case is a unit test of the line splitter."""
    informer = Informer(kube, CONFIG_MAPS, namespace)
    recorder = Recorder(informer)
    blob = base64.b64encode(bytes(range(256)) * 4000).decode()
    async with running(informer):
        body = config_map("big", namespace, "1")
        body["binaryData"] = {"blob": blob}
        await kube.create(CONFIG_MAPS, body)
        await eventually(lambda: _async(recorder.names("ADDED")), timeout=30, what="big ADDED")
        stored = informer.index.get(f"{namespace}/big")
        assert stored is not None
        assert stored["binaryData"]["blob"] == blob


async def test_survives_an_api_server_restart(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace)
    recorder = Recorder(informer)
    async with running(informer) as task:
        await kube.create(CONFIG_MAPS, config_map("one", namespace, "1"))
        await eventually(lambda: _async("one" in recorder.names("ADDED")), what="one")
        await asyncio.to_thread(control_plane.restart_apiserver)
        await kube.create(CONFIG_MAPS, config_map("two", namespace, "2"))
        await kube.delete(CONFIG_MAPS, "one", namespace)
        await eventually(
            lambda: _async("two" in recorder.names("ADDED") and "one" in recorder.names("DELETED")),
            timeout=90,
            what="events after the restart",
        )
        assert informer.index.keys() == [f"{namespace}/two"]
        assert recorder.violations == []
        assert not task.done()


def _etcd(control_plane: ControlPlane, path: str, body: dict[str, Any]) -> dict[str, Any]:
    request = urllib.request.Request(
        f"{control_plane.etcd_endpoint}{path}",
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read())
        return result


def compact_etcd(control_plane: ControlPlane) -> None:
    everything = base64.b64encode(b"\0").decode()
    current = _etcd(
        control_plane,
        "/v3/kv/range",
        {"key": everything, "range_end": everything, "count_only": True},
    )
    revision = int(current["header"]["revision"])
    _etcd(control_plane, "/v3/kv/compaction", {"revision": revision, "physical": True})


async def test_deletions_while_away_are_seen_after_410(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    for name in ("keep", "gone-1", "gone-2", "changed"):
        await kube.create(CONFIG_MAPS, config_map(name, namespace, "1"))
    informer = Informer(kube, CONFIG_MAPS, namespace)
    recorder = Recorder(informer)
    async with running(informer):
        await eventually(lambda: _async(len(informer.index) == 4), what="4 objects")
    stale_version = informer.watchers[0].resource_version
    assert stale_version

    # While the informer is away: deletions, a change, a creation; then history is erased.
    await kube.delete(CONFIG_MAPS, "gone-1", namespace)
    await kube.delete(CONFIG_MAPS, "gone-2", namespace)
    await kube.patch(CONFIG_MAPS, "changed", {"data": {"v": "2"}}, namespace)
    await kube.create(CONFIG_MAPS, config_map("new", namespace, "1"))
    await asyncio.to_thread(compact_etcd, control_plane)
    await asyncio.to_thread(control_plane.restart_apiserver)

    expired_before = relists("configmaps", "expired")
    recorder.events.clear()
    task = asyncio.create_task(informer.run())  # resumes: watch from the stale version, 410
    try:
        await eventually(
            lambda: _async(recorder.names("DELETED") == {"gone-1", "gone-2"}),
            timeout=90,
            what="deletions made while away",
        )
        assert ("MODIFIED", "changed", "2") in recorder.events
        assert ("ADDED", "new", "1") in recorder.events
        assert sorted(informer.index.keys()) == sorted(
            f"{namespace}/{n}" for n in ("keep", "changed", "new")
        )
        assert relists("configmaps", "expired") == expired_before + 1
        assert recorder.violations == []
        assert ("MODIFIED", "keep", "1") not in recorder.events, "unchanged objects stay quiet"
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _async(value: Any) -> Any:
    """For ``eventually``: falsy values (empty sets too) mean "not yet"."""
    return value or None


async def test_a_silent_watch_is_reopened_without_backing_off(
    kube: KubeClient, namespace: str, caplog: Any
) -> None:
    informer = Informer(
        kube,
        CONFIG_MAPS,
        namespace,
        watcher=Watcher(kube, CONFIG_MAPS, namespace, inactivity_timeout=0.5),
    )
    recorder = Recorder(informer)
    caplog.set_level(logging.INFO, logger="aimd.kube.watch")
    async with running(informer):
        await asyncio.sleep(2.0)
        reopened = [r for r in caplog.records if "silent" in r.getMessage()]
        assert len(reopened) >= 2
        assert (
            informer.watchers[0].backoff.next_delay() < 2 * informer.watchers[0].backoff.initial
        ), "silence did not count as failures"
        await kube.create(CONFIG_MAPS, config_map("late", namespace, "1"))
        await eventually(lambda: _async("late" in recorder.names("ADDED")), what="late event")


async def test_index_converges_to_the_server_under_churn_and_a_restart(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    informer = Informer(kube, CONFIG_MAPS, namespace)
    recorder = Recorder(informer)

    async def churn(start: int, stop: int) -> None:
        for i in range(start, stop):
            await kube.create(CONFIG_MAPS, config_map(f"cm-{i}", namespace, "1"))
            if i % 3 == 0:
                await kube.patch(CONFIG_MAPS, f"cm-{i}", {"data": {"v": "2"}}, namespace)
            if i % 4 == 0:
                await kube.delete(CONFIG_MAPS, f"cm-{i}", namespace)

    async with running(informer):
        await asyncio.gather(*(churn(n * 25, n * 25 + 25) for n in range(4)))
        await asyncio.to_thread(control_plane.restart_apiserver)
        await asyncio.gather(*(churn(100 + n * 25, 125 + n * 25) for n in range(4)))

        async def converged() -> Any:
            truth = await kube.list(CONFIG_MAPS, namespace)
            want = {
                f"{namespace}/{o['metadata']['name']}": o["metadata"]["resourceVersion"]
                for o in truth["items"]
            }
            have = {key_of(o): o["metadata"]["resourceVersion"] for o in informer.index}
            return want == have or None

        await eventually(converged, timeout=90, what="index equal to the server's state")
        assert recorder.violations == []
        assert len(informer.index) == 150
        patched = [o for o in informer.index if int(o["metadata"]["name"][3:]) % 3 == 0]
        assert patched
        assert all(o["data"]["v"] == "2" for o in patched)
