"""The CustomResourceDefinitions of the five AIM kinds: the one source of truth for their schemas.

`manifests/crds/*.yaml` are written from here by `aimd crds --write manifests/crds`, and a unit test
fails when they drift. Admission does what it can: shapes and enums in the OpenAPI schema, and CEL
rules where a message must say what is wrong in a person's words (a bad URI scheme, a change of
`sourceUri`). What admission cannot know (a template or secret that does not exist) is reported in
status by the controller.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import yaml

from aimd.api import kinds
from aimd.api.resource import Resource
from aimd.api.sources import SEGMENT_MESSAGE

Schema = dict[str, Any]

MODEL_ID_PATTERN = r"^[A-Za-z0-9_-]+/[A-Za-z0-9._-]+$"
HF_URI_PATTERN = r"^hf://[A-Za-z0-9_.-]+/[A-Za-z0-9_.-]+(@[A-Za-z0-9_./-]+)?$"
S3_URI_PATTERN = r"^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/[A-Za-z0-9!_.*'()/=+-]*)?$"
# No '.', '..' or empty path segment in the repository, revision or S3 prefix (a trailing '/' on
# an S3 prefix is allowed: it names the same folder). CEL's matches() is unanchored.
SEGMENT_RULE = (
    "!self.substring(5).matches('(^|[/@])[.][.]?([/@]|$)') && "
    "(!self.startsWith('hf://') || !self.substring(5).matches('(^|[/@])([/@]|$)')) && "
    "(!self.startsWith('s3://') || !self.substring(5).matches('//'))"
)
CACHE_STATUSES = ["Pending", "Progressing", "Available", "Failed"]
SERVICE_STATUSES = ["Pending", "Starting", "Running", "Degraded", "Failed"]
TEMPLATE_STATUSES = ["Available", "Failed"]


def _string(max_length: int = 253, **extra: Any) -> Schema:
    return {"type": "string", "maxLength": max_length, **extra}


def _object(properties: Schema, required: list[str] | None = None, **extra: Any) -> Schema:
    schema: Schema = {"type": "object", "properties": properties, **extra}
    if required:
        schema["required"] = required
    return schema


def _array(items: Schema, **extra: Any) -> Schema:
    return {"type": "array", "items": items, **extra}


def source_uri_schema() -> Schema:
    """`hf://org/name[@revision]` or `s3://bucket/prefix`, with a message for each way to get it
    wrong: the API server's own pattern message would quote a regular expression at the user."""
    return _string(
        512,
        minLength=1,
        **{
            "x-kubernetes-validations": [
                {
                    "rule": "self.startsWith('hf://') || self.startsWith('s3://')",
                    "message": "sourceUri must use the hf:// or s3:// scheme, "
                    "e.g. hf://meta-llama/Llama-3.1-8B or s3://bucket/prefix",
                },
                {
                    "rule": "!self.matches('\\\\s')",
                    "message": "sourceUri must not contain spaces or other white space",
                },
                {
                    "rule": f"!self.startsWith('hf://') || self.matches('{HF_URI_PATTERN}')",
                    "message": "an hf:// sourceUri must look like hf://org/name or "
                    "hf://org/name@revision",
                },
                {
                    "rule": f"!self.startsWith('s3://') || self.matches(\"{S3_URI_PATTERN}\")",
                    "message": "an s3:// sourceUri must look like s3://bucket or "
                    "s3://bucket/prefix with a valid bucket name",
                },
                {
                    # The controller's copy of this rule is aimd.api.sources.segment_problem.
                    "rule": SEGMENT_RULE,
                    "message": SEGMENT_MESSAGE,
                },
            ]
        },
    )


def model_id_schema() -> Schema:
    return _string(
        256,
        **{
            "x-kubernetes-validations": [
                {
                    "rule": f"self.matches('{MODEL_ID_PATTERN}')",
                    "message": "modelId must look like org/name (letters, digits, '_', '-', "
                    "and '.' in the name)",
                }
            ]
        },
    )


