"""Templates (AIMServiceTemplate, AIMClusterServiceTemplate): validation, lookup, status.

Admission already rejects most bad input; this check runs again in the controller because a
template written before a CRD tightened, or edited past admission by a person with the rights,
must still be reported in status rather than crash a reconcile or yield a broken workload.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from aimd.api import kinds
from aimd.api.crds import HF_URI_PATTERN, MODEL_ID_PATTERN, S3_URI_PATTERN
from aimd.caching.conditions import set_condition
from aimd.caching.quantity import parse_bytes
from aimd.runtime.index import Index

Object = dict[str, Any]

NAMESPACE = "Namespace"
CLUSTER = "Cluster"


@dataclass(frozen=True)
class ModelSource:
    model_id: str
    source_uri: str
    size_bytes: int | None
    size: object
    env: tuple[Object, ...] = ()


@dataclass(frozen=True)
class Problem:
    """What is wrong with a template, naming the field."""

    field: str
    message: str


def problems(template: Object) -> list[Problem]:
    spec = template.get("spec") or {}
    found: list[Problem] = []
    if not isinstance(spec.get("image"), str) or not spec["image"]:
        found.append(Problem("spec.image", "spec.image must name the serving container image"))
    sources = spec.get("modelSources")
    if not isinstance(sources, list) or not sources:
        found.append(Problem("spec.modelSources", "spec.modelSources needs at least one source"))
        return found
    seen: set[str] = set()
    for number, source in enumerate(sources):
        where = f"spec.modelSources[{number}]"
        model_id = source.get("modelId") if isinstance(source, dict) else None
        uri = source.get("sourceUri") if isinstance(source, dict) else None
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
        if isinstance(source, dict) and source.get("size") is not None:
            size = parse_bytes(source["size"])
            if size is None or size <= 0:
                found.append(Problem(f"{where}.size", f"{where}.size must be a positive quantity"))
    return found


def model_sources(template: Object) -> list[ModelSource]:
    """The template's sources, in order (only meaningful for a template without problems)."""
    result = []
    for source in (template.get("spec") or {}).get("modelSources") or ():
        if isinstance(source, dict) and "sourceUri" in source:
            result.append(
                ModelSource(
                    str(source.get("modelId", "")),
                    str(source["sourceUri"]),
                    parse_bytes(source.get("size")),
                    source.get("size"),
                    tuple(source.get("env") or ()),
                )
            )
    return result


def source_uris(template: Object | None) -> set[str]:
    return {s.source_uri for s in model_sources(template)} if template else set()


def desired_status(template: Object, moment: datetime) -> Object:
    """The status a template should have: Available with its mirrored sources, or Failed."""
    status = template.get("status") or {}
    generation = template["metadata"].get("generation")
    found = problems(template)
    if found:
        conditions = set_condition(
            list(status.get("conditions") or ()),
            "Ready",
            False,
            "InvalidTemplate",
            "; ".join(p.message for p in found),
            generation,
            moment,
        )
        return {
            "status": "Failed",
            "observedGeneration": generation,
            "conditions": conditions,
            "modelSources": None,
        }
    mirrored = []
    for source in model_sources(template):
        entry: Object = {"modelId": source.model_id, "sourceUri": source.source_uri}
        if source.size is not None:
            entry["size"] = source.size
            entry["sizeBytes"] = source.size_bytes
        mirrored.append(entry)
    conditions = set_condition(
        list(status.get("conditions") or ()),
        "Ready",
        True,
        "Valid",
        f"{len(mirrored)} model source(s) validated",
        generation,
        moment,
    )
    return {
        "status": "Available",
        "observedGeneration": generation,
        "conditions": conditions,
        "modelSources": mirrored,
    }


@dataclass(frozen=True)
class Resolved:
    template: Object
    scope: str


class Templates:
    """Looks templates up in the two template indexes by the rules of SPEC §1.2 and §1.3."""

    def __init__(self, namespaced: Index, cluster: Index) -> None:
        self.namespaced = namespaced
        self.cluster = cluster

    def resolve(self, namespace: str, name: str, scope: str | None = None) -> Resolved | None:
        """The namespaced template first (unless scope says Cluster), else the cluster one."""
        if scope in (None, NAMESPACE):
            found = self.namespaced.get_by_name(name, namespace)
            if found is not None and not found["metadata"].get("deletionTimestamp"):
                return Resolved(found, NAMESPACE)
        if scope in (None, CLUSTER):
            found = self.cluster.get_by_name(name)
            if found is not None and not found["metadata"].get("deletionTimestamp"):
                return Resolved(found, CLUSTER)
        return None


def owner_reference(template: Object, controller: bool = True) -> Object:
    kind = template.get("kind") or (
        kinds.SERVICE_TEMPLATES.kind
        if template["metadata"].get("namespace")
        else kinds.CLUSTER_SERVICE_TEMPLATES.kind
    )
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kind,
        "name": template["metadata"]["name"],
        "uid": template["metadata"]["uid"],
        "controller": controller,
        "blockOwnerDeletion": True,
    }
