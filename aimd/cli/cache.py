"""`aimd cache ls`, `aimd cache why NAME`, `aimd cache retry NAME`: the caches as a person asks
about them. The same commands are the kubectl plugin (`kubectl aimd ls`, :mod:`.kubectl`).

`ls` answers "what is cached here, how far along, and who uses it"; `why` answers "what is this
model cache waiting for"; `retry` makes a Failed cache try again now (after fixing the Secret its
credentials come from, say) instead of at its next retry time. `ls` and `why` read the API and
decide in pure functions, which is where the tests look.

They take kubectl's connection flags (:mod:`.target`) and ``-o wide|json|yaml``. The table shows
sizes and percentages as people read them (``16.0GiB``, ``100%``): the controller's
``status.displaySize`` and ``status.displayPercentage`` when it wrote them, else computed here
from the byte counts. JSON and YAML carry both the display strings and the numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

import yaml

from aimd.api import kinds
from aimd.api.meta import micro_time, parse_time
from aimd.api.quantity import display_size
from aimd.api.types import Object
from aimd.cli.target import Target, add_connection_flags, resolve, run_reporting
from aimd.kube.errors import NotFound
from aimd.kube.resources import JOBS, PERSISTENT_VOLUME_CLAIMS

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient


OUTPUTS = ("wide", "json", "yaml")


def human_bytes(count: int | None) -> str:
    return "-" if count is None else display_size(count)


def human_age(created: str | None, now: datetime) -> str:
    """How long ago ``created`` was, in kubectl's AGE style: ``45s``, ``12m``, ``5h``, ``3d``."""
    moment = parse_time(created)
    if moment is None:
        return "-"
    seconds = int((now - moment).total_seconds())
    for unit, size, up_to in (("s", 1, 120), ("m", 60, 120), ("h", 3600, 48), ("d", 86400, 730)):
        if seconds < size * up_to:
            return f"{max(0, seconds) // size}{unit}"
    return f"{seconds // (365 * 86400)}y"


@dataclass(frozen=True)
class CacheRow:
    """One line of `aimd cache ls`: the display strings, and the numbers behind them."""

    name: str
    status: str
    source: str
    size: str
    progress: str
    consumers: tuple[str, ...]
    namespace: str = ""
    size_bytes: int | None = None
    percentage: int | None = None
    pvc: str | None = None
    job: str | None = None
    failures: int = 0
    created: str | None = None


def _namespace(obj: Object) -> str:
    return str(obj["metadata"].get("namespace") or "")


def consumers_of(
    model_cache: Object, template_caches: Iterable[Object], services: Iterable[Object]
) -> list[str]:
    """Who uses a model cache: the template caches of its namespace that list it, and the
    services on those."""
    name, namespace = model_cache["metadata"]["name"], _namespace(model_cache)
    users: list[str] = []
    using_tcs = set()
    for tc in template_caches:
        if _namespace(tc) != namespace:
            continue
        entries = (tc.get("status") or {}).get("modelCaches") or []
        if any(entry.get("name") == name for entry in entries):
            using_tcs.add(tc["metadata"]["name"])
            users.append(f"aimtc/{tc['metadata']['name']}")
    for svc in services:
        if _namespace(svc) != namespace:
            continue
        ref = ((svc.get("status") or {}).get("cache") or {}).get("templateCacheRef") or {}
        if ref.get("name") in using_tcs:
            users.append(f"aimsvc/{svc['metadata']['name']}")
    return users


def cache_rows(
    model_caches: Iterable[Object], template_caches: list[Object], services: list[Object]
) -> list[CacheRow]:
    rows = []
    for mc in sorted(model_caches, key=lambda o: (_namespace(o), str(o["metadata"]["name"]))):
        status = mc.get("status") or {}
        progress = status.get("progress") or {}
        percentage = progress.get("percentage")
        size_bytes = status.get("sizeBytes") or progress.get("totalBytes")
        rows.append(
            CacheRow(
                name=mc["metadata"]["name"],
                status=status.get("status", "Pending"),
                source=mc["spec"]["sourceUri"],
                size=status.get("displaySize") or human_bytes(size_bytes),
                progress=status.get("displayPercentage")
                or ("-" if percentage is None else f"{percentage}%"),
                consumers=tuple(consumers_of(mc, template_caches, services)),
                namespace=_namespace(mc),
                size_bytes=size_bytes,
                percentage=percentage,
                pvc=status.get("persistentVolumeClaim"),
                job=status.get("job"),
                failures=int(status.get("failures") or 0),
                created=mc["metadata"].get("creationTimestamp"),
            )
        )
    return rows


def table(lines: Sequence[Sequence[str]]) -> str:
    """Columns padded to their widest cell, three spaces apart; the last one is not padded."""
    widths = [max(len(line[i]) for line in lines) for i in range(len(lines[0]) - 1)]
    return "\n".join(
        "   ".join(
            [*(cell.ljust(width) for cell, width in zip(line, widths, strict=False)), line[-1]]
        )
        for line in lines
    )


def format_table(
    rows: list[CacheRow],
    *,
    wide: bool = False,
    namespaces: bool = False,
    now: datetime | None = None,
) -> str:
    """The `ls` table; ``wide`` adds the PVC, the Job, the failures and the age (as ``kubectl
    get -o wide`` adds columns), ``namespaces`` a first NAMESPACE column (as ``-A`` does)."""
    now = now or datetime.now(UTC)
    header = ["NAME", "STATUS", "SOURCE", "SIZE", "PROGRESS"]
    if wide:
        header += ["PVC", "JOB", "FAILURES", "AGE"]
    header.append("USED BY")
    if namespaces:
        header.insert(0, "NAMESPACE")
    lines = [header]
    for r in rows:
        line = [r.name, r.status, r.source, r.size, r.progress]
        if wide:
            line += [r.pvc or "-", r.job or "-", str(r.failures), human_age(r.created, now)]
        line.append(",".join(r.consumers) or "-")
        if namespaces:
            line.insert(0, r.namespace)
        lines.append(line)
    return table(lines)