def size_schema() -> Schema:
    """A Quantity (`20Gi`, or a byte count) that must be positive."""
    return {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "maxLength": 64,
        "x-kubernetes-validations": [
            {
                "rule": "isQuantity(string(self)) && "
                "quantity(string(self)).isGreaterThan(quantity('0'))",
                "message": "size must be a positive quantity such as 20Gi or 16106127360",
            }
        ],
    }


def resources_schema() -> Schema:
    """core/v1 ResourceRequirements: every request and limit a Quantity, refused at admission
    otherwise (a template with `cpu: lots` would be Available and its services fail later)."""
    quantity = {
        "x-kubernetes-int-or-string": True,
        "anyOf": [{"type": "integer"}, {"type": "string"}],
        "maxLength": 64,
        "x-kubernetes-validations": [
            {
                "rule": "isQuantity(string(self))",
                "message": "must be a quantity such as 2, 500m or 16Gi",
            }
        ],
    }
    quantities = {"type": "object", "maxProperties": 32, "additionalProperties": quantity}
    return _object(
        {
            "limits": quantities,
            "requests": quantities,
            "claims": _array(_object({"name": _string(63)}, required=["name"]), maxItems=16),
        }
    )


def env_schema() -> Schema:
    """The subset of core/v1 EnvVar that carries values and references to secrets."""
    key_ref = _object(
        {"name": _string(), "key": _string(), "optional": {"type": "boolean"}},
        required=["key"],
    )
    env_var = _object(
        {
            "name": _string(256, minLength=1),
            "value": _string(32768),
            "valueFrom": _object(
                {
                    "secretKeyRef": key_ref,
                    "configMapKeyRef": key_ref,
                    "fieldRef": _object(
                        {"apiVersion": _string(), "fieldPath": _string()}, required=["fieldPath"]
                    ),
                }
            ),
        },
        required=["name"],
    )
    return _array(
        env_var,
        maxItems=64,
        **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]},
    )


