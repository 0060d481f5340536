"""A REST resource as data: group, version, plural, kind, scope, and the URL paths it lives at.

It sits at the bottom of the layers so the AIM kinds (:mod:`aimd.api.kinds`) can be described
without the client, and the client (:mod:`aimd.kube`) can address any of them.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Resource:
    """One REST resource: enough to build every URL for it."""

    group: str
    version: str
    plural: str
    kind: str
    namespaced: bool

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(
        self, namespace: str | None = None, name: str | None = None, subresource: str | None = None
    ) -> str:
        """The URL path of the collection, or of one object (and its subresource).

        A namespaced resource without a namespace gives the all-namespaces collection.
        """
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base = f"{base}/namespaces/{namespace}"
        base = f"{base}/{self.plural}"
        if name is not None:
            base = f"{base}/{name}"
            if subresource is not None:
                base = f"{base}/{subresource}"
        return base
