"""Convergence benchmark: N AIMServices over T templates sharing U source URIs.

Run with ``python -m tests.bench.bench_converge`` (full: 1,000 services, 100 templates, 50 URIs)
or ``--small`` (100 / 10 / 5); ``--services/--templates/--uris`` set any other size.
Not a test (pytest does not collect ``bench_*.py``); it prints a
table and asserts nothing.

Against a fresh test control plane, aimd runs as its own process (``aimd run``) so its writes
(``rest_client_requests_total`` on its /metrics) and its peak RSS (``VmHWM``) are its own. The
benchmark plays the kubelet: it binds PVCs, completes Jobs and marks Deployments ready as soon as
they appear. It reports the time from "all inputs created" to "every service Running", aimd's
writes against the minimum the rules need, the writes during an idle period afterwards (target 0),
and peak RSS. The floor is a plain script that makes exactly the minimum writes, as fast as the API
server allows (same concurrency, same kubelet), in another namespace of the same control plane.

The minimum, per object: template status 1; service finalizer 1, status 2 (Starting, Running),
Deployment + Service creates 2; template cache create 1, finalizer 1, status 1; model cache create
1, status 2 (Progressing, Available), PVC + Job + ServiceAccount + Role + RoleBinding creates 5.
Events are for people and counted apart.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aimd.api.crds import all_crds
from aimd.caching import builders, kinds, names
from aimd.dev.controlplane import ControlPlane, build_binaries, free_port
from aimd.dev.kubelet import completed_status, job_finished
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError
from aimd.kube.resources import (
    DEPLOYMENTS,
    EVENTS,
    JOBS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    SERVICES,
)

Object = dict[str, Any]
WRITES = ("POST", "PATCH", "PUT", "DELETE")


@dataclass(frozen=True)
class Size:
    services: int
    templates: int
    uris: int

    def minimum_writes(self) -> int:
        return (
            self.templates
            + self.services * (1 + 2 + 2)
            + self.templates * (1 + 1 + 1)
            + self.uris * (1 + 2 + 5)
        )


def uri(i: int) -> str:
    return f"hf://bench/model-{i}"


def template(i: int, size: Size) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICE_TEMPLATES.kind,
        "metadata": {"name": f"tpl-{i}"},
        "spec": {
            "image": "example.com/vllm:1",
            "modelSources": [
                {
                    "modelId": f"bench/model-{i % size.uris}",
                    "sourceUri": uri(i % size.uris),
                    "size": "1Gi",
                }
            ],
        },
    }


def service(j: int, size: Size) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICES.kind,
        "metadata": {"name": f"svc-{j}"},
        "spec": {"templateName": f"tpl-{j % size.templates}", "cacheModel": True},
    }


async def gather_limited(coros: list[Any], limit: int = 32) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(coro: Any) -> Any:
        async with semaphore:
            return await coro

    return await asyncio.gather(*(one(c) for c in coros))


def patch_status(kube: KubeClient, resource: Any, obj: Object, status: Object) -> Any:
    meta = obj["metadata"]
    return kube.patch(
        resource, meta["name"], {"status": status}, meta["namespace"], subresource="status"
    )


async def play_kubelet(kube: KubeClient, namespace: str, stop: asyncio.Event) -> None:
    """Binds PVCs, completes Jobs and readies Deployments as soon as they appear."""
    while not stop.is_set():
        work = []
        for claim in (await kube.list(PERSISTENT_VOLUME_CLAIMS, namespace))["items"]:
            if (claim.get("status") or {}).get("phase") != "Bound":
                status = {
                    "phase": "Bound",
                    "accessModes": claim["spec"]["accessModes"],
                    "capacity": claim["spec"]["resources"]["requests"],
                }
                work.append(patch_status(kube, PERSISTENT_VOLUME_CLAIMS, claim, status))
        for job in (await kube.list(JOBS, namespace))["items"]:
            if not job_finished(job):
                status = completed_status(time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()))
                work.append(patch_status(kube, JOBS, job, status))
        for deployment in (await kube.list(DEPLOYMENTS, namespace))["items"]:
            if not (deployment.get("status") or {}).get("readyReplicas"):
                status = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1}
                work.append(patch_status(kube, DEPLOYMENTS, deployment, status))
        results = await gather_limited(work)
        del results
        await asyncio.sleep(0.5)


async def running_count(kube: KubeClient, namespace: str) -> int:
    items = (await kube.list(kinds.SERVICES, namespace))["items"]
    return sum(1 for s in items if (s.get("status") or {}).get("status") == "Running")


def scrape_writes(port: int, codes: tuple[str, ...] = ()) -> int:
    """aimd's write requests so far (only those answered with one of ``codes``, if given)."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    total = 0.0
    for line in text.splitlines():
        match = re.match(r"^rest_client_requests_total\{([^}]*)\} ([0-9.e+]+)$", line)
        if not match or not any(f'method="{m}"' in match.group(1) for m in WRITES):
            continue
        if not codes or any(f'code="{c}"' in match.group(1) for c in codes):
            total += float(match.group(2))
    return int(total)


