"""The CRDs on a real API server: samples are accepted, bad input is refused at admission with a
message that names the field, ownerReferences cascade and namespaces finish deleting."""

from __future__ import annotations

import copy
import secrets
from typing import Any

import pytest

from aimd.api import kinds
from aimd.api.sources import SEGMENT_MESSAGE
from aimd.kube.client import KubeClient
from aimd.kube.errors import ApiError, NotFound
from aimd.kube.resources import NAMESPACES, Resource
from tests.support import eventually, sample

SAMPLES = {
    "aimservicetemplate": kinds.SERVICE_TEMPLATES,
    "aimclusterservicetemplate": kinds.CLUSTER_SERVICE_TEMPLATES,
    "aimservice": kinds.SERVICES,
    "aimtemplatecache": kinds.TEMPLATE_CACHES,
    "aimmodelcache": kinds.MODEL_CACHES,
}


async def rejection(
    kube: KubeClient, resource: Resource, body: dict[str, Any], namespace: str
) -> str:
    """Creates `body` and returns the API server's refusal message; fails if it was accepted."""
    with pytest.raises(ApiError) as refused:
        await kube.create(resource, body, namespace if resource.namespaced else None)
    assert refused.value.status == 422, refused.value
    return refused.value.message


def template(
    source_uri: str = "hf://org/model", model_id: str = "org/model", **source: Any
) -> dict[str, Any]:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMServiceTemplate",
        "metadata": {"name": f"tpl-{secrets.token_hex(3)}"},
        "spec": {
            "image": "example.com/serve:1",
            "modelSources": [{"modelId": model_id, "sourceUri": source_uri, **source}],
        },
    }


def model_cache(source_uri: str = "s3://bucket/prefix") -> dict[str, Any]:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": f"mc-{secrets.token_hex(3)}"},
        "spec": {"sourceUri": source_uri},
    }


@pytest.mark.parametrize("name", sorted(SAMPLES))
async def test_every_sample_is_accepted(kube: KubeClient, namespace: str, name: str) -> None:
    resource = SAMPLES[name]
    body = sample(name)
    if not resource.namespaced:
        body["metadata"]["name"] += f"-{secrets.token_hex(3)}"
    created = await kube.create(resource, body, namespace if resource.namespaced else None)
    assert created["metadata"]["uid"]
    assert created["spec"] == {
        **body["spec"],
        **{k: v for k, v in created["spec"].items() if k not in body["spec"]},
    }
    if not resource.namespaced:
        await kube.delete(resource, body["metadata"]["name"])


async def test_defaults_are_applied(kube: KubeClient, namespace: str) -> None:
    created = await kube.create(kinds.SERVICE_TEMPLATES, template(), namespace)
    assert created["spec"]["port"] == 8000
    service = {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMService",
        "metadata": {"name": "svc"},
        "spec": {"templateName": "x"},
    }
    created = await kube.create(kinds.SERVICES, service, namespace)
    assert created["spec"]["cacheModel"] is False
    assert created["spec"]["replicas"] == 1


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("gs://bucket/model", "hf:// or s3:// scheme"),
        ("hf://org/my model", "white space"),
        ("hf://just-a-name", "hf://org/name"),
        ("s3://Bad_Bucket/x", "valid bucket name"),
    ],
)
async def test_bad_source_uri_is_rejected(
    kube: KubeClient, namespace: str, uri: str, expected: str
) -> None:
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, template(source_uri=uri), namespace)
    assert "spec.modelSources[0].sourceUri" in message
    assert expected in message
    message = await rejection(kube, kinds.MODEL_CACHES, model_cache(uri), namespace)
    assert "spec.sourceUri" in message
    assert expected in message


@pytest.mark.parametrize(
    "uri",
    [
        "hf://../..",
        "hf://org/..",
        "hf://./model",
        "hf://org/model@../../x",
        "hf://org/model@refs//x",
        "s3://bucket/a/../b",
        "s3://bucket/./x",
        "s3://bucket/a//b",
        "s3://bucket/..",
    ],
)
async def test_dot_and_empty_path_segments_are_rejected(
    kube: KubeClient, namespace: str, uri: str
) -> None:
    """B10: such a URI used to be accepted and then retried forever as a network error."""
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, template(source_uri=uri), namespace)
    assert "spec.modelSources[0].sourceUri" in message
    assert SEGMENT_MESSAGE in message
    message = await rejection(kube, kinds.MODEL_CACHES, model_cache(uri), namespace)
    assert "spec.sourceUri" in message
    assert SEGMENT_MESSAGE in message


@pytest.mark.parametrize(
    "uri", ["s3://bucket/prefix/", "hf://org/model@refs/pr/1", "hf://org/model.v2", "s3://b.c/x"]
)
async def test_uris_with_dots_inside_segments_are_accepted(
    kube: KubeClient, namespace: str, uri: str
) -> None:
    created = await kube.create(kinds.MODEL_CACHES, model_cache(uri), namespace)
    assert created["spec"]["sourceUri"] == uri


