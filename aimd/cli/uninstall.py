"""`aimd uninstall`: take aimd out of a cluster without leaving anything that cannot be deleted.

aimd puts its finalizer (``aim.eai.amd.com/cleanup``) on every AIMService and AIMTemplateCache, to
apply the seed's deletion rules when one is deleted. With aimd gone nobody removes it, so deleting
any of them, or their namespace, hangs. This command:

1. makes sure the controller is stopped: a running one would put the finalizer back at its next
   reconcile. The leader-election Lease tells (held and renewed: running); ``--stop-controller``
   scales the controller's Deployment to zero and waits for its pods to end and the Lease to be
   released; ``--force`` goes on regardless.
2. removes aimd's finalizer from every AIMService and AIMTemplateCache (every namespace, or
   ``-n``), each with a patch guarded by the resourceVersion it read, which sends the finalizers
   of everyone else back as they were: another party's finalizer is never dropped. A Conflict
   means reading the object again and deciding again.
3. deletes what the user asked for: ``--delete-caches`` every AIMTemplateCache and AIMModelCache
   (an AIMModelCache takes its PVC, so the model on it, with it), ``--keep-available`` sparing
   the Available ones; ``--delete-crds`` the five CRDs, which deletes every AIM object. Deletes
   are conditional on the uid and resourceVersion they were decided from.
4. says what is left and how to delete it.

``--dry-run`` reads everything and changes nothing: it prints what a real run would do.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import TYPE_CHECKING

from aimd.api import kinds
from aimd.api.meta import parse_time
from aimd.api.resource import Resource
from aimd.api.types import Object
from aimd.cli.cache import human_bytes
from aimd.cli.target import add_connection_flags, resolve, run_reporting
from aimd.kube.errors import Conflict, Forbidden, NotFound
from aimd.kube.resources import CUSTOM_RESOURCE_DEFINITIONS, DEPLOYMENTS, LEASES, PODS

if TYPE_CHECKING:
    from aimd.kube.client import KubeClient


Say = Callable[[str], None]

# The kinds aimd finalizes; the others never carry its finalizer.
FINALIZED = (kinds.SERVICES, kinds.TEMPLATE_CACHES)
CACHES = (kinds.TEMPLATE_CACHES, kinds.MODEL_CACHES)
SHORT_NAMES = {
    kinds.SERVICE_TEMPLATES.kind: "aimtpl",
    kinds.CLUSTER_SERVICE_TEMPLATES.kind: "aimcltpl",
    kinds.SERVICES.kind: "aimsvc",
    kinds.TEMPLATE_CACHES.kind: "aimtc",
    kinds.MODEL_CACHES.kind: "aimmc",
}
ATTEMPTS = 5  # reads and patches of one object before its conflicts count as an error
POLL = 1.0


class Refused(Exception):
    """Going on would not be safe (the controller still runs) or could not finish (a timeout)."""


# -- decisions --------------------------------------------------------------------------------


class LeaseState(Enum):
    FREE = "free"  # nobody holds it: released, or never taken
    HELD = "held"  # a holder renewed it within its duration, by our clock
    QUIET = "quiet"  # a holder is named but its renewals are late: stopped, or our clock is ahead


@dataclass(frozen=True)
class LeaseView:
    namespace: str
    name: str
    holder: str
    renewed: datetime | None
    duration: float
    resource_version: str

    @classmethod
    def of(cls, lease: Object) -> LeaseView:
        spec = lease.get("spec") or {}
        return cls(
            namespace=lease["metadata"]["namespace"],
            name=lease["metadata"]["name"],
            holder=spec.get("holderIdentity") or "",
            renewed=parse_time(spec.get("renewTime")),
            duration=float(spec.get("leaseDurationSeconds") or 15),
            resource_version=lease["metadata"].get("resourceVersion", ""),
        )

    def state(self, now: datetime) -> LeaseState:
        if not self.holder:
            return LeaseState.FREE
        if self.renewed is not None and (now - self.renewed).total_seconds() < self.duration:
            return LeaseState.HELD
        return LeaseState.QUIET

    def describe(self, now: datetime) -> str:
        ago = "never renewed"
        if self.renewed is not None:
            ago = f"renewed {max(0, int((now - self.renewed).total_seconds()))}s ago"
        return f"Lease {self.namespace}/{self.name} is held by {self.holder} ({ago})"


def remaining_finalizers(obj: Object) -> list[str] | None:
    """The finalizers to leave on ``obj`` once aimd's is gone; None when aimd's is not there."""
    finalizers = list(obj["metadata"].get("finalizers") or ())
    if kinds.FINALIZER not in finalizers:
        return None
    return [f for f in finalizers if f != kinds.FINALIZER]


def is_available(obj: Object) -> bool:
    return (obj.get("status") or {}).get("status") == "Available"


def spare(obj: Object, keep_available: bool) -> bool:
    """Whether ``--delete-caches`` leaves this cache alone."""
    return keep_available and is_available(obj)


def usage_problem(args: argparse.Namespace) -> str | None:
    """What is wrong with a combination of flags, in words that say what to do instead."""
    if args.keep_available and not args.delete_caches:
        return "--keep-available goes with --delete-caches (without it, no cache is deleted)"
    if args.delete_crds and args.keep_available:
        return (
            "--delete-crds deletes every AIM object, the Available caches and their volumes "
            "too: drop --keep-available, or keep the CRDs"
        )
    if args.delete_crds and args.namespace and not args.all_namespaces:
        return "the CRDs are cluster-wide: --delete-crds cannot go with -n"
    if args.stop_controller and args.stop_controller.count("/") != 1:
        return "--stop-controller takes NAMESPACE/DEPLOYMENT, e.g. aimd-system/aimd-controller"
    return None


def where(obj: Object) -> str:
    namespace = obj["metadata"].get("namespace")
    name = obj["metadata"]["name"]
    return f"{namespace}/{name}" if namespace else name


def plural(count: int, kind: str) -> str:
    return f"{count} {kind}{'' if count == 1 else 's'}"


def leftovers(
    left: dict[str, list[Object]], crds: list[str], namespace: str | None, dry_run: bool
) -> list[str]:
    """What is still in the cluster and how to delete it: the end of every run."""
    lines = []
    scope = f"namespace {namespace}" if namespace else "the cluster"
    counted = [(kind, objects) for kind, objects in left.items() if objects]
    state = "would be left" if dry_run else "is left"
    if counted or crds:
        free = "" if dry_run else " (aimd's finalizer holds none of it)"
        lines.append(f"What {state} in {scope}{free}:")
    for kind, objects in counted:
        line = f"  {plural(len(objects), kind)}"
        if kind == kinds.MODEL_CACHES.kind:
            available = [o for o in objects if is_available(o)]
            held = sum(int((o.get("status") or {}).get("sizeBytes") or 0) for o in available)
            line += f", {len(available)} Available ({human_bytes(held)} of models on PVCs)"
        lines.append(line)
    if crds:
        lines.append(f"  {plural(len(crds), 'CustomResourceDefinition')}: {', '.join(crds)}")
    if not counted and not crds:
        lines.append(f"Nothing of aimd {state} in {scope}.")
        return lines
    all_namespaced = ",".join(
        SHORT_NAMES[kind] for kind, _ in counted if kind != kinds.CLUSTER_SERVICE_TEMPLATES.kind
    )
    ns_flag = f"-n {namespace}" if namespace else "-A"
    lines.append("To delete them:")
    if any(kind in (r.kind for r in CACHES) for kind, _ in counted):
        lines.append(
            "  the caches, Available ones too or not: aimd uninstall --delete-caches "
            "[--keep-available]"
        )
    if all_namespaced:
        lines.append(
            f"  the objects: kubectl delete {all_namespaced} --all {ns_flag} (an AIMModelCache "
            "takes its PVC, and the model on it, with it)"
        )
    if crds:
        lines.append("  the CRDs, and every AIM object with them: aimd uninstall --delete-crds")
    return lines


# -- the steps --------------------------------------------------------------------------------


@dataclass
class Uninstall:
    client: KubeClient
    namespace: str | None
    dry_run: bool
    timeout: float
    say: Say
    deleted: set[str] = field(default_factory=set)  # uids deleted (or, in a dry run, to be)

    def did(self, verb: str, past: str) -> str:
        return f"would {verb}" if self.dry_run else past

    async def stop_controller(self, namespace: str, name: str) -> None:
        """Scales the controller's Deployment to zero and waits until none of its pods is left:
        only then has the last reconcile ended."""
        try:
            deployment = await self.client.get(DEPLOYMENTS, name, namespace)
        except NotFound:
            self.say(f"No Deployment {namespace}/{name}: no controller to stop there.")
            return
        labels = ((deployment.get("spec") or {}).get("selector") or {}).get("matchLabels") or {}
        selector = ",".join(f"{key}={value}" for key, value in sorted(labels.items()))
        if self.dry_run:
            self.say(
                f"Would scale Deployment {namespace}/{name} to 0 and wait for its pods to end."
            )
            return
        await self.client.patch(
            DEPLOYMENTS, name, {"spec": {"replicas": 0}}, namespace, subresource="scale"
        )
        self.say(f"Scaled Deployment {namespace}/{name} to 0; waiting for its pods to end.")
        deadline = time.monotonic() + self.timeout
        while True:
            pods = (await self.client.list(PODS, namespace, label_selector=selector))["items"]
            if not pods:
                return
            if time.monotonic() > deadline:
                names = ", ".join(p["metadata"]["name"] for p in pods)
                raise Refused(
                    f"the controller's pods are still there after {self.timeout:.0f}s: {names}"
                )
            await asyncio.sleep(POLL)

    async def _leases(self, namespace: str | None, name: str) -> list[LeaseView]:
        try:
            if namespace:
                return [LeaseView.of(await self.client.get(LEASES, name, namespace))]
            found = await self.client.list(LEASES, None, field_selector=f"metadata.name={name}")
        except NotFound:
            return []
        except Forbidden as error:
            raise Refused(
                f"cannot read the Lease that tells whether aimd runs ({error.message}); "
                "name its namespace with --leader-election-namespace"
            ) from None
        return [LeaseView.of(item) for item in found["items"]]

    async def held_leases(
        self, namespace: str | None, name: str, wait: float
    ) -> tuple[list[LeaseView], bool]:
        """The leases still held, having waited up to ``wait`` seconds for them to be released,
        and whether any Lease of that name exists. A quiet lease (holder named, renewals late)
        is watched for its duration first: unchanged, its holder is gone; renewed meanwhile, a
        clock difference hid a live holder."""
        deadline = time.monotonic() + wait
        quiet_since: dict[tuple[str, str], tuple[str, float]] = {}
        while True:
            now, watching = datetime.now(UTC), False
            held: list[LeaseView] = []
            leases = await self._leases(namespace, name)
            for lease in leases:
                state = lease.state(now)
                key = (lease.namespace, lease.name)
                if state is LeaseState.QUIET:
                    if key not in quiet_since:
                        self.say(
                            f"{lease.describe(now)}: watching it for {lease.duration:.0f}s to "
                            "see whether it is still renewed"
                        )
                    version, since = quiet_since.setdefault(
                        key, (lease.resource_version, time.monotonic())
                    )
                    if version != lease.resource_version:
                        state = LeaseState.HELD
                        quiet_since[key] = (lease.resource_version, time.monotonic())
                    elif time.monotonic() - since < lease.duration:
                        watching = True
                if state is LeaseState.HELD:
                    held.append(lease)
            if not watching and (not held or time.monotonic() >= deadline):
                return held, bool(leases)
            await asyncio.sleep(POLL)

    async def _settle(
        self, resource: Resource, obj: Object, act: Callable[[Object], Awaitable[bool]]
    ) -> bool:
        """``act(obj)`` (decide, then write conditionally on ``obj``'s resourceVersion), again
        from a fresh read after each Conflict; False once the object is gone."""
        for _ in range(ATTEMPTS):
            try:
                return await act(obj)
            except Conflict:
                meta = obj["metadata"]
                try:
                    obj = await self.client.get(resource, meta["name"], meta.get("namespace"))
                except NotFound:
                    return False
            except NotFound:
                return False
        raise Refused(f"{resource.kind} {where(obj)} kept changing under this command; run again")

    async def release_finalizers(self, resource: Resource) -> int:
        """Removes aimd's finalizer from every object of ``resource`` in scope; how many had it."""

        async def release(obj: Object) -> bool:
            keep = remaining_finalizers(obj)
            if keep is None:
                return False
            meta = obj["metadata"]
            if not self.dry_run:
                patch = {
                    "metadata": {"resourceVersion": meta["resourceVersion"], "finalizers": keep}
                }
                await self.client.patch(resource, meta["name"], patch, meta["namespace"])
            going = " (it was being deleted: now it goes)" if meta.get("deletionTimestamp") else ""
            removed = self.did("remove", "removed")
            self.say(
                f"{SHORT_NAMES[resource.kind]} {where(obj)}: {removed} {kinds.FINALIZER}{going}"
            )
            return True

        objects = (await self.client.list(resource, self.namespace))["items"]
        return sum([await self._settle(resource, obj, release) for obj in objects])

    async def delete_caches(self, keep_available: bool) -> None:
        """Deletes every template and model cache in scope but the spared ones, each as it was
        when the decision was taken (uid and resourceVersion preconditions): one that became
        Available meanwhile is looked at again."""
        for resource in CACHES:
            delete = self._cache_deleter(resource, keep_available)
            for obj in (await self.client.list(resource, self.namespace))["items"]:
                await self._settle(resource, obj, delete)

    def _cache_deleter(
        self, resource: Resource, keep_available: bool
    ) -> Callable[[Object], Awaitable[bool]]:
        short = SHORT_NAMES[resource.kind]

        async def delete(obj: Object) -> bool:
            if spare(obj, keep_available):
                self.say(f"{short} {where(obj)}: Available, kept")
                return False
            meta = obj["metadata"]
            if not self.dry_run:
                await self.client.delete(
                    resource,
                    meta["name"],
                    meta["namespace"],
                    propagation_policy="Background",
                    preconditions={"uid": meta["uid"], "resourceVersion": meta["resourceVersion"]},
                )
            self.say(f"{short} {where(obj)}: {self.did('delete', 'deleted')}")
            self.deleted.add(meta["uid"])
            return True

        return delete

    async def installed_crds(self) -> list[str]:
        names = []
        for resource in kinds.ALL_KINDS:
            name = f"{resource.plural}.{resource.group}"
            try:
                await self.client.get(CUSTOM_RESOURCE_DEFINITIONS, name)
            except NotFound:
                continue
            names.append(name)
        return names

    async def delete_crds(self) -> None:
        """Deletes the CRDs and waits until they are gone: the API server deletes every object
        of them first, which completes now that aimd's finalizer holds none."""
        names = await self.installed_crds()
        for name in names:
            self.say(f"customresourcedefinition {name}: {self.did('delete', 'deleted')}")
            if not self.dry_run:
                try:
                    await self.client.delete(CUSTOM_RESOURCE_DEFINITIONS, name)
                except NotFound:
                    continue
        if self.dry_run:
            return
        deadline = time.monotonic() + self.timeout
        while names := await self.installed_crds():
            if time.monotonic() > deadline:
                raise Refused(
                    f"the CRDs {', '.join(names)} are still being deleted after "
                    f"{self.timeout:.0f}s: an object of them has another party's finalizer "
                    "(kubectl get aim -A -o custom-columns=NAME:.metadata.name,"
                    "FINALIZERS:.metadata.finalizers)"
                )
            await asyncio.sleep(POLL)

    async def left(self) -> dict[str, list[Object]]:
        found: dict[str, list[Object]] = {}
        for resource in kinds.ALL_KINDS:
            if not resource.namespaced and self.namespace is not None:
                continue
            try:
                items = (await self.client.list(resource, self.namespace))["items"]
            except NotFound:  # the CRD is gone
                items = []
            found[resource.kind] = [o for o in items if o["metadata"]["uid"] not in self.deleted]
        return found


# -- the command ------------------------------------------------------------------------------


def configure(parser: argparse.ArgumentParser) -> None:
    parser.description = (
        "Removes aimd's finalizer from every AIMService and AIMTemplateCache (every namespace, "
        "or -n), so that they and their namespaces can be deleted once aimd is gone; then, if "
        "asked, deletes aimd's objects. Stop the controller first (or use --stop-controller): "
        "a running one puts its finalizer back."
    )
    add_connection_flags(parser, namespace_default="every namespace")
    parser.add_argument(
        "--dry-run", action="store_true", help="change nothing; print what would be done"
    )
    parser.add_argument(
        "--delete-caches",
        action="store_true",
        help="also delete every AIMTemplateCache and AIMModelCache (with their PVCs and models)",
    )
    parser.add_argument(
        "--keep-available",
        action="store_true",
        help="with --delete-caches: keep the Available caches (and the models on them)",
    )
    parser.add_argument(
        "--delete-crds",
        action="store_true",
        help="also delete the five CRDs, and with them every AIM object (cluster-wide)",
    )
    parser.add_argument(
        "--stop-controller",
        metavar="NAMESPACE/DEPLOYMENT",
        help="scale the controller's Deployment to 0 first and wait for it to stop",
    )
    parser.add_argument(
        "--leader-election-namespace",
        help="where the controller's Lease is (default: look in every namespace)",
    )
    parser.add_argument(
        "--leader-election-id",
        default="aimd-leader",
        help="the Lease's name (default: %(default)s)",
    )
    parser.add_argument(
        "--force",
        action="store_true",
        help="go on even though the Lease says the controller runs",
    )
    parser.add_argument(
        "--timeout",
        type=float,
        default=120.0,
        help="seconds to wait for the controller to stop and the CRDs to go (default: 120)",
    )


async def run(args: argparse.Namespace, say: Say = print) -> int:
    target = resolve(args, default_all_namespaces=True)
    async with await target.client() as client:
        step = Uninstall(client, target.namespace, args.dry_run, args.timeout, say)
        if args.stop_controller:
            namespace, name = args.stop_controller.split("/")
            await step.stop_controller(namespace, name)
        wait = args.timeout if args.stop_controller and not args.dry_run else 0.0
        lease_namespace, lease_id = args.leader_election_namespace, args.leader_election_id
        held, found = await step.held_leases(lease_namespace, lease_id, wait)
        if held:
            now = datetime.now(UTC)
            running = "; ".join(lease.describe(now) for lease in held)
            lease_home = held[0].namespace
            advice = (
                f"Stop it first (kubectl scale deployment -n {lease_home} aimd-controller "
                f"--replicas=0, or --stop-controller {lease_home}/aimd-controller): a running "
                "controller puts its finalizer back. --force goes on anyway."
            )
            if args.dry_run and args.stop_controller:
                say(f"aimd is running ({running}): a real run would wait for it to stop.")
            elif args.dry_run:
                say(f"aimd is running ({running}): a real run would refuse. {advice}")
            elif args.force:
                say(f"warning: aimd seems to run ({running}); going on because of --force.")
            else:
                raise Refused(f"aimd is running: {running}. {advice}")
        elif not found:
            scope = f"in {lease_namespace}" if lease_namespace else "in any namespace"
            say(
                f"No Lease {lease_id} {scope}: aimd runs without leader election or not at all. "
                "If it runs, stop it first: it puts its finalizer back."
            )
        removed = {r.kind: await step.release_finalizers(r) for r in FINALIZED}
        summary = " and ".join(plural(count, kind) for kind, count in removed.items())
        say(f"{'Would remove' if args.dry_run else 'Removed'} aimd's finalizer from {summary}.")
        if args.delete_caches:
            await step.delete_caches(args.keep_available)
        if args.delete_crds:
            await step.delete_crds()
        left = {} if args.delete_crds else await step.left()
        crds = [] if args.delete_crds else await step.installed_crds()
        for line in leftovers(left, crds, target.namespace, args.dry_run):
            say(line)
    return 0


def main(args: argparse.Namespace) -> int:
    problem = usage_problem(args)
    if problem:
        print(f"aimd uninstall: {problem}", file=sys.stderr)
        return 2
    return run_reporting("aimd uninstall", run(args, lambda line: print(line, flush=True)), Refused)
