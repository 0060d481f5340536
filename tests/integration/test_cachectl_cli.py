"""`aimd cache ls`, `why` and `retry`, and the same as `kubectl aimd`, against a real API server,
as a person runs them."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import shutil
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient

PLUGIN = Path(sys.executable).parent / "kubectl-aimd"


async def aimd(control_plane: ControlPlane, *args: str) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        *args,
        "--kubeconfig",
        str(control_plane.kubeconfig),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


async def test_ls_why_and_retry(
    kube: KubeClient, namespace: str, control_plane: ControlPlane
) -> None:
    body = {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": "llama"},
        "spec": {"sourceUri": "hf://org/llama"},
    }
    await kube.create(kinds.MODEL_CACHES, body, namespace)
    status = {
        "status": "Failed",
        "failures": 1,
        "lastDownloadFailure": {
            "reason": "SourceNotFound",
            "message": "hf://org/llama does not exist",
        },
    }
    await kube.patch(
        kinds.MODEL_CACHES, "llama", {"status": status}, namespace, subresource="status"
    )

    code, out, _ = await aimd(control_plane, "cache", "ls", "-n", namespace)
    assert code == 0
    assert out.splitlines()[1].split()[:3] == ["llama", "Failed", "hf://org/llama"]

    code, out, _ = await aimd(control_plane, "cache", "why", "llama", "-n", namespace)
    assert code == 0
    assert "SourceNotFound" in out

    code, out, _ = await aimd(control_plane, "cache", "retry", "llama", "-n", namespace)
    assert (code, out.strip()) == (0, "llama retries now")
    annotations = (await kube.get(kinds.MODEL_CACHES, "llama", namespace))["metadata"][
        "annotations"
    ]
    assert annotations[kinds.ANNOTATION_RETRY]

    code, _, err = await aimd(control_plane, "cache", "why", "missing", "-n", namespace)
    assert code == 1
    assert "not found" in err


async def run(*argv: str, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        *argv, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    out, err = await process.communicate()
    return process.returncode or 0, out.decode(), err.decode()


@pytest.fixture
def other_namespace(control_plane: ControlPlane) -> Iterator[str]:
    name = f"kubectl-aimd-other-{secrets.token_hex(3)}"
    control_plane.api(
        "POST",
        "/api/v1/namespaces",
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}},
    )
    yield name
    control_plane.api("DELETE", f"/api/v1/namespaces/{name}")


def two_context_kubeconfig(
    control_plane: ControlPlane, path: Path, first: str, second: str
) -> Path:
    """The test cluster's kubeconfig with two contexts, each with its namespace; the first is
    current."""
    config: dict[str, Any] = yaml.safe_load(control_plane.kubeconfig.read_text())
    (context,) = config["contexts"]
    config["contexts"] = [
        {"name": "first", "context": {**context["context"], "namespace": first}},
        {"name": "second", "context": {**context["context"], "namespace": second}},
    ]
    config["current-context"] = "first"
    path.write_text(yaml.safe_dump(config))
    return path


async def model_cache(kube: KubeClient, namespace: str, name: str, status: dict[str, Any]) -> None:
    body = {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": name},
        "spec": {"sourceUri": f"hf://org/{name}"},
    }
    await kube.create(kinds.MODEL_CACHES, body, namespace)
    await kube.patch(kinds.MODEL_CACHES, name, {"status": status}, namespace, subresource="status")


async def test_kubectl_aimd_follows_the_kubeconfig_context_and_namespace(
    kube: KubeClient,
    namespace: str,
    other_namespace: str,
    control_plane: ControlPlane,
    tmp_path: Path,
) -> None:
    await model_cache(
        kube,
        namespace,
        "llama",
        {"status": "Available", "sizeBytes": 16 * 1024**3, "progress": {"percentage": 100}},
    )
    await model_cache(
        kube, other_namespace, "qwen", {"status": "Progressing", "progress": {"percentage": 40}}
    )
    config = two_context_kubeconfig(control_plane, tmp_path / "config", namespace, other_namespace)
    env = {key: value for key, value in os.environ.items() if not key.startswith("KUBERNETES_")}
    env.update(KUBECONFIG=str(config), HOME=str(tmp_path))
    assert PLUGIN.exists(), "installing aimd installs the kubectl plugin"

    code, out, err = await run(str(PLUGIN), "ls", env=env)
    assert code == 0, err
    header, line = out.splitlines()
    assert header.split()[:5] == ["NAME", "STATUS", "SOURCE", "SIZE", "PROGRESS"]
    assert line.split()[:5] == ["llama", "Available", "hf://org/llama", "16.0GiB", "100%"]

    code, out, err = await run(str(PLUGIN), "ls", "--context", "second", "-o", "wide", env=env)
    assert code == 0, err
    header, line = out.splitlines()
    assert "PVC" in header.split()
    assert line.split()[:5] == ["qwen", "Progressing", "hf://org/qwen", "-", "40%"]

    code, out, err = await run(str(PLUGIN), "-n", other_namespace, "why", "qwen", env=env)
    assert code == 0, err
    assert "does not exist yet" in out

    code, out, err = await run(str(PLUGIN), "ls", "-A", "-o", "json", env=env)
    assert code == 0, err
    ours = {
        (item["namespace"], item["name"]): item
        for item in json.loads(out)["items"]
        if item["namespace"] in (namespace, other_namespace)
    }
    assert set(ours) == {(namespace, "llama"), (other_namespace, "qwen")}
    assert ours[namespace, "llama"]["sizeBytes"] == 16 * 1024**3

    code, out, err = await run(str(PLUGIN), "ls", "-A", env=env)
    assert code == 0, err
    assert out.splitlines()[0].split()[:2] == ["NAMESPACE", "NAME"]
    assert [namespace, "llama"] in [line.split()[:2] for line in out.splitlines()]

    code, out, err = await run(
        str(PLUGIN), "why", "qwen", "--context", "second", "-o", "yaml", env=env
    )
    assert code == 0, err
    assert yaml.safe_load(out)["namespace"] == other_namespace

    code, out, err = await run(str(PLUGIN), "retry", "qwen", "--context=second", "-o=json", env=env)
    assert code == 0, err
    assert json.loads(out)["metadata"]["annotations"][kinds.ANNOTATION_RETRY]

    code, _, err = await run(str(PLUGIN), "ls", "--context", "third", env=env)
    assert code == 1
    assert "third" in err

    kubectl = shutil.which("kubectl")
    if kubectl is not None:  # kubectl finds the plugin on PATH and hands it its arguments
        env["PATH"] = f"{PLUGIN.parent}{os.pathsep}{env.get('PATH', '')}"
        code, out, err = await run(kubectl, "aimd", "ls", "--context", "second", env=env)
        assert code == 0, err
        assert out.splitlines()[1].split()[0] == "qwen"
