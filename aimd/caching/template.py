"""The template reconciler: validate, mirror the model sources into status (SPEC §1.1).

Keys are ``(namespace, name)`` for AIMServiceTemplate and ``("", name)`` for
AIMClusterServiceTemplate.
"""

from __future__ import annotations

from aimd.api import kinds
from aimd.caching.conditions import now
from aimd.caching.state import State, live
from aimd.caching.templates import desired_status
from aimd.caching.writes import write_status
from aimd.kube.errors import NotFound
from aimd.runtime import Manager, Result

Key = tuple[str, str]


class TemplateReconciler:
    def __init__(self, manager: Manager, state: State) -> None:
        self.manager = manager
        self.state = state

    async def reconcile(self, key: Key) -> Result | None:
        namespace, name = key
        if namespace:
            resource, template = (
                kinds.SERVICE_TEMPLATES,
                self.state.templates_ns.get(name, namespace),
            )
        else:
            resource, template = (
                kinds.CLUSTER_SERVICE_TEMPLATES,
                self.state.templates_cluster.get(name),
            )
        if template is None or not live(template):
            return None
        desired = desired_status(template, now())
        try:
            wrote = await write_status(self.manager.client, resource, template, desired)
        except NotFound:
            return None
        if wrote and desired["status"] == "Failed":
            message = desired["conditions"][-1]["message"]
            self.manager.events.warning(template, "InvalidTemplate", message)
        return None
