"""`aimd cache ls`, `aimd cache why NAME`, `aimd cache retry NAME`: the caches as a person asks
about them.

`ls` answers "what is cached here, how far along, and who uses it"; `why` answers "what is this
model cache waiting for"; `retry` makes a Failed cache try again now (after fixing the Secret its
credentials come from, say) instead of at its next retry time. `ls` and `why` read the API and
decide in pure functions, which is where the tests look.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from aimd.api import kinds
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS

Object = dict[str, Any]


def human_bytes(count: int | None) -> str:
    if count is None:
        return "-"
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if size < 1024 or unit == "TiB":
            return f"{size:.0f}{unit}" if unit == "B" else f"{size:.1f}{unit}"
        size /= 1024
    raise AssertionError("unreachable")


@dataclass(frozen=True)
class CacheRow:
    """One line of `aimd cache ls`."""

    name: str
    status: str
    source: str
    size: str
    progress: str
    consumers: tuple[str, ...]


def consumers_of(
    model_cache: Object, template_caches: Iterable[Object], services: Iterable[Object]
) -> list[str]:
    """Who uses a model cache: the template caches that list it, and the services on those."""
    name = model_cache["metadata"]["name"]
    users: list[str] = []
    using_tcs = set()
    for tc in template_caches:
        entries = (tc.get("status") or {}).get("modelCaches") or []
        if any(entry.get("name") == name for entry in entries):
            using_tcs.add(tc["metadata"]["name"])
            users.append(f"aimtc/{tc['metadata']['name']}")
    for svc in services:
        ref = ((svc.get("status") or {}).get("cache") or {}).get("templateCacheRef") or {}
        if ref.get("name") in using_tcs:
            users.append(f"aimsvc/{svc['metadata']['name']}")
    return users


def cache_rows(
    model_caches: Iterable[Object], template_caches: list[Object], services: list[Object]
) -> list[CacheRow]:
    rows = []
    for mc in sorted(model_caches, key=lambda o: str(o["metadata"]["name"])):
        status = mc.get("status") or {}
        progress = status.get("progress") or {}
        percentage = progress.get("percentage")
        rows.append(
            CacheRow(
                name=mc["metadata"]["name"],
                status=status.get("status", "Pending"),
                source=mc["spec"]["sourceUri"],
                size=human_bytes(status.get("sizeBytes") or progress.get("totalBytes")),
                progress="-" if percentage is None else f"{percentage}%",
                consumers=tuple(consumers_of(mc, template_caches, services)),
            )
        )
    return rows


def format_table(rows: list[CacheRow]) -> str:
    header = ("NAME", "STATUS", "SOURCE", "SIZE", "PROGRESS", "USED BY")
    lines = [header] + [
        (r.name, r.status, r.source, r.size, r.progress, ",".join(r.consumers) or "-") for r in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header) - 1)]
    return "\n".join(
        "   ".join(
            [*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]
        )
        for line in lines
    )


def _condition(obj: Object | None, type_: str) -> Object | None:
    conditions = ((obj or {}).get("status") or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)


def explain(
    model_cache: Object, pvc: Object | None, job: Object | None, now: datetime
) -> list[str]:
    """What a model cache is waiting for, most important first, in words a person can act on."""
    status = model_cache.get("status") or {}
    state = status.get("status", "Pending")
    name = model_cache["metadata"]["name"]
    if model_cache["metadata"].get("deletionTimestamp"):
        return [f"{name} is being deleted; its PVC and Job go with it."]
    if state == "Available":
        return [f"{name} is Available: nothing to wait for."]
    reasons: list[str] = []
    ready = _condition(model_cache, "Ready")
    if state == "Failed":
        failure = status.get("lastDownloadFailure") or {}
        reason = failure.get("reason") or (ready or {}).get("reason") or "Unknown"
        message = failure.get("message") or (ready or {}).get("message") or ""
        reasons.append(f"the last download failed ({reason}): {message}".rstrip(": "))
        retry = status.get("nextRetryTime")
        if retry:
            due = datetime.fromisoformat(retry.replace("Z", "+00:00"))
            wait = max(0, int((due - now).total_seconds()))
            reasons.append(
                f"it retries at {retry} (in {wait}s), after {status.get('failures', 0)} failure(s)"
            )
    elif ready is not None and ready.get("status") != "True" and ready.get("message"):
        reasons.append(f"{ready.get('reason', 'NotReady')}: {ready['message']}")
    if pvc is None:
        reasons.append("its PersistentVolumeClaim does not exist yet")
    elif (pvc.get("status") or {}).get("phase") != "Bound":
        storage_class = pvc["spec"].get("storageClassName") or "the default storage class"
        phase = (pvc.get("status") or {}).get("phase", "Pending")
        reasons.append(
            f"PVC {pvc['metadata']['name']} is {phase}: waiting for a volume from {storage_class}"
        )
    if state != "Failed":
        if job is None:
            probe = status.get("probe") or {}
            if "sizeBytes" not in probe and not model_cache["spec"].get("size"):
                reasons.append("its size is unknown: a probe Job must measure the model first")
            else:
                reasons.append("no download Job is running yet")
        elif (job.get("status") or {}).get("active") or not job.get("status"):
            progress = status.get("progress") or {}
            done = human_bytes(progress.get("downloadedBytes"))
            total = human_bytes(progress.get("totalBytes"))
            reasons.append(
                f"Job {job['metadata']['name']} is downloading: "
                f"{done} of {total} ({progress.get('percentage', 0)}%)"
            )
        elif _condition(job, "Complete") and (pvc or {}).get("status", {}).get("phase") == "Bound":
            reasons.append(
                f"Job {job['metadata']['name']} completed: "
                "the cache becomes Available at its next reconcile"
            )
    return reasons or [f"{name} is {state}."]


async def _fetch(
    namespace: str, kubeconfig: str | None
) -> tuple[list[Object], list[Object], list[Object]]:
    from aimd.kube.client import KubeClient

    async with await KubeClient.auto(kubeconfig) as client:
        mcs, tcs, svcs = await asyncio.gather(
            client.list(kinds.MODEL_CACHES, namespace),
            client.list(kinds.TEMPLATE_CACHES, namespace),
            client.list(kinds.SERVICES, namespace),
        )
    return mcs["items"], tcs["items"], svcs["items"]


async def _request_retry(namespace: str, name: str, kubeconfig: str | None) -> Object:
    """Sets the retry annotation to a new value; the controller retries a Failed cache at once."""
    from aimd.kube.client import KubeClient

    stamp = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    patch = {"metadata": {"annotations": {kinds.ANNOTATION_RETRY: stamp}}}
    async with await KubeClient.auto(kubeconfig) as client:
        return await client.patch(kinds.MODEL_CACHES, name, patch, namespace)


async def _fetch_one(
    namespace: str, name: str, kubeconfig: str | None
) -> tuple[Object, Object | None, Object | None]:
    from aimd.kube.client import KubeClient
    from aimd.kube.errors import NotFound

    async with await KubeClient.auto(kubeconfig) as client:
        mc = await client.get(kinds.MODEL_CACHES, name, namespace)
        status = mc.get("status") or {}
        pvc = job = None
        if status.get("persistentVolumeClaim"):
            try:
                pvc = await client.get(
                    PERSISTENT_VOLUME_CLAIMS, status["persistentVolumeClaim"], namespace
                )
            except NotFound:
                pvc = None
        if status.get("job"):
            try:
                job = await client.get(JOBS, status["job"], namespace)
            except NotFound:
                job = None
    return mc, pvc, job


def configure(parser: argparse.ArgumentParser) -> None:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--kubeconfig", help="kubeconfig to use (default: in-cluster, $KUBECONFIG)")
    common.add_argument("-n", "--namespace", default="default", help="namespace (default: default)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    actions.add_parser(
        "ls", parents=[common], help="list model caches: status, size, progress, who uses them"
    )
    why = actions.add_parser(
        "why", parents=[common], help="say what a model cache that is not Available waits for"
    )
    why.add_argument("name", help="the AIMModelCache's name")
    retry = actions.add_parser(
        "retry", parents=[common], help="make a Failed model cache retry its download now"
    )
    retry.add_argument("name", help="the AIMModelCache's name")


def main(args: argparse.Namespace) -> int:
    from aimd.kube.errors import ApiError

    try:
        if args.action == "ls":
            mcs, tcs, svcs = asyncio.run(_fetch(args.namespace, args.kubeconfig))
            print(format_table(cache_rows(mcs, tcs, svcs)))
            return 0
        if args.action == "retry":
            mc = asyncio.run(_request_retry(args.namespace, args.name, args.kubeconfig))
            state = (mc.get("status") or {}).get("status", "Pending")
            if state != "Failed":
                print(f"{args.name} is {state}, not Failed: there is nothing to retry")
            else:
                print(f"{args.name} retries now")
            return 0
        mc, pvc, job = asyncio.run(_fetch_one(args.namespace, args.name, args.kubeconfig))
    except ApiError as error:
        print(f"aimd cache {args.action}: {error.message}", file=sys.stderr)
        return 1
    for line in explain(mc, pvc, job, datetime.now(UTC)):
        print(f"- {line}")
    return 0
