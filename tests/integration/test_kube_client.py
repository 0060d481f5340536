"""The API client against a real kube-apiserver: verbs, typed errors, patches, metrics."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from aimd.dev.controlplane import ControlPlane
from aimd.kube import errors
from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS, NAMESPACES


def config_map(name: str, namespace: str, **data: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace},
        "data": data,
    }


async def test_create_get_list_replace_patch_delete(kube: KubeClient, namespace: str) -> None:
    created = await kube.create(CONFIG_MAPS, config_map("one", namespace, a="1"))
    assert created["metadata"]["uid"]
    fetched = await kube.get(CONFIG_MAPS, "one", namespace)
    assert fetched["data"] == {"a": "1"}

    listed = await kube.list(CONFIG_MAPS, namespace)
    assert [o["metadata"]["name"] for o in listed["items"]] == ["one"]
    assert listed["metadata"]["resourceVersion"]

    fetched["data"]["b"] = "2"
    replaced = await kube.replace(CONFIG_MAPS, fetched)
    assert replaced["data"] == {"a": "1", "b": "2"}

    merged = await kube.patch(CONFIG_MAPS, "one", {"data": {"c": "3"}}, namespace)
    assert merged["data"] == {"a": "1", "b": "2", "c": "3"}
    json_patched = await kube.patch(
        CONFIG_MAPS, "one", [{"op": "remove", "path": "/data/a"}], namespace, patch_type="json"
    )
    assert json_patched["data"] == {"b": "2", "c": "3"}
    applied = await kube.patch(
        CONFIG_MAPS,
        "one",
        config_map("one", namespace, d="4"),
        namespace,
        patch_type="apply",
        field_manager="aimd-test",
        force=True,
    )
    assert applied["data"]["d"] == "4"

    labelled = await kube.list(CONFIG_MAPS, namespace, label_selector="missing=yes")
    assert labelled["items"] == []

    assert await kube.delete(CONFIG_MAPS, "one", namespace) is None
    with pytest.raises(errors.NotFound) as caught:
        await kube.get(CONFIG_MAPS, "one", namespace)
    assert caught.value.status == 404
    assert caught.value.reason == "NotFound"
    with pytest.raises(errors.NotFound):
        await kube.delete(CONFIG_MAPS, "one", namespace)


async def test_typed_errors_come_from_status_objects(kube: KubeClient, namespace: str) -> None:
    await kube.create(CONFIG_MAPS, config_map("dup", namespace))
    with pytest.raises(errors.AlreadyExists) as exists:
        await kube.create(CONFIG_MAPS, config_map("dup", namespace))
    assert exists.value.status == 409
    assert exists.value.details
    assert exists.value.details["name"] == "dup"

    current = await kube.get(CONFIG_MAPS, "dup", namespace)
    stale = dict(current, metadata=dict(current["metadata"], resourceVersion="1"))
    with pytest.raises(errors.Conflict) as conflict:
        await kube.replace(CONFIG_MAPS, stale)
    assert conflict.value.reason == "Conflict"
    assert not isinstance(conflict.value, errors.AlreadyExists)

    with pytest.raises(errors.Invalid) as invalid:
        await kube.create(CONFIG_MAPS, config_map("Not_A_Valid_Name", namespace))
    assert invalid.value.status == 422
    assert invalid.value.causes

    with pytest.raises(errors.Conflict):
        await kube.delete(
            CONFIG_MAPS, "dup", namespace, preconditions={"uid": "00000000-0000-0000-0000-0"}
        )

    with pytest.raises(errors.BadRequest):
        await kube.list(CONFIG_MAPS, namespace, label_selector="!!!")


async def test_forbidden_and_unauthorized(control_plane: ControlPlane, namespace: str) -> None:
    import yaml

    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"][0]["user"]["token"] = "not-a-valid-token"
    bad = control_plane.workdir / "bad.kubeconfig"
    bad.write_text(yaml.safe_dump(config))
    async with await KubeClient.from_kubeconfig(str(bad)) as client:
        with pytest.raises(errors.Unauthorized):
            await client.get(NAMESPACES, namespace)


async def test_requests_are_counted_by_code_method_and_host(
    kube: KubeClient, namespace: str
) -> None:
    def count(code: str, method: str) -> float:
        value = REGISTRY.get_sample_value(
            "rest_client_requests_total", {"code": code, "method": method, "host": kube.host}
        )
        return value or 0.0

    before = count("404", "GET")
    with pytest.raises(errors.NotFound):
        await kube.get(CONFIG_MAPS, "absent", namespace)
    assert count("404", "GET") == before + 1


async def test_raw_request_and_cluster_scoped_get(kube: KubeClient, namespace: str) -> None:
    version = await kube.request("GET", "/version")
    assert "gitVersion" in version
    ns = await kube.get(NAMESPACES, namespace)
    assert ns["metadata"]["name"] == namespace
