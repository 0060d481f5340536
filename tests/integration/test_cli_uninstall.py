"""`aimd uninstall` against a real API server: it refuses while aimd runs, removes aimd's
finalizer and nobody else's, and afterwards services, caches, namespaces and even the CRDs can be
deleted with aimd gone."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import secrets
import signal
import sys
import tempfile
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aimd.api import kinds
from aimd.api.crds import all_crds
from aimd.dev.controlplane import ControlPlane, build_binaries, remove_workdir
from aimd.kube.client import KubeClient
from aimd.kube.errors import NotFound
from aimd.kube.resources import CUSTOM_RESOURCE_DEFINITIONS, LEASES, NAMESPACES, Resource
from tests.support import eventually, sample

OTHER = "example.com/keep"  # another party's finalizer
Object = dict[str, Any]


async def aimd(kubeconfig: Path, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        *args,
        "--kubeconfig",
        str(kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@contextlib.asynccontextmanager
async def controller(kubeconfig: Path, namespace: str, lease: str) -> AsyncIterator[Any]:
    """`aimd run` with leader election, as its own process, as in a cluster."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        "run",
        f"--kubeconfig={kubeconfig}",
        "--leader-elect",
        f"--leader-election-namespace={namespace}",
        f"--leader-election-id={lease}",
        "--metrics-bind-address=0",
        "--health-probe-bind-address=0",
        "--shutdown-grace=5",
        "--image=example.com/aimd:test",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()


def finalizers(obj: Object) -> list[str]:
    return list(obj["metadata"].get("finalizers") or [])


async def gone(kube: KubeClient, resource: Resource, name: str, namespace: str | None) -> bool:
    try:
        await kube.get(resource, name, namespace)
    except NotFound:
        return True
    return False


async def with_finalizer(
    kube: KubeClient, resource: Resource, name: str, namespace: str
) -> Object | None:
    obj = await kube.get(resource, name, namespace)
    return obj if kinds.FINALIZER in finalizers(obj) else None


async def test_uninstall_refuses_while_aimd_runs_then_lets_everything_be_deleted(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    config = control_plane.kubeconfig
    lease = f"aimd-leader-{secrets.token_hex(3)}"
    lease_flags = ("--leader-election-namespace", namespace, "--leader-election-id", lease)
    await kube.create(kinds.SERVICE_TEMPLATES, sample("aimservicetemplate"), namespace)
    for name in ("chat", "chat-b"):
        service = sample("aimservice")
        service["metadata"]["name"] = name
        await kube.create(kinds.SERVICES, service, namespace)

    async with controller(config, namespace, lease) as running:
        for name in ("chat", "chat-b"):
            await eventually(
                functools.partial(with_finalizer, kube, kinds.SERVICES, name, namespace),
                what=f"aimd's finalizer on aimsvc/{name}",
            )
        tcs = await eventually(
            lambda: _listed_with_finalizer(kube, kinds.TEMPLATE_CACHES, namespace),
            what="a template cache with aimd's finalizer",
        )
        (tc_name,) = [tc["metadata"]["name"] for tc in tcs]

        code, out, err = await aimd(config, "uninstall", "-n", namespace, *lease_flags)
        assert code == 1, out + err
        assert "aimd is running" in err
        assert f"Lease {namespace}/{lease} is held" in err
        assert await with_finalizer(kube, kinds.SERVICES, "chat", namespace)

        running.send_signal(signal.SIGTERM)  # what the kubelet does when the controller stops
        assert await asyncio.wait_for(running.wait(), 60) is not None

    chat_b = await kube.get(kinds.SERVICES, "chat-b", namespace)
    await kube.patch(
        kinds.SERVICES,
        "chat-b",
        {
            "metadata": {
                "resourceVersion": chat_b["metadata"]["resourceVersion"],
                "finalizers": [*finalizers(chat_b), OTHER],
            }
        },
        namespace,
    )

    code, out, err = await aimd(config, "uninstall", "-n", namespace, "--dry-run", *lease_flags)
    assert code == 0, out + err
    assert f"aimsvc {namespace}/chat: would remove {kinds.FINALIZER}" in out
    assert await with_finalizer(kube, kinds.SERVICES, "chat", namespace), (
        "a dry run changes nothing"
    )

    code, out, err = await aimd(config, "uninstall", "-n", namespace, *lease_flags)
    assert code == 0, out + err
    assert "Removed aimd's finalizer from 2 AIMServices and 1 AIMTemplateCache." in out
    assert f"What is left in namespace {namespace}" in out
    assert finalizers(await kube.get(kinds.SERVICES, "chat", namespace)) == []
    assert finalizers(await kube.get(kinds.SERVICES, "chat-b", namespace)) == [OTHER]
    assert finalizers(await kube.get(kinds.TEMPLATE_CACHES, tc_name, namespace)) == []

    # With aimd gone, deleting a service, a template cache and the namespace completes.
    await kube.delete(kinds.SERVICES, "chat", namespace)
    await kube.delete(kinds.TEMPLATE_CACHES, tc_name, namespace)
    await eventually(lambda: gone(kube, kinds.SERVICES, "chat", namespace), what="aimsvc/chat gone")
    await eventually(
        lambda: gone(kube, kinds.TEMPLATE_CACHES, tc_name, namespace), what="the TC gone"
    )
    chat_b = await kube.get(kinds.SERVICES, "chat-b", namespace)
    await kube.patch(  # the other party lets its object go
        kinds.SERVICES,
        "chat-b",
        {"metadata": {"resourceVersion": chat_b["metadata"]["resourceVersion"], "finalizers": []}},
        namespace,
    )
    await kube.delete(NAMESPACES, namespace)
    await eventually(
        lambda: gone(kube, NAMESPACES, namespace, None), timeout=120, what="the namespace gone"
    )


async def _listed_with_finalizer(
    kube: KubeClient, resource: Resource, namespace: str
) -> list[Object] | None:
    items = (await kube.list(resource, namespace))["items"]
    return [o for o in items if kinds.FINALIZER in finalizers(o)] or None


def cache_body(resource: Resource, name: str, spec: Object) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": resource.kind,
        "metadata": {"name": name, "finalizers": [kinds.FINALIZER]}
        if resource is kinds.TEMPLATE_CACHES
        else {"name": name},
        "spec": spec,
    }


