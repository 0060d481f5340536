"""Pure functions that return the manifests aimd creates. No I/O: unit-tested without a server.

Every child carries an ownerReference to the object it serves, so deleting that object lets the
garbage collector remove the child (SPEC D3), and a label naming it, so an informer filtered on the
label sees only aimd's objects and a child's event finds its owner without a scan.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

from aimd.api import kinds
from aimd.api.meta import label_value, owner_reference
from aimd.api.quantity import pvc_size
from aimd.api.types import EnvVar, ModelCache, Object, ObjectLike, Service, Template
from aimd.caching import names
from aimd.caching.templates import template_owner_reference

MODEL_MOUNT = "/workspace/model"
CACHE_ROOT = "/workspace/model-cache"
NON_ROOT_UID = 65532
DEFAULT_ACCESS_MODE = "ReadWriteMany"


def created_by(key: str, name: str) -> tuple[dict[str, str], dict[str, str]]:
    """The label (and, for a name too long for a label value, the annotation with the whole
    name) that says which consumer made an object (SPEC B1, B2, E6)."""
    value = label_value(name)
    return {key: value}, ({key: name} if value != name else {})


def _model_cache_meta(mc: ModelCache, name: str) -> Object:
    return {
        "name": name,
        "namespace": mc["metadata"]["namespace"],
        "labels": {kinds.LABEL_MODEL_CACHE: label_value(mc["metadata"]["name"])},
        "ownerReferences": [
            owner_reference(mc, kinds.MODEL_CACHES.kind, kinds.API_VERSION, controller=True)
        ],
    }


def model_cache(
    namespace: str,
    source_uri: str,
    model_id: str,
    size: int | str | None,
    template_cache: str,
    env: list[EnvVar] | None = None,
    storage_class: str | None = None,
) -> Object:
    """The MC aimd creates for a source a template cache needs (B2). ``env`` carries the
    credentials (the template cache's, overridden by the source's own)."""
    spec: Object = {"sourceUri": source_uri}
    if model_id:
        spec["modelId"] = model_id
    if size is not None:
        spec["size"] = size
    if env:
        spec["env"] = copy.deepcopy(env)
    if storage_class:
        spec["storageClassName"] = storage_class
    labels, annotations = created_by(kinds.LABEL_CREATED_BY_TEMPLATE_CACHE, template_cache)
    metadata: Object = {
        "name": names.model_cache_name(source_uri),
        "namespace": namespace,
        "labels": labels,
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.MODEL_CACHES.kind,
        "metadata": metadata,
        "spec": spec,
    }


def template_cache(namespace: str, template: Template, scope: str, service: str) -> Object:
    """The TC a service with ``cacheModel: true`` asks for: owned by the template (B1)."""
    name = template["metadata"]["name"]
    labels, annotations = created_by(kinds.LABEL_CREATED_BY_SERVICE, service)
    metadata: Object = {
        "name": names.template_cache_name(name, scope),
        "namespace": namespace,
        "labels": labels,
        "ownerReferences": [template_owner_reference(template)],
    }
    if annotations:
        metadata["annotations"] = annotations
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": kinds.TEMPLATE_CACHES.kind,
        "metadata": metadata,
        "spec": {"templateName": name, "templateScope": scope},
    }


def persistent_volume_claim(mc: ModelCache, name: str, size_bytes: int) -> Object:
    spec: Object = {
        "accessModes": [DEFAULT_ACCESS_MODE],
        "resources": {"requests": {"storage": pvc_size(size_bytes)}},
    }
    storage_class = mc["spec"].get("storageClassName")
    if storage_class:
        spec["storageClassName"] = storage_class
    return {
        "apiVersion": "v1",
        "kind": "PersistentVolumeClaim",
        "metadata": _model_cache_meta(mc, name),
        "spec": spec,
    }


def service_account(mc: ModelCache) -> Object:
    name = names.downloader_name(mc["metadata"]["name"])
    return {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": _model_cache_meta(mc, name)}


def role(mc: ModelCache) -> Object:
    """May read and patch this one cache's status, and nothing else."""
    name = names.downloader_name(mc["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "Role",
        "metadata": _model_cache_meta(mc, name),
        "rules": [
            {
                "apiGroups": [kinds.GROUP],
                "resources": [f"{kinds.MODEL_CACHES.plural}/status"],
                "resourceNames": [mc["metadata"]["name"]],
                "verbs": ["get", "patch"],
            }
        ],
    }


def role_binding(mc: ModelCache) -> Object:
    name = names.downloader_name(mc["metadata"]["name"])
    return {
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "RoleBinding",
        "metadata": _model_cache_meta(mc, name),
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": name},
        "subjects": [
            {"kind": "ServiceAccount", "name": name, "namespace": mc["metadata"]["namespace"]}
        ],
    }


@dataclass(frozen=True)
class Downloads:
    """What every download and probe Job gets from the controller's configuration."""

    image: str  # the controller's own image: the default downloadImage
    log_format: str = "text"  # the Job logs as the controller does (--log-format)


def _job(
    mc: ModelCache, name: str, args: list[str], downloads: Downloads, claim: str | None
) -> Object:
    spec = mc["spec"]
    env = [
        {"name": "AIMD_MODEL_CACHE_NAME", "value": mc["metadata"]["name"]},
        {"name": "AIMD_MODEL_CACHE_NAMESPACE", "value": mc["metadata"]["namespace"]},
        {"name": "AIMD_LOG_FORMAT", "value": downloads.log_format},
        *copy.deepcopy(spec.get("env") or []),
    ]
    mounts = [{"name": "tmp", "mountPath": "/tmp"}]
    volumes: list[Object] = [{"name": "tmp", "emptyDir": {}}]
    if claim is not None:
        mounts.append({"name": "model", "mountPath": MODEL_MOUNT})
        volumes.append({"name": "model", "persistentVolumeClaim": {"claimName": claim}})
    pod: Object = {
        "serviceAccountName": names.downloader_name(mc["metadata"]["name"]),
        "restartPolicy": "Never",
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": NON_ROOT_UID,
            "runAsGroup": NON_ROOT_UID,
            "fsGroup": NON_ROOT_UID,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "containers": [
            {
                "name": "aimd",
                "image": spec.get("downloadImage") or downloads.image,
                "command": ["aimd", *args],
                "env": env,
                "volumeMounts": mounts,
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "capabilities": {"drop": ["ALL"]},
                },
            }
        ],
        "volumes": volumes,
    }
    if spec.get("imagePullSecrets"):
        pod["imagePullSecrets"] = copy.deepcopy(spec["imagePullSecrets"])
    metadata = _model_cache_meta(mc, name)
    return {
        "apiVersion": "batch/v1",
        "kind": "Job",
        "metadata": metadata,
        # backoffLimit 0: aimd owns retries (B4), each attempt is a new Job with its own name.
        "spec": {
            "backoffLimit": 0,
            "template": {"metadata": {"labels": dict(metadata["labels"])}, "spec": pod},
        },
    }


