"""The template-cache reconciler: one entry per model source, status the worst of its model
caches, and the deletion rule D2 in its finalizer.

A TC does not create MCs itself: the model-cache reconciler, keyed by URI, sees the TC as demand
(so two TCs needing one URI never make two MCs). The TC reports which MC serves each source and
re-evaluates whenever any MC with one of its URIs changes (B7), not only the ones it made.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import Any

from aimd.api import kinds
from aimd.caching import metrics
from aimd.caching.conditions import now, set_condition
from aimd.caching.state import State, live, preferred_model_cache
from aimd.caching.templates import Resolved, model_sources, owner_reference, problems
from aimd.caching.writes import (
    delete_exact,
    finalized,
    remove_finalizer,
    set_label,
    write_status,
)
from aimd.kube.errors import NotFound
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)

Object = dict[str, Any]
Key = tuple[str, str]

# Worst first: a TC is only as far along as its least advanced model cache.
SEVERITY = ("Failed", "Pending", "Progressing", "Available")


def _conditions(obj: Object | None) -> list[Object]:
    return list(((obj or {}).get("status") or {}).get("conditions") or ())


def worst(statuses: list[str]) -> str:
    return min(statuses, key=SEVERITY.index) if statuses else "Pending"


def desired_status(
    tc: Object, resolved: Resolved | None, model_caches_for: Any, moment: datetime
) -> Object:
    """The TC's status from its template and the MCs the index has for each of its URIs (pure).

    ``model_caches_for(uri)`` returns the MCs in the TC's namespace with that sourceUri.
    """
    status = tc.get("status") or {}
    generation = tc["metadata"].get("generation")
    conditions = list(status.get("conditions") or ())
    spec = tc.get("spec") or {}

    def result(state: str, ready: bool, reason: str, message: str, **extra: Any) -> Object:
        return {
            "status": state,
            "observedGeneration": generation,
            "conditions": set_condition(
                conditions, "Ready", ready, reason, message, generation, moment
            ),
            **extra,
        }

    if resolved is None:
        scope = spec.get("templateScope")
        where = {"Cluster": "cluster ", "Namespace": "namespaced "}.get(scope or "", "")
        return result(
            "Failed",
            False,
            "TemplateNotFound",
            f"no {where}template named {spec.get('templateName')} exists; create it and this "
            "cache continues by itself",
            modelCaches=None,
        )
    found = problems(resolved.template)
    if found:
        return result(
            "Failed",
            False,
            "TemplateInvalid",
            f"template {resolved.template['metadata']['name']} is invalid: "
            + "; ".join(p.message for p in found),
            templateScope=resolved.scope,
        )
    entries = []
    for source in model_sources(resolved.template):
        mc = preferred_model_cache(model_caches_for(source.source_uri))
        mc_status = (mc.get("status") or {}) if mc else {}
        entry: Object = {
            "modelId": source.model_id,
            "sourceUri": source.source_uri,
            "name": mc["metadata"]["name"] if mc else "",
            "status": mc_status.get("status") or "Pending",
        }
        if mc_status.get("persistentVolumeClaim"):
            entry["persistentVolumeClaim"] = mc_status["persistentVolumeClaim"]
        entries.append((entry, mc))
    state = worst([e["status"] for e, _ in entries])
    ready = state == "Available"
    if ready:
        reason, message = "Available", f"all {len(entries)} model cache(s) are Available"
    else:
        waiting = [(e, mc) for e, mc in entries if e["status"] != "Available"]
        entry, mc = next(((e, m) for e, m in waiting if e["status"] == state), waiting[0])
        if state == "Failed":
            # The cause is what a person needs; relay the model cache's own words.
            mc_ready = next((c for c in _conditions(mc) if c.get("type") == "Ready"), {})
            reason = mc_ready.get("reason") or "ModelCacheFailed"
            message = f"{entry['sourceUri']}: " + (mc_ready.get("message") or "download failed")
        else:
            # Progress is not repeated here: each step would be a write on every TC.
            reason = "ModelCache" + state if mc else "CreatingModelCache"
            message = f"{len(waiting)} of {len(entries)} model cache(s) not Available yet"
    return result(
        state,
        ready,
        reason,
        message,
        templateScope=resolved.scope,
        modelCaches=[e for e, _ in entries],
    )


class TemplateCacheReconciler:
    def __init__(self, manager: Manager, state: State) -> None:
        self.manager = manager
        self.client = manager.client
        self.state = state

    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        tc = self.state.template_caches.get(name, namespace)
        if tc is None:
            return None
        terminating = self.state.namespace_terminating(namespace)
        finalized_tc = await finalized(
            self.client, kinds.TEMPLATE_CACHES, tc, terminating, self.keep_available_model_caches
        )
        if finalized_tc is None:
            return None
        tc = finalized_tc
        resolved = self.state.resolve_for_template_cache(tc)
        if resolved is not None:
            tc = await self._owned_by_template(tc, resolved) or tc
        desired = desired_status(
            tc, resolved, lambda uri: self.state.model_caches_for(namespace, uri), now()
        )
        self._count_reuse(tc, desired)
        try:
            await write_status(self.client, kinds.TEMPLATE_CACHES, tc, desired)
        except NotFound:
            return None
        return None

    async def _owned_by_template(self, tc: Object, resolved: Resolved) -> Object | None:
        """A TC made by hand becomes the template's too, so D4 (template deleted → its caches
        collected) holds for it as for one a service made."""
        uid = resolved.template["metadata"]["uid"]
        refs = list(tc["metadata"].get("ownerReferences") or ())
        if any(ref.get("uid") == uid for ref in refs):
            return None
        has_controller = any(ref.get("controller") for ref in refs)
        refs.append(owner_reference(resolved.template, controller=not has_controller))
        patch = {
            "metadata": {
                "resourceVersion": tc["metadata"]["resourceVersion"],
                "ownerReferences": refs,
            }
        }
        meta = tc["metadata"]
        return await self.client.patch(
            kinds.TEMPLATE_CACHES, meta["name"], patch, meta["namespace"]
        )

    def _count_reuse(self, tc: Object, desired: Object) -> None:
        """A source served by an MC this TC did not create, seen for the first time, is reuse."""
        known = {
            e.get("sourceUri"): e.get("name")
            for e in (tc.get("status") or {}).get("modelCaches") or ()
        }
        name = tc["metadata"]["name"]
        for entry in desired.get("modelCaches") or ():
            if not entry["name"] or known.get(entry["sourceUri"]) == entry["name"]:
                continue
            mc = self.state.model_caches.get(entry["name"], tc["metadata"]["namespace"])
            creator = ((mc or {}).get("metadata", {}).get("labels") or {}).get(
                kinds.LABEL_CREATED_BY_TEMPLATE_CACHE
            )
            if creator != name:
                metrics.CACHE_REQUESTS.labels(tc["metadata"]["namespace"], "reused").inc()

    async def keep_available_model_caches(self, tc: Object) -> None:
        """D2 (+ D7, D8): keep the Available MCs this TC created and any it merely reused; hand a
        non-Available one to another TC that still needs its URI; delete the rest."""
        namespace, name = tc["metadata"]["namespace"], tc["metadata"]["name"]
        if not self.state.namespace_terminating(namespace):
            created = self.state.model_caches.index.by("createdByTemplateCache", (namespace, name))
            for mc in created:
                await self._keep_or_delete(tc, mc)
        await remove_finalizer(self.client, kinds.TEMPLATE_CACHES, tc)

    async def _keep_or_delete(self, tc: Object, mc: Object) -> None:
        if not live(mc) or (mc.get("status") or {}).get("status") == "Available":
            return
        namespace = mc["metadata"]["namespace"]
        others = [
            other
            for other in self.state.template_caches_needing(namespace, mc["spec"]["sourceUri"])
            if other["metadata"]["uid"] != tc["metadata"]["uid"]
        ]
        if others:
            heir = others[0]["metadata"]["name"]
            await set_label(
                self.client, kinds.MODEL_CACHES, mc, kinds.LABEL_CREATED_BY_TEMPLATE_CACHE, heir
            )
            self.manager.events.normal(
                mc, "HandedOver", f"{tc['metadata']['name']} was deleted; {heir} still needs it"
            )
            return
        await delete_exact(self.client, kinds.MODEL_CACHES, mc)
        log.info("deleted model cache %s/%s (not Available)", namespace, mc["metadata"]["name"])
        self.manager.events.normal(
            tc,
            "DeletedModelCache",
            f"deleted AIMModelCache {mc['metadata']['name']}: it was not Available",
        )
