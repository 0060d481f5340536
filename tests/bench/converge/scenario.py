"""What the benchmark asks for: N services over T templates sharing U source URIs, and the
minimum writes the rules need to serve them.

The minimum, per object: template status 1; service finalizer 1, status 2 (Starting, Running),
Deployment + Service creates 2; template cache create 1, finalizer 1, status 1; model cache
create 1, status 2 (Progressing, Available), PVC + Job + ServiceAccount + Role + RoleBinding
creates 5. Events are for people and counted apart.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aimd.api import kinds
from aimd.kube.resources import (
    DEPLOYMENTS,
    JOBS,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SERVICE_ACCOUNTS,
    SERVICES,
    Resource,
)

Object = dict[str, Any]
TEMPLATE_SIZE = "1Gi"


@dataclass(frozen=True)
class Size:
    services: int
    templates: int
    uris: int

    def __str__(self) -> str:
        return f"{self.services:,}/{self.templates:,}/{self.uris:,}"

    @classmethod
    def parse(cls, text: str) -> Size:
        """``"1000/100/50"`` (services/templates/URIs)."""
        services, templates, uris = (int(part.replace(",", "")) for part in text.split("/"))
        if not services >= templates >= uris >= 1:
            raise ValueError(f"{text}: need services >= templates >= URIs >= 1")
        return cls(services, templates, uris)

    def minimum(self) -> dict[tuple[str, str], int]:
        """(resource[/subresource], verb) → the fewest writes of that kind the rules need."""
        s, t, u = self.services, self.templates, self.uris

        def status(resource: Resource) -> tuple[str, str]:
            return (f"{resource.plural}/status", "patch")

        def create(resource: Resource) -> tuple[str, str]:
            return (resource.plural, "create")

        return {
            status(kinds.SERVICE_TEMPLATES): t,
            (kinds.SERVICES.plural, "patch"): s,
            status(kinds.SERVICES): 2 * s,
            create(DEPLOYMENTS): s,
            create(SERVICES): s,
            create(kinds.TEMPLATE_CACHES): t,
            (kinds.TEMPLATE_CACHES.plural, "patch"): t,
            status(kinds.TEMPLATE_CACHES): t,
            create(kinds.MODEL_CACHES): u,
            status(kinds.MODEL_CACHES): 2 * u,
            create(PERSISTENT_VOLUME_CLAIMS): u,
            create(JOBS): u,
            create(SERVICE_ACCOUNTS): u,
            create(ROLES): u,
            create(ROLE_BINDINGS): u,
        }

    def minimum_writes(self) -> int:
        return sum(self.minimum().values())

    def objects(self) -> dict[str, int]:
        """How many objects each controller reconciles (the model-cache key is a URI)."""
        return {
            "template": self.templates,
            "templatecache": self.templates,
            "modelcache": self.uris,
            "service": self.services,
        }


def uri(i: int) -> str:
    return f"hf://bench/model-{i}"


def model_id(i: int) -> str:
    return f"bench/model-{i}"


def template(i: int, size: Size) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.SERVICE_TEMPLATES.kind,
        "metadata": {"name": f"tpl-{i}"},
        "spec": {
            "image": "example.com/vllm:1",
            "modelSources": [
                {
                    "modelId": model_id(i % size.uris),
                    "sourceUri": uri(i % size.uris),
                    "size": TEMPLATE_SIZE,
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