def peak_rss(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return 0


async def create_inputs(kube: KubeClient, namespace: str, size: Size) -> None:
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}
    )
    await gather_limited(
        [
            kube.create(kinds.SERVICE_TEMPLATES, template(i, size), namespace)
            for i in range(size.templates)
        ]
    )
    await gather_limited(
        [kube.create(kinds.SERVICES, service(j, size), namespace) for j in range(size.services)]
    )


async def run_aimd(
    plane: ControlPlane, kube: KubeClient, size: Size, idle: float
) -> dict[str, float]:
    port = free_port()
    process = subprocess.Popen(  # noqa: ASYNC220 (a plain child, waited for synchronously)
        [
            sys.executable,
            "-m",
            "aimd",
            "run",
            f"--kubeconfig={plane.kubeconfig}",
            f"--metrics-bind-address=127.0.0.1:{port}",
            "--metrics-secure=false",
            "--health-probe-bind-address=0",
            "--image=example.com/aimd:bench",
            "--log-level=warning",
        ],
        stdout=subprocess.DEVNULL,
    )
    try:
        namespace = "bench-aimd"
        stop = asyncio.Event()
        await asyncio.sleep(2)
        await create_inputs(kube, namespace, size)
        started = time.monotonic()
        kubelet = asyncio.create_task(play_kubelet(kube, namespace, stop))
        while await running_count(kube, namespace) < size.services:  # noqa: ASYNC110 (polling)
            await asyncio.sleep(0.5)
        elapsed = time.monotonic() - started
        stop.set()
        await kubelet
        await asyncio.sleep(3)
        writes = scrape_writes(port)
        refused = scrape_writes(port, ("409", "404", "422"))
        events = [
            e
            for e in (await kube.list(EVENTS, namespace))["items"]
            if e.get("reportingController") == "aimd"
        ]
        await asyncio.sleep(idle)
        idle_writes = scrape_writes(port) - writes
        await delete_namespace(kube, namespace)  # while aimd runs: its finalizers must go
        return {
            "seconds": elapsed,
            "writes": writes,
            "events": len(events),
            "idle_writes": idle_writes,
            "refused": refused,
            "rss": peak_rss(process.pid),
        }
    finally:
        process.terminate()
        process.wait(30)


async def run_floor(kube: KubeClient, size: Size) -> dict[str, float]:
    """The minimum writes, made directly, each as soon as what it depends on exists."""
    namespace = "bench-floor"
    await create_inputs(kube, namespace, size)
    stop = asyncio.Event()
    started = time.monotonic()
    kubelet = asyncio.create_task(play_kubelet(kube, namespace, stop))
    writes = 0

    async def write(coro: Any) -> Any:
        nonlocal writes
        writes += 1
        return await coro

    def status(resource: Any, name: str, body: Object) -> Any:
        return write(kube.patch(resource, name, {"status": body}, namespace, subresource="status"))

    def finalizer(resource: Any, name: str) -> Any:
        return write(
            kube.patch(resource, name, {"metadata": {"finalizers": [kinds.FINALIZER]}}, namespace)
        )

    templates = [
        await kube.get(kinds.SERVICE_TEMPLATES, f"tpl-{i}", namespace)
        for i in range(size.templates)
    ]
    first = [
        status(kinds.SERVICE_TEMPLATES, t["metadata"]["name"], {"status": "Available"})
        for t in templates
    ]
    first += [finalizer(kinds.SERVICES, f"svc-{j}") for j in range(size.services)]
    first += [
        status(kinds.SERVICES, f"svc-{j}", {"status": "Starting"}) for j in range(size.services)
    ]
    await gather_limited(first)
    tcs = await gather_limited(
        [
            write(
                kube.create(
                    kinds.TEMPLATE_CACHES,
                    builders.template_cache(namespace, t, "Namespace", "svc"),
                    namespace,
                )
            )
            for t in templates
        ]
    )
    await gather_limited([finalizer(kinds.TEMPLATE_CACHES, tc["metadata"]["name"]) for tc in tcs])
    mcs = await gather_limited(
        [
            write(
                kube.create(
                    kinds.MODEL_CACHES,
                    builders.model_cache(namespace, uri(u), f"bench/model-{u}", "1Gi", "tc"),
                    namespace,
                )
            )
            for u in range(size.uris)
        ]
    )
    children = []
    for mc in mcs:
        job = names.download_job_name(mc["metadata"]["name"], "00000", 0)
        children += [
            (SERVICE_ACCOUNTS, builders.service_account(mc)),
            (ROLES, builders.role(mc)),
            (ROLE_BINDINGS, builders.role_binding(mc)),
            (PERSISTENT_VOLUME_CLAIMS, builders.persistent_volume_claim(mc, 1024**3)),
            (JOBS, builders.download_job(mc, job, names.pvc_name(mc["metadata"]["name"]), "img")),
        ]
    await gather_limited([write(kube.create(r, b, namespace)) for r, b in children])
    await gather_limited(
        [
            status(kinds.MODEL_CACHES, mc["metadata"]["name"], {"status": "Progressing"})
            for mc in mcs
        ]
    )
    while True:
        jobs = (await kube.list(JOBS, namespace))["items"]
        if all(job_finished(j) for j in jobs):
            break
        await asyncio.sleep(0.2)
    await gather_limited(
        [status(kinds.MODEL_CACHES, mc["metadata"]["name"], {"status": "Available"}) for mc in mcs]
    )
    await gather_limited(
        [
            status(kinds.TEMPLATE_CACHES, tc["metadata"]["name"], {"status": "Available"})
            for tc in tcs
        ]
    )
    by_name = {t["metadata"]["name"]: t for t in templates}
    workload = []
    for j in range(size.services):
        svc = await kube.get(kinds.SERVICES, f"svc-{j}", namespace)
        tpl = by_name[svc["spec"]["templateName"]]
        workload += [
            (DEPLOYMENTS, builders.deployment(svc, tpl, [("bench/m", "pvc")])),
            (SERVICES, builders.service(svc, tpl)),
        ]
    await gather_limited([write(kube.create(r, b, namespace)) for r, b in workload])
    while True:
        deployments = (await kube.list(DEPLOYMENTS, namespace))["items"]
        if (
            sum(1 for d in deployments if (d.get("status") or {}).get("readyReplicas"))
            == size.services
        ):
            break
        await asyncio.sleep(0.2)
    await gather_limited(
        [status(kinds.SERVICES, f"svc-{j}", {"status": "Running"}) for j in range(size.services)]
    )
    elapsed = time.monotonic() - started
    stop.set()
    await kubelet
    return {"seconds": elapsed, "writes": writes}