def conditions_schema() -> Schema:
    """metav1.Condition, listed by type."""
    condition = _object(
        {
            "type": _string(316, minLength=1),
            "status": {"type": "string", "enum": ["True", "False", "Unknown"]},
            "reason": _string(1024),
            "message": _string(32768),
            "lastTransitionTime": {"type": "string", "format": "date-time"},
            "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0},
        },
        required=["type", "status"],
    )
    return _array(
        condition, **{"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]}
    )


def model_source_schema() -> Schema:
    """A model source as a person writes it, validated at admission."""
    return _object(
        {
            "modelId": model_id_schema(),
            "sourceUri": source_uri_schema(),
            "size": size_schema(),
            "env": env_schema(),
        },
        required=["modelId", "sourceUri"],
    )


def mirrored_model_source_schema() -> Schema:
    """A model source as the controller mirrors it into status: already validated, so no rules."""
    return _object(
        {
            "modelId": _string(256),
            "sourceUri": _string(512),
            "size": {"x-kubernetes-int-or-string": True},
            "sizeBytes": {"type": "integer", "format": "int64"},
        }
    )


def template_spec_schema() -> Schema:
    return _object(
        {
            "image": _string(1024, minLength=1),
            "modelSources": _array(model_source_schema(), minItems=1, maxItems=32),
            "resources": resources_schema(),
            "env": env_schema(),
            "port": {"type": "integer", "minimum": 1, "maximum": 65535, "default": 8000},
        },
        required=["image", "modelSources"],
    )


def template_status_schema() -> Schema:
    return _object(
        {
            "status": {"type": "string", "enum": TEMPLATE_STATUSES},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": conditions_schema(),
            "modelSources": _array(mirrored_model_source_schema(), maxItems=32),
        }
    )


def service_spec_schema() -> Schema:
    return _object(
        {
            "templateName": _string(253, minLength=1),
            "cacheModel": {"type": "boolean", "default": False},
            "replicas": {"type": "integer", "minimum": 0, "default": 1},
            "env": env_schema(),
        },
        required=["templateName"],
    )


def service_status_schema() -> Schema:
    return _object(
        {
            "status": {"type": "string", "enum": SERVICE_STATUSES},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": conditions_schema(),
            "cache": _object(
                {"templateCacheRef": _object({"name": _string(), "uid": _string(64)})}
            ),
            "readyReplicas": {"type": "integer", "minimum": 0},
        }
    )


def template_cache_spec_schema() -> Schema:
    return _object(
        {
            "templateName": _string(253, minLength=1),
            "templateScope": {"type": "string", "enum": ["Namespace", "Cluster"]},
            "env": env_schema(),
            "storageClassName": _string(),
        },
        required=["templateName"],
    )


def template_cache_status_schema() -> Schema:
    entry = _object(
        {
            "modelId": _string(256),
            "sourceUri": _string(512),
            "name": _string(),
            "status": {"type": "string", "enum": CACHE_STATUSES},
            "persistentVolumeClaim": _string(),
        }
    )
    return _object(
        {
            "status": {"type": "string", "enum": CACHE_STATUSES},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": conditions_schema(),
            "templateScope": {"type": "string", "enum": ["Namespace", "Cluster"]},
            "modelCaches": _array(entry),
        }
    )


def model_cache_spec_schema() -> Schema:
    immutable_source = source_uri_schema()
    immutable_source["x-kubernetes-validations"].append(
        {
            "rule": "self == oldSelf",
            "message": "sourceUri is immutable: create a new AIMModelCache for another source",
        }
    )
    return _object(
        {
            "sourceUri": immutable_source,
            "modelId": model_id_schema(),
            "size": size_schema(),
            "storageClassName": _string(),
            "env": env_schema(),
            "downloadImage": _string(1024),
            "imagePullSecrets": _array(_object({"name": _string()}, required=["name"])),
        },
        required=["sourceUri"],
    )


def model_cache_status_schema() -> Schema:
    timestamp = {"type": "string", "format": "date-time"}
    return _object(
        {
            "status": {"type": "string", "enum": CACHE_STATUSES},
            "observedGeneration": {"type": "integer", "format": "int64"},
            "conditions": conditions_schema(),
            "progress": _object(
                {
                    "totalBytes": {"type": "integer", "format": "int64", "minimum": 0},
                    "downloadedBytes": {"type": "integer", "format": "int64", "minimum": 0},
                    "percentage": {"type": "integer", "minimum": 0, "maximum": 100},
                    "bytesPerSecond": {"type": "integer", "format": "int64", "minimum": 0},
                }
            ),
            "persistentVolumeClaim": _string(),
            "sizeBytes": {"type": "integer", "format": "int64", "minimum": 0},
            "displaySize": _string(32),
            "displayPercentage": _string(8),
            "failures": {"type": "integer", "minimum": 0},
            "nextRetryTime": timestamp,
            "retryRequest": _string(256),
            "lastFailureTime": timestamp,
            "availableTime": timestamp,
            "job": _string(),
            "resolvedRevision": _string(256),
            "probe": _object(
                {
                    "sizeBytes": {"type": "integer", "format": "int64", "minimum": 0},
                    "revision": _string(256),
                    "reason": _string(1024),
                    "message": _string(32768),
                    "probedAt": timestamp,
                }
            ),
            "lastDownloadFailure": _object(
                {"reason": _string(1024), "message": _string(32768), "time": timestamp}
            ),
        }
    )


def _column(name: str, json_path: str, type_: str = "string", priority: int = 0) -> Schema:
    column: Schema = {"name": name, "type": type_, "jsonPath": json_path}
    if priority:
        column["priority"] = priority
    return column


AGE = _column("Age", ".metadata.creationTimestamp", "date")
STATUS = _column("Status", ".status.status")


def crd(
    resource: Resource,
    short_name: str,
    spec: Schema,
    status: Schema,
    columns: list[Schema],
    description: str,
) -> dict[str, Any]:
    """A v1 CRD with one served, stored version, the status subresource and our categories."""
    singular = resource.kind.lower()
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{resource.plural}.{resource.group}"},
        "spec": {
            "group": resource.group,
            "names": {
                "kind": resource.kind,
                "listKind": f"{resource.kind}List",
                "plural": resource.plural,
                "singular": singular,
                "shortNames": [short_name],
                "categories": ["aim", "all"],
            },
            "scope": "Namespaced" if resource.namespaced else "Cluster",
            "versions": [
                {
                    "name": resource.version,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": [*columns, AGE],
                    "schema": {
                        "openAPIV3Schema": {
                            "description": description,
                            "type": "object",
                            "properties": {
                                "apiVersion": {"type": "string"},
                                "kind": {"type": "string"},
                                "metadata": {"type": "object"},
                                "spec": spec,
                                "status": status,
                            },
                            "required": ["spec"],
                        }
                    },
                }
            ],
        },
    }