async def test_delete_caches_keeps_the_available_ones_when_asked(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    for resource, name, status, spec in (
        (kinds.MODEL_CACHES, "kept", "Available", {"sourceUri": "hf://org/kept"}),
        (kinds.MODEL_CACHES, "unfinished", "Progressing", {"sourceUri": "hf://org/unfinished"}),
        (kinds.TEMPLATE_CACHES, "kept-tc", "Available", {"templateName": "t"}),
        (kinds.TEMPLATE_CACHES, "unfinished-tc", "Pending", {"templateName": "t"}),
    ):
        await kube.create(resource, cache_body(resource, name, spec), namespace)
        await kube.patch(
            resource, name, {"status": {"status": status}}, namespace, subresource="status"
        )

    code, out, err = await aimd(
        control_plane.kubeconfig,
        "uninstall",
        "-n",
        namespace,
        "--delete-caches",
        "--keep-available",
        "--leader-election-namespace",
        namespace,
    )
    assert code == 0, out + err
    assert f"No Lease aimd-leader in {namespace}" in out
    assert f"aimmc {namespace}/kept: Available, kept" in out
    assert f"aimmc {namespace}/unfinished: deleted" in out
    assert "1 AIMModelCache, 1 Available" in out
    await eventually(
        lambda: gone(kube, kinds.MODEL_CACHES, "unfinished", namespace), what="unfinished MC gone"
    )
    await eventually(
        lambda: gone(kube, kinds.TEMPLATE_CACHES, "unfinished-tc", namespace),
        what="unfinished TC gone",
    )
    assert (await kube.get(kinds.MODEL_CACHES, "kept", namespace))["status"]["status"]
    assert finalizers(await kube.get(kinds.TEMPLATE_CACHES, "kept-tc", namespace)) == []


def lease_body(name: str, holder: str, renewed: datetime, duration: int) -> Object:
    stamp = renewed.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    return {
        "apiVersion": "coordination.k8s.io/v1",
        "kind": "Lease",
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "acquireTime": stamp,
            "renewTime": stamp,
        },
    }


async def test_a_held_lease_needs_force_and_a_stale_one_does_not(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    tc = cache_body(kinds.TEMPLATE_CACHES, "tc", {"templateName": "t"})
    await kube.create(kinds.TEMPLATE_CACHES, tc, namespace)
    now = datetime.now(UTC)
    await kube.create(LEASES, lease_body("fresh", "aimd-0_abc", now, 3600), namespace)
    await kube.create(
        LEASES, lease_body("stale", "aimd-1_def", now - timedelta(hours=1), 2), namespace
    )
    base = (control_plane.kubeconfig, "uninstall", "-n", namespace)
    flags = ("--leader-election-namespace", namespace, "--leader-election-id")

    code, _, err = await aimd(*base, *flags, "fresh")
    assert code == 1
    assert "held by aimd-0_abc" in err
    assert await with_finalizer(kube, kinds.TEMPLATE_CACHES, "tc", namespace)

    code, out, err = await aimd(*base, *flags, "stale", "--dry-run")
    assert code == 0, out + err
    assert "watching it for 2s" in out
    assert "aimd is running" not in out

    code, out, err = await aimd(*base, *flags, "fresh", "--force")
    assert code == 0, out + err
    assert "going on because of --force" in out
    assert finalizers(await kube.get(kinds.TEMPLATE_CACHES, "tc", namespace)) == []


async def test_delete_crds_completes_with_aimds_finalizer_on_objects() -> None:
    """On a control plane of its own, since it deletes the CRDs every other test uses."""
    workdir = Path(tempfile.mkdtemp(prefix="aimd-uninstall-"))
    plane = ControlPlane(binaries=build_binaries(), workdir=workdir)
    plane.start(crds=all_crds())
    try:
        async with await KubeClient.from_kubeconfig(str(plane.kubeconfig)) as kube:
            namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ml"}}
            await kube.create(NAMESPACES, namespace)
            tc = cache_body(kinds.TEMPLATE_CACHES, "tc", {"templateName": "t"})
            await kube.create(kinds.TEMPLATE_CACHES, tc, "ml")
            service = sample("aimservice")
            service["metadata"]["finalizers"] = [kinds.FINALIZER]
            await kube.create(kinds.SERVICES, service, "ml")

            code, out, err = await aimd(plane.kubeconfig, "uninstall", "--delete-crds")
            assert code == 0, out + err
            assert "Nothing of aimd is left in the cluster." in out
            for crd in all_crds():
                assert await gone(kube, CUSTOM_RESOURCE_DEFINITIONS, crd["metadata"]["name"], None)
    finally:
        plane.stop()
        remove_workdir(workdir)
