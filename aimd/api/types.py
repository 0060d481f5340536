"""Typed views of the five AIM kinds and their status, as the API serves them (JSON as dicts).

They are ``TypedDict``s, not classes: an object read from the index is the API's JSON itself, so a
status patch is computed against exactly what the server holds, and nothing is copied. The shape
is made regular once, where objects enter the index (:func:`shaped`): ``spec`` and ``status``
are always there, so readers write ``mc["status"].get("status")`` instead of chains of
``(x.get("status") or {})``. Fields inside stay optional, as in the API.

Objects aimd merely creates or reads in passing (PVCs, Jobs, Pods, Deployments) are plain
:data:`Object`; the AIM kinds are typed.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Required, TypedDict, TypeVar, cast

Object = dict[str, Any]
"""Any API object as JSON (a child aimd builds or reads, or one of unknown kind)."""

ObjectLike = Mapping[str, Any]
"""What the meta helpers accept: any object, typed view or plain."""


class OwnerReference(TypedDict, total=False):
    apiVersion: Required[str]
    kind: Required[str]
    name: Required[str]
    uid: Required[str]
    controller: bool
    blockOwnerDeletion: bool


class ObjectMeta(TypedDict, total=False):
    name: Required[str]
    namespace: str
    uid: str
    resourceVersion: str
    generation: int
    creationTimestamp: str
    deletionTimestamp: str
    labels: dict[str, str]
    annotations: dict[str, str]
    finalizers: list[str]
    ownerReferences: list[OwnerReference]


class Condition(TypedDict, total=False):
    type: Required[str]
    status: Required[str]
    reason: str
    message: str
    lastTransitionTime: str
    observedGeneration: int


class EnvVar(TypedDict, total=False):
    name: Required[str]
    value: str
    valueFrom: dict[str, Any]


# -- templates ------------------------------------------------------------------------------------


class ModelSourceSpec(TypedDict, total=False):
    modelId: str
    sourceUri: str
    size: int | str
    env: list[EnvVar]


class TemplateSpec(TypedDict, total=False):
    image: str
    modelSources: list[ModelSourceSpec]
    resources: dict[str, Any]
    env: list[EnvVar]
    port: int


class TemplateStatus(TypedDict, total=False):
    status: str
    observedGeneration: int
    conditions: list[Condition]
    modelSources: list[dict[str, Any]]


class Template(TypedDict, total=False):
    """An AIMServiceTemplate or an AIMClusterServiceTemplate (no namespace)."""

    apiVersion: str
    kind: str
    metadata: Required[ObjectMeta]
    spec: Required[TemplateSpec]
    status: Required[TemplateStatus]


# -- services -------------------------------------------------------------------------------------


class TemplateCacheRef(TypedDict):
    name: str
    uid: str


class ServiceCache(TypedDict, total=False):
    templateCacheRef: TemplateCacheRef


class ServiceSpec(TypedDict, total=False):
    templateName: str
    cacheModel: bool
    replicas: int
    env: list[EnvVar]


class ServiceStatus(TypedDict, total=False):
    status: str
    observedGeneration: int
    conditions: list[Condition]
    cache: ServiceCache


class Service(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: Required[ObjectMeta]
    spec: Required[ServiceSpec]
    status: Required[ServiceStatus]


# -- template caches ------------------------------------------------------------------------------


class ModelCacheEntry(TypedDict, total=False):
    """One source of a template cache: which model cache serves it, and how far it is."""

    modelId: str
    sourceUri: str
    name: str
    status: str
    persistentVolumeClaim: str


class TemplateCacheSpec(TypedDict, total=False):
    templateName: str
    templateScope: str
    env: list[EnvVar]
    storageClassName: str


class TemplateCacheStatus(TypedDict, total=False):
    status: str
    observedGeneration: int
    conditions: list[Condition]
    templateScope: str
    modelCaches: list[ModelCacheEntry]


class TemplateCache(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: Required[ObjectMeta]
    spec: Required[TemplateCacheSpec]
    status: Required[TemplateCacheStatus]


# -- model caches ---------------------------------------------------------------------------------


class Progress(TypedDict, total=False):
    totalBytes: int
    downloadedBytes: int
    percentage: int
    bytesPerSecond: int


class Probe(TypedDict, total=False):
    sizeBytes: int
    revision: str
    reason: str
    message: str
    probedAt: str


class DownloadFailure(TypedDict, total=False):
    reason: str
    message: str
    time: str


class ModelCacheSpec(TypedDict, total=False):
    sourceUri: Required[str]
    modelId: str
    size: int | str
    storageClassName: str
    env: list[EnvVar]
    downloadImage: str
    imagePullSecrets: list[dict[str, str]]


class ModelCacheStatus(TypedDict, total=False):
    status: str
    observedGeneration: int
    conditions: list[Condition]
    progress: Progress
    persistentVolumeClaim: str
    sizeBytes: int
    displaySize: str
    displayPercentage: str
    failures: int
    nextRetryTime: str
    retryRequest: str
    lastFailureTime: str
    availableTime: str
    job: str
    resolvedRevision: str
    probe: Probe
    lastDownloadFailure: DownloadFailure


class ModelCache(TypedDict, total=False):
    apiVersion: str
    kind: str
    metadata: Required[ObjectMeta]
    spec: Required[ModelCacheSpec]
    status: Required[ModelCacheStatus]


AimObject = Template | Service | TemplateCache | ModelCache
T = TypeVar("T", Template, Service, TemplateCache, ModelCache)


def shaped(obj: Object) -> Object:
    """The informer transform of every AIM kind: ``spec`` and ``status`` always present, so the
    typed views hold. Returns the same dict (objects enter the index once, freshly decoded)."""
    if not isinstance(obj.get("spec"), dict):
        obj["spec"] = {}
    if not isinstance(obj.get("status"), dict):
        obj["status"] = {}
    return obj


def view(obj: Object, kind: type[T]) -> T:
    """``obj`` (an API response, not yet shaped) as the typed view ``kind``."""
    return cast(T, shaped(obj))