async def delete_namespace(kube: KubeClient, namespace: str) -> None:
    """Deletes aimd's namespace and waits until it is gone, so the floor runs on an API server
    with nothing else to do."""
    await kube.delete(NAMESPACES, namespace)
    while True:
        try:
            await kube.get(NAMESPACES, namespace)
        except ApiError:
            return
        await asyncio.sleep(1)


async def main_async(size: Size, idle: float) -> None:
    workdir = Path(tempfile.mkdtemp(prefix="aimd-bench-"))
    plane = ControlPlane(binaries=build_binaries(), workdir=workdir)
    plane.start(crds=all_crds())
    try:
        kube = await KubeClient.from_kubeconfig(str(plane.kubeconfig))
        try:
            ours = await run_aimd(plane, kube, size, idle)
            floor = await run_floor(kube, size)
        finally:
            await kube.close()
    except ApiError:
        raise
    finally:
        plane.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    minimum = size.minimum_writes()
    print(f"\n{size.services} services, {size.templates} templates, {size.uris} URIs")
    print(f"{'':28}{'aimd':>12}{'floor':>12}")
    print(
        f"{'seconds to all Running':28}{ours['seconds']:>12.1f}{floor['seconds']:>12.1f}"
        f"   ratio {ours['seconds'] / floor['seconds']:.2f}"
    )
    writes = ours["writes"] - ours["events"]
    print(
        f"{'writes (without Events)':28}{writes:>12.0f}{floor['writes']:>12.0f}"
        f"   minimum {minimum}, ratio {writes / minimum:.2f}"
    )
    print(f"{'  of which refused (409/404)':28}{ours['refused']:>12.0f}")
    print(f"{'Events written':28}{ours['events']:>12.0f}")
    print(f"{'writes while idle':28}{ours['idle_writes']:>12.0f}   over {idle:.0f} s")
    print(f"{'peak RSS (MiB)':28}{ours['rss'] / 2**20:>12.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--small", action="store_true", help="100 services, 10 templates, 5 URIs")
    parser.add_argument("--services", type=int, default=1000)
    parser.add_argument("--templates", type=int, default=100)
    parser.add_argument("--uris", type=int, default=50)
    parser.add_argument("--idle", type=float, default=None, help="idle seconds (300; 20 small)")
    args = parser.parse_args()
    size = Size(100, 10, 5) if args.small else Size(args.services, args.templates, args.uris)
    idle = args.idle if args.idle is not None else (20.0 if args.small else 300.0)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    asyncio.run(main_async(size, idle))


if __name__ == "__main__":
    main()
