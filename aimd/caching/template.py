"""The template reconciler: validate, mirror the model sources into status (SPEC §1.1).

Keys are ``(namespace, name)`` for AIMServiceTemplate and ``("", name)`` for
AIMClusterServiceTemplate.
"""

from __future__ import annotations

from aimd.api import kinds
from aimd.api.meta import live, now
from aimd.api.reasons import Reason
from aimd.caching.reconciler import Key, Reconciler
from aimd.caching.templates import desired_status, problems
from aimd.kube.errors import NotFound
from aimd.runtime import Result


class TemplateReconciler(Reconciler):
    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        store = self.state.templates_ns if namespace else self.state.templates_cluster
        resource = kinds.SERVICE_TEMPLATES if namespace else kinds.CLUSTER_SERVICE_TEMPLATES
        template = store.get(name, namespace or None)
        if template is None or not live(template):
            return None
        desired = desired_status(template, now())
        try:
            wrote = await self.write_status(store, resource, template, desired)
        except NotFound:
            return None
        if wrote and desired["status"] == "Failed":
            message = "; ".join(p.message for p in problems(template))
            self.manager.events.warning(template, Reason.TEMPLATE_INVALID, message)
        return None
