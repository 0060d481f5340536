"""The template-cache reconciler: one entry per model source, status the worst of its model
caches, and the deletion rule D2 in its finalizer.

A TC does not create MCs itself: the model-cache reconciler, keyed by URI, sees the TC as demand
(so two TCs needing one URI never make two MCs). The TC reports which MC serves each source and
re-evaluates whenever any MC with one of its URIs changes (B7), not only the ones it made.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from aimd.api import kinds
from aimd.api.meta import find_condition, now, set_condition, why
from aimd.api.reasons import Reason
from aimd.api.sources import source_key
from aimd.api.types import ModelCache, ModelCacheEntry, Object, TemplateCache, view
from aimd.caching import metrics, rules
from aimd.caching.reconciler import Key, Reconciler
from aimd.caching.settling import Settling
from aimd.caching.state import State
from aimd.caching.templates import Resolved, model_sources, problems, template_owner_reference
from aimd.runtime import Manager, Result

log = logging.getLogger(__name__)

Refusals = dict[tuple[str, str], tuple[datetime, str]]

# What a TC says while its least advanced model cache is in each state (B7).
WAITING_REASON = {
    rules.PENDING: Reason.MODEL_CACHE_PENDING,
    rules.PROGRESSING: Reason.MODEL_CACHE_PROGRESSING,
}


def desired_status(
    tc: TemplateCache,
    resolved: Resolved | None,
    model_caches_for: Callable[[str], list[ModelCache]],
    moment: datetime,
    refusals: Refusals | None = None,
) -> Object:
    """The TC's status from its template and the MCs the index has for each of its URIs (pure).

    ``model_caches_for(uri)`` returns the MCs in the TC's namespace with that sourceUri;
    ``refusals`` the model caches the API server refused to create, by (namespace, source key).
    """
    generation = tc["metadata"].get("generation")
    conditions = list(tc["status"].get("conditions") or ())
    spec = tc["spec"]

    def result(state: str, ready: bool, reason: str, message: str, **extra: object) -> Object:
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
            rules.FAILED,
            False,
            Reason.TEMPLATE_NOT_FOUND,
            f"no {where}template named {spec.get('templateName')} exists; create it and this "
            "cache continues by itself",
            modelCaches=None,
        )
    found = problems(resolved.template)
    if found:
        return result(
            rules.FAILED,
            False,
            Reason.TEMPLATE_INVALID,
            f"template {resolved.template['metadata']['name']} is invalid: "
            + "; ".join(p.message for p in found),
            templateScope=resolved.scope,
        )
    entries: list[tuple[ModelCacheEntry, ModelCache | None]] = []
    for source in model_sources(resolved.template):
        mc = rules.prefer_available_then_oldest(model_caches_for(source.source_uri))
        entry: ModelCacheEntry = {
            "modelId": source.model_id,
            "sourceUri": source.source_uri,
            "name": mc["metadata"]["name"] if mc else "",
            "status": rules.cache_status(mc) if mc else rules.PENDING,
        }
        claim = mc["status"].get("persistentVolumeClaim") if mc else None
        if claim:
            entry["persistentVolumeClaim"] = claim
        entries.append((entry, mc))
    state = rules.worst([e["status"] for e, _ in entries])
    extra = {"templateScope": resolved.scope, "modelCaches": [e for e, _ in entries]}
    if state == rules.AVAILABLE:
        message = f"all {len(entries)} model cache(s) are Available"
        return result(state, True, Reason.AVAILABLE, message, **extra)
    waiting = [(e, mc) for e, mc in entries if e["status"] != rules.AVAILABLE]
    entry, mc = next(((e, m) for e, m in waiting if e["status"] == state), waiting[0])
    refusal = (refusals or {}).get((tc["metadata"]["namespace"], source_key(entry["sourceUri"])))
    if mc is None and refusal is not None:
        return result(state, False, Reason.CREATE_REFUSED, refusal[1], **extra)
    if state == rules.FAILED:
        # The cause is what a person needs; relay the model cache's own words.
        reason, said = why(mc)
        message = f"{entry['sourceUri']}: " + (said or "download failed")
        reason = reason or Reason.MODEL_CACHE_FAILED
        return result(state, False, reason, message, **extra)
    # Progress is not repeated here: each step would be a write on every TC.
    reason = WAITING_REASON[state] if mc else Reason.CREATING_MODEL_CACHE
    message = f"{len(waiting)} of {len(entries)} model cache(s) not Available yet"
    return result(state, False, reason, message, **extra)


# A TC's Pending and Progressing are news for a person, not something a service acts on (only
# Available and Failed are), and its model caches say the same with their progress. They are
# written at most once per SETTLE seconds per TC, the first SETTLE seconds after aimd first sees
# it (aimd.caching.settling): a TC whose model caches take less than that goes from nothing to
# Available in one write. Available, Failed and a refusal are written at once.
SETTLE = 10.0


def news_can_wait(current: Mapping[str, Any], desired: Object) -> bool:
    """True for a status that only says the TC is still on its way (pure)."""
    if desired["status"] not in (rules.PENDING, rules.PROGRESSING):
        return False
    ready = find_condition(desired["conditions"], "Ready")
    return not (ready and ready.get("reason") == Reason.CREATE_REFUSED)


class TemplateCacheReconciler(Reconciler):
    settling: Settling

    def __init__(self, manager: Manager, state: State) -> None:
        super().__init__(manager, state)
        self.settling = Settling(news_can_wait, SETTLE)

    async def reconcile(self, key: Key) -> Result | None:
        namespace = key[0]
        tc = await self.begin(
            self.state.template_caches, kinds.TEMPLATE_CACHES, key, self.keep_available_model_caches
        )
        if tc is None:
            self.settling.forget(key)
            return None
        resolved = self.state.resolve_for_template_cache(tc)
        if resolved is not None:
            tc = await self._owned_by_template(tc, resolved) or tc
        desired = desired_status(
            tc,
            resolved,
            lambda uri: self.state.model_caches_for(namespace, uri),
            now(),
            self.state.refusals,
        )
        wait = await self.write_news(
            self.settling,
            self.state.template_caches,
            kinds.TEMPLATE_CACHES,
            key,
            tc,
            desired,
            on_write=lambda: self._count_reuse(tc, desired),
        )
        return Result(requeue_after=wait) if wait else None

    async def _owned_by_template(
        self, tc: TemplateCache, resolved: Resolved
    ) -> TemplateCache | None:
        """A TC made by hand becomes the template's too, so D4 (template deleted → its caches
        collected) holds for it as for one a service made."""
        uid = resolved.template["metadata"]["uid"]
        refs = list(tc["metadata"].get("ownerReferences") or ())
        if any(ref.get("uid") == uid for ref in refs):
            return None
        has_controller = any(ref.get("controller") for ref in refs)
        refs.append(template_owner_reference(resolved.template, controller=not has_controller))
        patch = {
            "metadata": {
                "resourceVersion": tc["metadata"]["resourceVersion"],
                "ownerReferences": refs,
            }
        }
        meta = tc["metadata"]
        patched = await self.client.patch(
            kinds.TEMPLATE_CACHES, meta["name"], patch, meta["namespace"]
        )
        return view(patched, TemplateCache)

    def _count_reuse(self, tc: TemplateCache, desired: Object) -> None:
        """A source served by an MC this TC did not create, seen for the first time, is reuse."""
        known = {e.get("sourceUri"): e.get("name") for e in tc["status"].get("modelCaches") or ()}
        for entry in desired.get("modelCaches") or ():
            if not entry["name"] or known.get(entry["sourceUri"]) == entry["name"]:
                continue
            mc = self.state.model_caches.get(entry["name"], tc["metadata"]["namespace"])
            if mc is None or mc not in self.state.model_caches_created_by(tc):
                metrics.CACHE_REQUESTS.labels(tc["metadata"]["namespace"], "reused").inc()

    async def keep_available_model_caches(self, tc: TemplateCache) -> None:
        """D2 (+ D7, D8): "model caches created by this template cache are evaluated: Available
        caches → Preserved; non-available caches → Deleted" — unless another TC still needs one,
        which then inherits it."""
        created = self.state.model_caches_created_by(tc)
        await self.let_go(tc, kinds.TEMPLATE_CACHES, created, lambda mc: self._release(tc, mc))

    async def _release(self, tc: TemplateCache, mc: ModelCache) -> None:
        consumers = [
            other
            for other in self.state.template_caches_needing(
                mc["metadata"]["namespace"], mc["spec"]["sourceUri"]
            )
            if other["metadata"]["uid"] != tc["metadata"]["uid"]
        ]
        await self.release(
            mc, kinds.MODEL_CACHES, kinds.LABEL_CREATED_BY_TEMPLATE_CACHE, consumers, tc
        )
