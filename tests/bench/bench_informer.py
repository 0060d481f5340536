"""Informer benchmark: events/s into an index, ours vs kubernetes_asyncio's Watch, and memory.

Run with ``python -m tests.bench.bench_informer [--objects 10000] [--events 50000]``. Not a
test (pytest does not collect ``bench_*.py``) and it asserts nothing; it prints a table.

Both clients read the *same recorded watch stream* of AIMModelCache events (realistic objects,
``managedFields`` included, as the API server sends them) from a local HTTP server that plays
the recording in 64 KiB chunks, so both pay for HTTP, chunking, JSON decoding and storing into a
dict keyed by namespace/name. Ours goes through the real :class:`~aimd.runtime.informer.Informer`
(watch, decode, strip managedFields, index with a sourceUri secondary index, dispatch to a
handler); kubernetes_asyncio's goes through ``watch.Watch().stream(list_namespaced_custom_object)``
into a dict. Memory is resident-set growth per cached object after each client stored
``--objects`` objects, each measured in a fresh child process.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import subprocess
import sys
import time
import uuid
from typing import Any

import orjson
from aiohttp import web

from aimd.kube.client import KubeClient
from aimd.kube.resources import Resource
from aimd.runtime.informer import Informer
from tests.support import NoAuth

GROUP, VERSION, PLURAL = "aim.eai.amd.com", "v1alpha1", "aimmodelcaches"
MODEL_CACHES = Resource(GROUP, VERSION, PLURAL, "AIMModelCache", namespaced=True)
NAMESPACE = "bench"
PATH = f"/apis/{GROUP}/{VERSION}/namespaces/{NAMESPACE}/{PLURAL}"


def model_cache(i: int, rv: int, downloaded: int) -> dict[str, Any]:
    name = f"model-{i:05d}"
    stamp = "2026-11-28T12:00:00Z"
    total = 15_000_000_000
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "AIMModelCache",
        "metadata": {
            "name": name,
            "namespace": NAMESPACE,
            "uid": str(uuid.UUID(int=i)),
            "resourceVersion": str(rv),
            "generation": 1,
            "creationTimestamp": stamp,
            "labels": {
                "aim.eai.amd.com/created-by-template-cache": f"template-{i % 500:04d}",
                "app.kubernetes.io/managed-by": "aimd",
            },
            "finalizers": ["aim.eai.amd.com/cleanup"],
            "ownerReferences": [
                {
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "kind": "AIMTemplateCache",
                    "name": f"template-{i % 500:04d}",
                    "uid": str(uuid.UUID(int=10**9 + i % 500)),
                    "blockOwnerDeletion": True,
                }
            ],
            "managedFields": [
                {
                    "manager": "aimd",
                    "operation": "Update",
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "time": stamp,
                    "fieldsType": "FieldsV1",
                    "fieldsV1": {
                        "f:metadata": {
                            "f:finalizers": {".": {}, 'v:"aim.eai.amd.com/cleanup"': {}},
                            "f:labels": {
                                ".": {},
                                "f:aim.eai.amd.com/created-by-template-cache": {},
                                "f:app.kubernetes.io/managed-by": {},
                            },
                            "f:ownerReferences": {".": {}, f'k:{{"uid":"{i}"}}': {}},
                        },
                        "f:spec": {
                            ".": {},
                            "f:modelId": {},
                            "f:size": {},
                            "f:sourceUri": {},
                            "f:storageClassName": {},
                        },
                    },
                },
                {
                    "manager": "aimd",
                    "operation": "Update",
                    "apiVersion": f"{GROUP}/{VERSION}",
                    "time": stamp,
                    "fieldsType": "FieldsV1",
                    "subresource": "status",
                    "fieldsV1": {
                        "f:status": {
                            ".": {},
                            "f:conditions": {".": {}, 'k:{"type":"Ready"}': {}},
                            "f:observedGeneration": {},
                            "f:persistentVolumeClaim": {},
                            "f:progress": {".": {}, "f:downloadedBytes": {}, "f:totalBytes": {}},
                            "f:status": {},
                        }
                    },
                },
            ],
        },
        "spec": {
            "sourceUri": f"hf://org-{i % 97}/model-{i}@main",
            "modelId": f"org-{i % 97}/model-{i}",
            "size": "15Gi",
            "storageClassName": "fast-rwx",
            "env": [
                {
                    "name": "HF_TOKEN",
                    "valueFrom": {"secretKeyRef": {"name": "hf-token", "key": "token"}},
                }
            ],
        },
        "status": {
            "status": "Progressing" if downloaded < total else "Available",
            "observedGeneration": 1,
            "persistentVolumeClaim": f"{name}-data",
            "job": f"{name}-download",
            "progress": {
                "totalBytes": total,
                "downloadedBytes": downloaded,
                "percentage": downloaded * 100 // total,
            },
            "conditions": [
                {
                    "type": "Ready",
                    "status": "False" if downloaded < total else "True",
                    "reason": "Downloading" if downloaded < total else "Available",
                    "message": f"downloaded {downloaded} of {total} bytes",
                    "lastTransitionTime": stamp,
                    "observedGeneration": 1,
                }
            ],
        },
    }


def recording(objects: int, events: int) -> bytes:
    """``objects`` ADDED events, then MODIFIED progress updates up to ``events`` in total."""
    lines = []
    rv = 100
    for i in range(objects):
        rv += 1
        lines.append(orjson.dumps({"type": "ADDED", "object": model_cache(i, rv, 0)}))
    for n in range(events - objects):
        rv += 1
        i = n % objects
        downloaded = min(15_000_000_000, (n // objects + 1) * 1_000_000_000)
        lines.append(orjson.dumps({"type": "MODIFIED", "object": model_cache(i, rv, downloaded)}))
    return b"\n".join(lines) + b"\n"


class Player:
    """A server that answers the list with nothing and the first watch with the recording;
    later watches idle until :meth:`close`."""

    def __init__(self, runner: web.AppRunner, finished: asyncio.Event) -> None:
        self.runner = runner
        self.finished = finished
        self.url = f"http://127.0.0.1:{int(next(iter(runner.addresses))[1])}"

    async def close(self) -> None:
        self.finished.set()
        await self.runner.cleanup()


async def play(stream: bytes) -> Player:
    served = 0
    finished = asyncio.Event()

    async def handler(request: web.Request) -> web.StreamResponse:
        nonlocal served
        if request.query.get("watch") not in ("true", "1", "True"):
            empty = {"kind": "List", "items": [], "metadata": {"resourceVersion": "1"}}
            return web.json_response(empty)
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        served += 1
        if served == 1:
            for start in range(0, len(stream), 65536):
                await response.write(stream[start : start + 65536])
        await finished.wait()
        return response

    app = web.Application()
    app.router.add_get(PATH, handler)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return Player(runner, finished)


async def ours(stream: bytes, events: int) -> tuple[float, Informer]:
    player = await play(stream)
    client = KubeClient(NoAuth(player.url))
    informer = Informer(client, MODEL_CACHES, NAMESPACE)
    informer.add_index("sourceUri", lambda o: [o["spec"]["sourceUri"]])
    seen = 0
    done = asyncio.Event()

    def handler(event_type: str, old: Any, new: Any) -> None:
        nonlocal seen
        seen += 1
        if seen >= events:
            done.set()

    informer.add_handler(handler)
    started = time.perf_counter()
    task = asyncio.create_task(informer.run())
    await done.wait()
    elapsed = time.perf_counter() - started
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    await client.close()
    await player.close()
    return elapsed, informer


async def theirs(stream: bytes, events: int) -> tuple[float, dict[str, Any]]:
    from kubernetes_asyncio import client as k8s
    from kubernetes_asyncio import watch

    player = await play(stream)
    configuration = k8s.Configuration(host=player.url)
    index: dict[str, Any] = {}
    seen = 0
    async with k8s.ApiClient(configuration) as api_client:
        api = k8s.CustomObjectsApi(api_client)
        started = time.perf_counter()
        async with watch.Watch() as w:
            async for event in w.stream(
                api.list_namespaced_custom_object,
                GROUP,
                VERSION,
                NAMESPACE,
                PLURAL,
                resource_version="1",
            ):
                obj = event["object"]
                metadata = obj["metadata"]
                key = f"{metadata['namespace']}/{metadata['name']}"
                if event["type"] == "DELETED":
                    index.pop(key, None)
                else:
                    index[key] = obj
                seen += 1
                if seen >= events:
                    break
        elapsed = time.perf_counter() - started
    await player.close()
    return elapsed, index


def rss_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


async def memory_child(objects: int, which: str) -> None:
    stream = recording(objects, objects)
    gc.collect()
    before = rss_bytes()
    if which == "ours":
        _, informer = await ours(stream, objects)
        stored = len(informer.index)
    else:
        _, index = await theirs(stream, objects)
        stored = len(index)
    gc.collect()
    after = rss_bytes()  # the recording is still alive: its bytes are in both readings
    assert stored == objects
    assert len(stream) > 0
    print(json.dumps({"per_object": (after - before) / objects, "objects": objects}))


def measure_memory(objects: int, which: str) -> float:
    """Resident-set growth per object, in a fresh interpreter so nothing else is counted."""
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "tests.bench.bench_informer",
            "--memory-child",
            str(objects),
            "--client",
            which,
        ],
        check=True,
        capture_output=True,
        text=True,
    )
    per_object: float = json.loads(result.stdout.strip().splitlines()[-1])["per_object"]
    return per_object


async def main(objects: int, events: int, rounds: int) -> None:
    stream = recording(objects, events)
    print(
        f"recording: {events} events over {objects} AIMModelCache objects, "
        f"{len(stream) / 2**20:.1f} MiB ({len(stream) / events / 1024:.1f} KiB per event)"
    )
    our_times, their_times = [], []
    for _ in range(rounds):
        elapsed, _informer = await ours(stream, events)
        our_times.append(elapsed)
        their_times.append((await theirs(stream, events))[0])
    our_rate = events / min(our_times)
    their_rate = events / min(their_times)
    our_memory = measure_memory(objects, "ours") / 1024
    their_memory = measure_memory(objects, "theirs") / 1024
    print()
    print(f"{'client':<34}{'events/s':>12}{'KiB/object':>12}")
    print(f"{'aimd Informer (index + handler)':<34}{our_rate:>12,.0f}{our_memory:>12.2f}")
    print(f"{'kubernetes_asyncio Watch (dict)':<34}{their_rate:>12,.0f}{their_memory:>12.2f}")
    print(f"{'ratio':<34}{our_rate / their_rate:>11.1f}x{our_memory / their_memory:>11.2f}x")
    print(f"\nevents/s: best of {rounds} rounds; memory: RSS growth for {objects} cached objects")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objects", type=int, default=10_000)
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--client", choices=("ours", "theirs"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        asyncio.run(memory_child(args.memory_child, args.client or "ours"))
    else:
        asyncio.run(main(args.objects, args.events, args.rounds))