def row_data(row: CacheRow) -> Object:
    """One `ls` row for ``-o json|yaml``: what the table shows, with the numbers behind it."""
    return {
        "namespace": row.namespace,
        "name": row.name,
        "status": row.status,
        "sourceUri": row.source,
        "displaySize": row.size,
        "sizeBytes": row.size_bytes,
        "displayPercentage": row.progress,
        "percentage": row.percentage,
        "persistentVolumeClaim": row.pvc,
        "job": row.job,
        "failures": row.failures,
        "creationTimestamp": row.created,
        "usedBy": list(row.consumers),
    }


def dump(data: Any, output: str) -> str:
    if output == "json":
        return json.dumps(data, indent=2)
    return yaml.safe_dump(data, sort_keys=False, width=100).rstrip("\n")


def show_ls(rows: list[CacheRow], output: str | None, namespaces: bool) -> str:
    """What `ls` prints: the table (``wide`` or not), or the rows as JSON or YAML."""
    if output in ("json", "yaml"):
        return dump({"items": [row_data(r) for r in rows]}, output)
    return format_table(rows, wide=output == "wide", namespaces=namespaces)


def show_why(model_cache: Object, reasons: list[str], output: str | None) -> str:
    if output in ("json", "yaml"):
        data = {
            "namespace": _namespace(model_cache),
            "name": model_cache["metadata"]["name"],
            "status": (model_cache.get("status") or {}).get("status", "Pending"),
            "waitingFor": reasons,
        }
        return dump(data, output)
    return "\n".join(f"- {line}" for line in reasons)


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
        due = parse_time(retry)
        if due is not None:
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
    client: KubeClient, namespace: str | None
) -> tuple[list[Object], list[Object], list[Object]]:
    mcs, tcs, svcs = await asyncio.gather(
        client.list(kinds.MODEL_CACHES, namespace),
        client.list(kinds.TEMPLATE_CACHES, namespace),
        client.list(kinds.SERVICES, namespace),
    )
    return mcs["items"], tcs["items"], svcs["items"]


async def _request_retry(client: KubeClient, namespace: str, name: str) -> Object:
    """Sets the retry annotation to a new value; the controller retries a Failed cache at once."""
    patch = {"metadata": {"annotations": {kinds.ANNOTATION_RETRY: micro_time()}}}
    mc: Object = await client.patch(kinds.MODEL_CACHES, name, patch, namespace)
    return mc


async def _fetch_one(
    client: KubeClient, namespace: str, name: str
) -> tuple[Object, Object | None, Object | None]:
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


def add_output_flag(parser: argparse.ArgumentParser, *, suppress: bool = False) -> None:
    parser.add_argument(
        "-o",
        "--output",
        choices=OUTPUTS,
        default=argparse.SUPPRESS if suppress else None,
        help="wide: more columns; json, yaml: for programs (default: a table)",
    )


def configure(parser: argparse.ArgumentParser) -> None:
    """The actions and their flags; the flags go before or after the action, as in kubectl."""
    add_connection_flags(parser)
    add_output_flag(parser)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    for action, help_text in (
        ("ls", "list model caches: status, size, progress, who uses them"),
        ("why", "say what a model cache that is not Available waits for"),
        ("retry", "make a Failed model cache retry its download now"),
    ):
        sub = actions.add_parser(action, help=help_text, description=help_text)
        add_connection_flags(sub, suppress=True)
        add_output_flag(sub, suppress=True)
        if action != "ls":
            sub.add_argument("name", help="the AIMModelCache's name")
        sub.set_defaults(prog=sub.prog)


async def _run(args: argparse.Namespace, target: Target) -> int:
    async with await target.client() as client:
        if args.action == "ls":
            mcs, tcs, svcs = await _fetch(client, target.namespace)
            rows = cache_rows(mcs, tcs, svcs)
            if not rows and args.output in (None, "wide"):
                where = f"{target.namespace} namespace" if target.namespace else "any namespace"
                print(f"No model caches found in {where}.", file=sys.stderr)
                return 0
            print(show_ls(rows, args.output, namespaces=target.namespace is None))
            return 0
        assert target.namespace is not None  # main refused -A for a name
        if args.action == "retry":
            mc = await _request_retry(client, target.namespace, args.name)
            if args.output in ("json", "yaml"):
                mc["metadata"].pop("managedFields", None)
                print(dump(mc, args.output))
                return 0
            state = (mc.get("status") or {}).get("status", "Pending")
            if state != "Failed":
                print(f"{args.name} is {state}, not Failed: there is nothing to retry")
            else:
                print(f"{args.name} retries now")
            return 0
        mc, pvc, job = await _fetch_one(client, target.namespace, args.name)
    print(show_why(mc, explain(mc, pvc, job, datetime.now(UTC)), args.output))
    return 0


def main(args: argparse.Namespace) -> int:
    prog = getattr(args, "prog", f"aimd cache {args.action}")
    if args.all_namespaces and args.action != "ls":
        print(f"{prog}: a model cache lives in one namespace: use -n, not -A", file=sys.stderr)
        return 2
    return run_reporting(prog, _run(args, resolve(args)))
