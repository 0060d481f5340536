"""Templates (AIMServiceTemplate, AIMClusterServiceTemplate): validation, lookup, status.

Admission already rejects most bad input; this check runs again in the controller because a
template written before a CRD tightened, or edited past admission by a person with the rights,
must still be reported in status rather than crash a reconcile or yield a broken workload.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from aimd.api import kinds
from aimd.api.crds import HF_URI_PATTERN, MODEL_ID_PATTERN, S3_URI_PATTERN
from aimd.api.meta import deleting, owner_reference, set_condition
from aimd.api.quantity import is_quantity, parse_bytes
from aimd.api.reasons import Reason
from aimd.api.sources import segment_problem
from aimd.api.types import EnvVar, Object, OwnerReference, Template

if TYPE_CHECKING:
    from aimd.caching.state import Store

NAMESPACE = "Namespace"
CLUSTER = "Cluster"


@dataclass(frozen=True)
class ModelSource:
    model_id: str
    source_uri: str
    size_bytes: int | None
    size: int | str | None
    env: tuple[EnvVar, ...] = ()


@dataclass(frozen=True)
class Problem:
    """What is wrong with a template, naming the field."""

    field: str
    message: str


def _source_problems(where: str, source: object, seen: set[str]) -> list[Problem]:
    if not isinstance(source, Mapping):
        return [Problem(where, f"{where} must be an object with modelId and sourceUri")]
    found = []
    model_id, uri = source.get("modelId"), source.get("sourceUri")
    if not isinstance(model_id, str) or not re.match(MODEL_ID_PATTERN, model_id):
        found.append(Problem(f"{where}.modelId", f"{where}.modelId must look like org/name"))
    elif model_id in seen:
        found.append(Problem(f"{where}.modelId", f"{where}.modelId {model_id} is repeated"))
    else:
        seen.add(model_id)
    if not isinstance(uri, str) or not (
        re.match(HF_URI_PATTERN, uri) or re.match(S3_URI_PATTERN, uri)
    ):
        found.append(
            Problem(f"{where}.sourceUri", f"{where}.sourceUri must be hf://org/name or s3://")
        )
    elif segment_problem(uri):
        found.append(Problem(f"{where}.sourceUri", f"{where}.{segment_problem(uri)}"))
    if source.get("size") is not None:
        size = parse_bytes(source["size"])
        if size is None or size <= 0:
            found.append(Problem(f"{where}.size", f"{where}.size must be a positive quantity"))
    return found


def _resource_problems(resources: object) -> list[Problem]:
    """``spec.resources`` as a container's: requests and limits of quantities."""
    if resources is None:
        return []
    if not isinstance(resources, Mapping):
        return [Problem("spec.resources", "spec.resources must hold requests and limits")]
    found = []
    for part in ("requests", "limits"):
        values = resources.get(part) or {}
        if not isinstance(values, Mapping):
            found.append(Problem(f"spec.resources.{part}", f"spec.resources.{part} must be a map"))
            continue
        for name, value in values.items():
            if not is_quantity(value):
                field = f"spec.resources.{part}.{name}"
                found.append(Problem(field, f"{field} must be a quantity such as 2 or 500m"))
    return found


def problems(template: Template) -> list[Problem]:
    """Every reason ``template`` cannot serve, each naming its field (empty: valid)."""
    spec = template["spec"]
    found: list[Problem] = []
    if not isinstance(spec.get("image"), str) or not spec.get("image"):
        found.append(Problem("spec.image", "spec.image must name the serving container image"))
    found += _resource_problems(spec.get("resources"))
    sources = spec.get("modelSources")
    if not isinstance(sources, list) or not sources:
        found.append(Problem("spec.modelSources", "spec.modelSources needs at least one source"))
        return found
    seen: set[str] = set()
    for number, source in enumerate(sources):
        found += _source_problems(f"spec.modelSources[{number}]", source, seen)
    return found


def model_sources(template: Template) -> list[ModelSource]:
    """The template's sources, in order (only meaningful for a template without problems)."""
    return [
        ModelSource(
            str(source.get("modelId", "")),
            str(source["sourceUri"]),
            parse_bytes(source.get("size")),
            source.get("size"),
            tuple(source.get("env") or ()),
        )
        for source in template["spec"].get("modelSources") or ()
        if isinstance(source, Mapping) and "sourceUri" in source
    ]


def source_uris(template: Template | None) -> set[str]:
    return {s.source_uri for s in model_sources(template)} if template else set()


def desired_status(template: Template, moment: datetime) -> Object:
    """The status a template should have: Available with its mirrored sources, or Failed."""
    status = template["status"]
    generation = template["metadata"].get("generation")
    conditions = list(status.get("conditions") or ())
    found = problems(template)
    if found:
        return {
            "status": "Failed",
            "observedGeneration": generation,
            "conditions": set_condition(
                conditions,
                "Ready",
                False,
                Reason.TEMPLATE_INVALID,
                "; ".join(p.message for p in found),
                generation,
                moment,
            ),
            "modelSources": None,
        }
    mirrored = []
    for source in model_sources(template):
        entry: dict[str, Any] = {"modelId": source.model_id, "sourceUri": source.source_uri}
        if source.size is not None:
            entry["size"] = source.size
            entry["sizeBytes"] = source.size_bytes
        mirrored.append(entry)
    return {
        "status": "Available",
        "observedGeneration": generation,
        "conditions": set_condition(
            conditions,
            "Ready",
            True,
            Reason.VALID,
            f"{len(mirrored)} model source(s) validated",
            generation,
            moment,
        ),
        "modelSources": mirrored,
    }


@dataclass(frozen=True)
class Resolved:
    template: Template
    scope: str


class Templates:
    """Looks templates up in the two template stores by the rules of SPEC §1.2 and §1.3."""

    def __init__(self, namespaced: Store[Template], cluster: Store[Template]) -> None:
        self.namespaced = namespaced
        self.cluster = cluster

    def resolve(self, namespace: str, name: str, scope: str | None = None) -> Resolved | None:
        """The namespaced template first (unless scope says Cluster), else the cluster one."""
        if scope in (None, NAMESPACE):
            found = self.namespaced.get(name, namespace)
            if found is not None and not deleting(found):
                return Resolved(found, NAMESPACE)
        if scope in (None, CLUSTER):
            found = self.cluster.get(name)
            if found is not None and not deleting(found):
                return Resolved(found, CLUSTER)
        return None


def template_owner_reference(template: Template, controller: bool = True) -> OwnerReference:
    """A template owns its template caches (B1, D4): cluster-scoped owners included."""
    kind = template.get("kind") or (
        kinds.SERVICE_TEMPLATES.kind
        if template["metadata"].get("namespace")
        else kinds.CLUSTER_SERVICE_TEMPLATES.kind
    )
    return owner_reference(template, kind, kinds.API_VERSION, controller)
