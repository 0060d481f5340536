"""Authentication against the real API server: service-account tokens (rotated) and exec plugins."""

from __future__ import annotations

import contextlib
import json
import shutil
import stat
from pathlib import Path

import pytest
import yaml

from aimd.dev.controlplane import ControlPlane
from aimd.kube import errors
from aimd.kube.auth import ServiceAccountCredentials
from aimd.kube.client import KubeClient
from aimd.kube.resources import NAMESPACES, SERVICE_ACCOUNTS


async def service_account_token(kube: KubeClient, namespace: str, name: str) -> str:
    with contextlib.suppress(errors.AlreadyExists):
        await kube.create(
            SERVICE_ACCOUNTS,
            {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": name}},
            namespace,
        )
    review = await kube.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace, name, "token"),
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    token: str = review["status"]["token"]
    return token


async def test_in_cluster_token_is_reread_when_it_rotates(
    kube: KubeClient,
    control_plane: ControlPlane,
    namespace: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    monkeypatch.setenv("KUBERNETES_SERVICE_PORT", str(control_plane.apiserver_port))
    shutil.copy(control_plane.ca_file, tmp_path / "ca.crt")
    token_file = tmp_path / "token"
    token_file.write_text(await service_account_token(kube, namespace, "robot") + "\n")

    async with KubeClient(ServiceAccountCredentials.load(tmp_path)) as client:
        # Authenticated as the service account, which has no RBAC: 403, not 401.
        with pytest.raises(errors.Forbidden) as forbidden:
            await client.get(NAMESPACES, namespace)
        assert f"system:serviceaccount:{namespace}:robot" in forbidden.value.message

        token_file.write_text("garbage")  # a rotation the kubelet got wrong
        with pytest.raises(errors.Unauthorized):
            await client.get(NAMESPACES, namespace)

        token_file.write_text(await service_account_token(kube, namespace, "robot-2"))
        with pytest.raises(errors.Forbidden) as again:
            await client.get(NAMESPACES, namespace)
        assert f"system:serviceaccount:{namespace}:robot-2" in again.value.message


async def test_auto_prefers_in_cluster_only_without_a_kubeconfig(
    control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "127.0.0.1")
    async with await KubeClient.auto(str(control_plane.kubeconfig)) as client:
        assert client.server == control_plane.server
        assert (await client.request("GET", "/version"))["gitVersion"]


async def test_exec_plugin_credentials(
    control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    plugin = tmp_path / "credential-plugin"
    credential = {
        "apiVersion": "client.authentication.k8s.io/v1",
        "kind": "ExecCredential",
        "status": {"token": control_plane.token},
    }
    plugin.write_text(f"#!/bin/sh\ncat <<'EOF'\n{json.dumps(credential)}\nEOF\n")
    plugin.chmod(plugin.stat().st_mode | stat.S_IXUSR)
    config = yaml.safe_load(control_plane.kubeconfig.read_text())
    config["users"][0]["user"] = {
        "exec": {
            "apiVersion": "client.authentication.k8s.io/v1",
            "command": str(plugin),
            "interactiveMode": "Never",
        }
    }
    kubeconfig = tmp_path / "exec.kubeconfig"
    kubeconfig.write_text(yaml.safe_dump(config))
    async with await KubeClient.from_kubeconfig(str(kubeconfig)) as client:
        ns = await client.get(NAMESPACES, namespace)
        assert ns["metadata"]["name"] == namespace