def all_crds() -> list[dict[str, Any]]:
    """The five CRDs, in the order they are installed."""
    template_columns = [
        STATUS,
        _column("Image", ".spec.image", priority=1),
        _column("Model", ".spec.modelSources[0].modelId"),
    ]
    return [
        crd(
            kinds.SERVICE_TEMPLATES,
            "aimtpl",
            template_spec_schema(),
            template_status_schema(),
            template_columns,
            "How to serve one model in this namespace: image, resources, and its model sources.",
        ),
        crd(
            kinds.CLUSTER_SERVICE_TEMPLATES,
            "aimcltpl",
            template_spec_schema(),
            template_status_schema(),
            template_columns,
            "How to serve one model, usable from every namespace.",
        ),
        crd(
            kinds.SERVICES,
            "aimsvc",
            service_spec_schema(),
            service_status_schema(),
            [
                STATUS,
                _column("Template", ".spec.templateName"),
                _column("Cache", ".spec.cacheModel", "boolean"),
                _column("Replicas", ".spec.replicas", "integer", priority=1),
                _column("TemplateCache", ".status.cache.templateCacheRef.name", priority=1),
            ],
            "An inference service made from a template, optionally on cached models.",
        ),
        crd(
            kinds.TEMPLATE_CACHES,
            "aimtc",
            template_cache_spec_schema(),
            template_cache_status_schema(),
            [
                STATUS,
                _column("Template", ".spec.templateName"),
                _column("Scope", ".status.templateScope", priority=1),
            ],
            "All model caches one template needs, in one namespace.",
        ),
        crd(
            kinds.MODEL_CACHES,
            "aimmc",
            model_cache_spec_schema(),
            model_cache_status_schema(),
            [
                STATUS,
                _column("Source", ".spec.sourceUri"),
                _column("Progress", ".status.displayPercentage"),
                _column("Size", ".status.displaySize"),
                _column("PVC", ".status.persistentVolumeClaim", priority=1),
                _column("Failures", ".status.failures", "integer", priority=1),
            ],
            "One model artifact downloaded onto one PersistentVolumeClaim.",
        ),
    ]


def render(crd_object: dict[str, Any]) -> str:
    """The YAML text of one CRD, stable across runs so the checked-in files can be compared."""
    return yaml.safe_dump(crd_object, sort_keys=False, width=100)


def file_name(crd_object: dict[str, Any]) -> str:
    return f"{crd_object['spec']['names']['plural']}.yaml"


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--write",
        metavar="DIR",
        type=Path,
        help="write one file per CRD into DIR instead of printing a YAML stream",
    )


def main(args: argparse.Namespace) -> int:
    crds = all_crds()
    if args.write is not None:
        args.write.mkdir(parents=True, exist_ok=True)
        for crd_object in crds:
            (args.write / file_name(crd_object)).write_text(render(crd_object))
        return 0
    sys.stdout.write("---\n".join(render(crd_object) for crd_object in crds))
    return 0