@pytest.mark.parametrize(
    ("part", "value"), [("requests", "lots"), ("limits", "1.5.5"), ("requests", "2 cores")]
)
async def test_template_resources_must_be_quantities(
    kube: KubeClient, namespace: str, part: str, value: str
) -> None:
    body = template()
    body["spec"]["resources"] = {part: {"cpu": value}}
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, body, namespace)
    assert f"spec.resources.{part}" in message
    assert "quantity" in message
    body["spec"]["resources"] = {"requests": {"cpu": "500m", "memory": "16Gi"}, "limits": {"x": 2}}
    accepted = await kube.create(kinds.SERVICE_TEMPLATES, body, namespace)
    assert accepted["spec"]["resources"]["requests"]["cpu"] == "500m"


@pytest.mark.parametrize("model_id", ["no-slash", "a/b/c", "org/na me", ""])
async def test_bad_model_id_is_rejected(kube: KubeClient, namespace: str, model_id: str) -> None:
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, template(model_id=model_id), namespace)
    assert "spec.modelSources[0].modelId" in message
    assert "org/name" in message


@pytest.mark.parametrize("size", ["-1Gi", "0", "lots", -5])
async def test_bad_size_is_rejected(kube: KubeClient, namespace: str, size: object) -> None:
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, template(size=size), namespace)
    assert "spec.modelSources[0].size" in message
    assert "positive quantity" in message


async def test_changing_source_uri_is_rejected(kube: KubeClient, namespace: str) -> None:
    body = model_cache("hf://org/model")
    await kube.create(kinds.MODEL_CACHES, body, namespace)
    with pytest.raises(ApiError) as refused:
        await kube.patch(
            kinds.MODEL_CACHES,
            body["metadata"]["name"],
            {"spec": {"sourceUri": "hf://org/other"}},
            namespace,
        )
    assert refused.value.status == 422
    assert "spec.sourceUri" in refused.value.message
    assert "immutable" in refused.value.message
    unchanged = await kube.patch(
        kinds.MODEL_CACHES, body["metadata"]["name"], {"spec": {"modelId": "org/model"}}, namespace
    )
    assert unchanged["spec"]["sourceUri"] == "hf://org/model"


async def test_unknown_enum_is_rejected(kube: KubeClient, namespace: str) -> None:
    body = sample("aimtemplatecache")
    body["spec"]["templateScope"] = "Galaxy"
    message = await rejection(kube, kinds.TEMPLATE_CACHES, body, namespace)
    assert "spec.templateScope" in message
    assert "Namespace" in message


async def test_missing_required_fields_are_rejected(kube: KubeClient, namespace: str) -> None:
    body = template()
    del body["spec"]["image"]
    body["spec"]["modelSources"] = []
    message = await rejection(kube, kinds.SERVICE_TEMPLATES, body, namespace)
    assert "spec.image" in message
    assert "spec.modelSources" in message


async def test_unknown_fields_are_rejected_under_strict_validation(
    kube: KubeClient, namespace: str
) -> None:
    body = template()
    body["spec"]["imagePullPolicy"] = "Always"
    with pytest.raises(ApiError) as refused:
        await kube.request(
            "POST",
            kinds.SERVICE_TEMPLATES.path(namespace),
            params={"fieldValidation": "Strict"},
            body=body,
        )
    assert "spec.imagePullPolicy" in refused.value.message


def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {
        "apiVersion": owner["apiVersion"],
        "kind": owner["kind"],
        "name": owner["metadata"]["name"],
        "uid": owner["metadata"]["uid"],
        "controller": True,
        "blockOwnerDeletion": True,
    }


async def test_owner_reference_cascade(kube: KubeClient, namespace: str) -> None:
    """The garbage collector runs: deleting a template takes its template cache with it, also when
    the owner is cluster-scoped."""
    owners = [
        await kube.create(kinds.SERVICE_TEMPLATES, template(), namespace),
        await kube.create(
            kinds.CLUSTER_SERVICE_TEMPLATES, {**template(), "kind": "AIMClusterServiceTemplate"}
        ),
    ]
    for owner in owners:
        cache = copy.deepcopy(sample("aimtemplatecache"))
        cache["metadata"] = {
            "name": f"tc-{secrets.token_hex(3)}",
            "ownerReferences": [owner_reference(owner)],
        }
        await kube.create(kinds.TEMPLATE_CACHES, cache, namespace)
        resource = (
            kinds.SERVICE_TEMPLATES
            if owner["kind"] == "AIMServiceTemplate"
            else kinds.CLUSTER_SERVICE_TEMPLATES
        )
        await kube.delete(
            resource,
            owner["metadata"]["name"],
            namespace if resource.namespaced else None,
            propagation_policy="Foreground",
        )

        async def cache_gone(name: str = cache["metadata"]["name"]) -> bool:
            try:
                await kube.get(kinds.TEMPLATE_CACHES, name, namespace)
            except NotFound:
                return True
            return False

        await eventually(
            cache_gone, timeout=90, what="the garbage collector to delete the template cache"
        )


async def test_namespace_deletion_finishes(kube: KubeClient) -> None:
    name = f"doomed-{secrets.token_hex(3)}"
    await kube.create(
        NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}
    )
    for resource, body in (
        (kinds.SERVICE_TEMPLATES, template()),
        (kinds.MODEL_CACHES, model_cache()),
        (kinds.SERVICES, sample("aimservice")),
    ):
        await kube.create(resource, body, name)
    await kube.delete(NAMESPACES, name)

    async def gone() -> bool:
        try:
            await kube.get(NAMESPACES, name)
        except NotFound:
            return True
        return False

    await eventually(gone, timeout=120, what=f"namespace {name} to be deleted")