def download_job(mc: ModelCache, name: str, claim: str, downloads: Downloads) -> Object:
    args = ["download", mc["spec"]["sourceUri"], "--target", MODEL_MOUNT]
    return _job(mc, name, args, downloads, claim)


def probe_job(mc: ModelCache, name: str, downloads: Downloads) -> Object:
    return _job(mc, name, ["probe", mc["spec"]["sourceUri"]], downloads, None)


def _workload_meta(svc: Service, labels: dict[str, str]) -> Object:
    """Metadata of the Deployment and the Service an AIMService runs on: its name, its owner."""
    return {
        "name": names.workload_name(svc["metadata"]["name"]),
        "namespace": svc["metadata"]["namespace"],
        "labels": labels,
        "ownerReferences": [
            owner_reference(svc, kinds.SERVICES.kind, kinds.API_VERSION, controller=True)
        ],
    }


def _service_labels(svc: ObjectLike) -> dict[str, str]:
    return {kinds.LABEL_SERVICE: label_value(svc["metadata"]["name"])}


def deployment(svc: Service, template: Template, mounts: list[tuple[str, str]] | None) -> Object:
    """The serving workload; ``mounts`` are (modelId, PVC) pairs, None without caching."""
    tpl_spec = template["spec"]
    svc_spec = svc["spec"]
    labels = _service_labels(svc)
    env = copy.deepcopy(tpl_spec.get("env") or []) + copy.deepcopy(svc_spec.get("env") or [])
    container: Object = {
        "name": "inference",
        "image": tpl_spec.get("image", ""),
        "ports": [{"name": "http", "containerPort": int(tpl_spec.get("port") or 8000)}],
    }
    if tpl_spec.get("resources"):
        container["resources"] = copy.deepcopy(tpl_spec["resources"])
    volumes: list[Object] = []
    if mounts is not None:
        env = [e for e in env if e.get("name") != "AIM_CACHE_PATH"]
        env.append({"name": "AIM_CACHE_PATH", "value": CACHE_ROOT})
        container["volumeMounts"] = [
            {"name": f"model-{i}", "mountPath": f"{CACHE_ROOT}/{model_id}", "readOnly": True}
            for i, (model_id, _) in enumerate(mounts)
        ]
        volumes = [
            {"name": f"model-{i}", "persistentVolumeClaim": {"claimName": claim, "readOnly": True}}
            for i, (_, claim) in enumerate(mounts)
        ]
    if env:
        container["env"] = env
    pod: Object = {"containers": [container]}
    if volumes:
        pod["volumes"] = volumes
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": _workload_meta(svc, labels),
        "spec": {
            "replicas": int(svc_spec.get("replicas", 1)),
            "selector": {"matchLabels": labels},
            "template": {"metadata": {"labels": dict(labels)}, "spec": pod},
        },
    }


def service(svc: Service, template: Template) -> Object:
    labels = _service_labels(svc)
    port = int(template["spec"].get("port") or 8000)
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": _workload_meta(svc, labels),
        "spec": {
            "selector": labels,
            "ports": [{"name": "http", "port": port, "targetPort": "http"}],
        },
    }


def merged_env(*layers: list[EnvVar]) -> list[EnvVar]:
    """Env lists merged by name, later layers winning, in first-seen order."""
    merged: dict[str, EnvVar] = {}
    for layer in layers:
        for var in layer:
            merged[var["name"]] = var
    return list(merged.values())
