"""The manager against a real API server: endpoints, reconcile loop, leader election, shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from collections.abc import AsyncIterator
from functools import partial
from typing import Any

import aiohttp
import pytest

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.lease import LeadershipLost, micro_time
from aimd.kube.resources import CONFIG_MAPS, LEASES, NAMESPACES
from aimd.runtime import Controller, Manager, Result
from aimd.settings import Settings
from tests.support import RecordingClient, eventually


class WatchedClient(RecordingClient):
    """Records the verbs it sent, to prove a standby writes nothing."""

    def writes(self) -> list[tuple[str, str]]:
        return [(m, p) for m, p in self.methods if m != "GET"]


def settings(namespace: str, identity: str = "solo", **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "metrics_bind_address": "127.0.0.1:0",
        "metrics_secure": False,
        "health_probe_bind_address": "127.0.0.1:0",
        "leader_election_namespace": namespace,
        "leader_election_identity": identity,
        "leader_election_id": "test-leader",
        "lease_duration": 4.0,
        "renew_deadline": 3.0,
        "retry_period": 0.5,
        "shutdown_grace": 10.0,
    }
    values.update(overrides)
    return Settings(**values)


@contextlib.asynccontextmanager
async def running(manager: Manager) -> AsyncIterator[asyncio.Task[None]]:
    task = asyncio.create_task(manager.run())
    try:
        yield task
    finally:
        if not task.done():
            manager.stop()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(task, 30)
        if not task.done():
            task.cancel()
        with contextlib.suppress(BaseException):
            await task


async def fetch(port: int | None, path: str) -> tuple[int, str]:
    assert port is not None
    async with (
        aiohttp.ClientSession() as session,
        session.get(f"http://127.0.0.1:{port}{path}") as response,
    ):
        return response.status, await response.text()


async def truthy(value: Any) -> Any:
    return value or None


async def test_reconciles_serves_metrics_and_probes(
    control_plane: ControlPlane, namespace: str
) -> None:
    async with await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) as client:
        manager = Manager(client, settings(namespace), handle_signals=False)
        maps = manager.informer(CONFIG_MAPS, namespace)
        seen: list[str] = []

        async def reconcile(key: str) -> Result | None:
            obj = maps.index.get(key)
            if obj is None:
                return None
            seen.append(key)
            if (obj["metadata"].get("annotations") or {}).get("done") != "yes":
                name = obj["metadata"]["name"]
                patch = {"metadata": {"annotations": {"done": "yes"}}}
                await manager.client.patch(CONFIG_MAPS, name, patch, namespace)
            return None

        controller = manager.controller("test-configmaps", reconcile, workers=2)
        maps.add_handler(lambda _t, old, new: controller.enqueue(_key(new or old)))

        async with running(manager):
            await eventually(lambda: truthy(manager.ready), what="manager ready")
            assert manager.is_leader, "without leader election every replica leads"
            status, text = await fetch(manager.health_port, "/readyz")
            assert status == 200, text
            status, text = await fetch(manager.health_port, "/healthz")
            assert status == 200, text

            await client.create(CONFIG_MAPS, _config_map("target", namespace))

            async def annotated() -> Any:
                obj = maps.index.get(f"{namespace}/target")
                return obj and (obj["metadata"].get("annotations") or {}).get("done") == "yes"

            await eventually(annotated, what="the reconcile's patch to come back via the watch")

            status, metrics = await fetch(manager.metrics_port, "/metrics")
            assert status == 200
            reconciles = 'controller_runtime_reconcile_total{controller="test-configmaps"'
            for line in (
                f'{reconciles},result="success"}}',
                f'{reconciles},result="error"}} 0.0',
                'workqueue_depth{controller="test-configmaps",name="test-configmaps"}',
                'controller_runtime_max_concurrent_reconciles{controller="test-configmaps"} 2.0',
                'aim_informer_events_total{resource="configmaps",type="added"}',
                'aim_informer_relists_total{reason="initial",resource="configmaps"}',
                "rest_client_requests_total{",
                "process_resident_memory_bytes",
                'workqueue_longest_running_processor_seconds{controller="test-configmaps"',
            ):
                assert line in metrics, line
            assert "_created" not in metrics


async def test_one_leader_standby_writes_nothing_and_takes_over(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    clients = [await WatchedClient.from_kubeconfig(str(control_plane.kubeconfig)) for _ in range(2)]
    managers = []
    reconciled: dict[str, int] = {}
    for number, client in enumerate(clients):
        identity = f"replica-{number}"
        manager = Manager(
            client, settings(namespace, identity, leader_elect=True), handle_signals=False
        )
        maps = manager.informer(CONFIG_MAPS, namespace)
        reconciled[identity] = 0

        async def reconcile(key: str, me: str = identity) -> None:
            reconciled[me] += 1

        controller = manager.controller("test-election", reconcile)
        maps.add_handler(partial(enqueue, controller))
        managers.append(manager)

    try:
        tasks = [asyncio.create_task(m.run()) for m in managers]
        await eventually(
            lambda: truthy(any(m.is_leader for m in managers)), what="a leader", timeout=30
        )
        # Both raced to create the Lease; from now on only the leader may write.
        for client in clients:
            client.methods.clear()
        await asyncio.sleep(2)  # several retry periods: the standby keeps polling
        leaders = [m for m in managers if m.is_leader]
        assert len(leaders) == 1
        leader = leaders[0]
        standby = next(m for m in managers if m is not leader)
        assert await eventually(lambda: truthy(standby.ready), what="standby ready")

        await kube.create(CONFIG_MAPS, _config_map("work", namespace))
        leader_id = leader.settings.leader_election_identity
        standby_id = standby.settings.leader_election_identity
        await eventually(lambda: truthy(reconciled[leader_id] > 0), what="leader reconciles")
        lease = await kube.get(LEASES, "test-leader", namespace)
        assert lease["spec"]["holderIdentity"] == leader_id

        standby_client = clients[managers.index(standby)]
        assert standby_client.writes() == []
        assert any(m == "GET" for m, _ in standby_client.methods), "it does poll the lease"
        assert reconciled[standby_id] == 0

        # The leader dies without releasing: the standby waits out the lease, then leads.
        tasks[managers.index(leader)].cancel()
        await eventually(lambda: truthy(standby.is_leader), what="take-over", timeout=30)
        lease = await kube.get(LEASES, "test-leader", namespace)
        assert lease["spec"]["holderIdentity"] == standby_id
        assert lease["spec"]["leaseTransitions"] == 1
        await eventually(
            lambda: truthy(reconciled[standby_id] > 0), what="the new leader reconciles"
        )
    finally:
        for manager in managers:
            manager.stop()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await asyncio.wait_for(task, 30)
        for client in clients:
            await client.close()


async def test_release_on_shutdown_hands_over_at_once(
    control_plane: ControlPlane, namespace: str
) -> None:
    async with await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) as client:
        long = {"lease_duration": 60.0, "renew_deadline": 40.0, "retry_period": 0.5}
        first = Manager(
            client, settings(namespace, "first", leader_elect=True, **long), handle_signals=False
        )
        second = Manager(
            client, settings(namespace, "second", leader_elect=True, **long), handle_signals=False
        )
        async with running(first) as first_task:
            await eventually(lambda: truthy(first.is_leader), what="first leads")
            async with running(second):
                await asyncio.sleep(1.5)
                assert not second.is_leader
                first.stop()
                await asyncio.wait_for(first_task, 30)
                # Far sooner than the 60 s lease: the lease was released, not left to expire.
                await eventually(lambda: truthy(second.is_leader), what="hand-over", timeout=15)


async def test_losing_the_lease_stops_every_writer_at_once(
    control_plane: ControlPlane, namespace: str
) -> None:
    async with await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) as client:
        manager = Manager(
            client, settings(namespace, "victim", leader_elect=True), handle_signals=False
        )
        maps = manager.informer(CONFIG_MAPS, namespace)
        started = asyncio.Event()
        cancelled = asyncio.Event()

        async def reconcile(key: str) -> None:
            started.set()
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                cancelled.set()
                raise

        controller = manager.controller("test-lost", reconcile)
        maps.add_handler(lambda _t, old, new: controller.enqueue(_key(new or old)))
        task = asyncio.create_task(manager.run())
        try:
            await eventually(lambda: truthy(manager.is_leader), what="leads")
            await client.create(CONFIG_MAPS, _config_map("slow", namespace))
            await asyncio.wait_for(started.wait(), 30)

            lease = await client.get(LEASES, "test-leader", namespace)
            lease["spec"].update(
                holderIdentity="thief", renewTime=micro_time(), leaseDurationSeconds=3600
            )
            await client.replace(LEASES, lease)

            with pytest.raises(LeadershipLost):
                await asyncio.wait_for(task, 30)
            assert cancelled.is_set(), "the in-flight reconcile was cancelled"
            assert not manager.is_leader
        finally:
            if not task.done():
                task.cancel()


async def test_sigterm_drains_in_flight_reconciles(
    control_plane: ControlPlane, namespace: str
) -> None:
    async with await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) as client:
        manager = Manager(client, settings(namespace), handle_signals=True)
        maps = manager.informer(CONFIG_MAPS, namespace)
        started = asyncio.Event()
        finished: list[str] = []

        async def reconcile(key: str) -> None:
            started.set()
            await asyncio.sleep(1.0)
            finished.append(key)

        controller = manager.controller("test-sigterm", reconcile)
        maps.add_handler(lambda _t, old, new: controller.enqueue(_key(new or old)))
        task = asyncio.create_task(manager.run())
        await eventually(lambda: truthy(manager.ready), what="ready")
        await client.create(CONFIG_MAPS, _config_map("drain-me", namespace))
        await asyncio.wait_for(started.wait(), 30)
        os.kill(os.getpid(), signal.SIGTERM)
        await asyncio.wait_for(task, 30)
        assert finished == [f"{namespace}/drain-me"], "the running reconcile was allowed to end"


def enqueue(
    controller: Controller[str], _t: str, old: dict[str, Any] | None, new: dict[str, Any] | None
) -> None:
    controller.enqueue(_key(new or old))


def _key(obj: dict[str, Any] | None) -> str:
    assert obj is not None
    return f"{obj['metadata']['namespace']}/{obj['metadata']['name']}"


def _config_map(name: str, namespace: str) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": {"v": "1"},
    }


async def test_namespaced_mode_watches_only_the_named_namespaces(
    control_plane: ControlPlane, kube: KubeClient, namespace: str
) -> None:
    others = [f"{namespace[:50]}-{suffix}" for suffix in ("b", "out")]
    for name in others:
        await kube.create(NAMESPACES, {"metadata": {"name": name}})
    second, outside = others
    try:
        for where in (namespace, second, outside):
            await kube.create(CONFIG_MAPS, _config_map("before", where))
        async with await KubeClient.from_kubeconfig(str(control_plane.kubeconfig)) as client:
            manager = Manager(
                client, settings(namespace, namespaces=(namespace, second)), handle_signals=False
            )
            maps = manager.informer(CONFIG_MAPS)
            spaces = manager.informer(NAMESPACES)
            seen: list[tuple[str, str]] = []
            maps.add_handler(
                lambda t, old, new: seen.append((t, _key(new if new is not None else old)))
            )
            async with running(manager):
                await eventually(lambda: truthy(manager.ready), what="every namespace listed")
                assert set(maps.index.keys()) == {f"{namespace}/before", f"{second}/before"}
                assert maps.name == f"configmaps@{namespace},{second}"
                assert spaces.index.get(outside) is not None, "cluster-scoped: unchanged"

                await kube.create(CONFIG_MAPS, _config_map("after", second))
                await kube.create(CONFIG_MAPS, _config_map("after", outside))
                await kube.delete(CONFIG_MAPS, "before", namespace)
                await eventually(
                    lambda: truthy(len(seen) >= 4), what="the changes in the two namespaces"
                )
                assert set(maps.index.keys()) == {f"{second}/after", f"{second}/before"}
                assert ("ADDED", f"{second}/after") in seen
                assert ("DELETED", f"{namespace}/before") in seen
                assert all(not key.startswith(f"{outside}/") for _, key in seen)
    finally:
        for name in others:
            await kube.delete(NAMESPACES, name)
