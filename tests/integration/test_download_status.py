"""What `aimd download` and `aimd probe` report into a real AIMModelCache on the test control
plane, with only the rights the download Job gets: a ServiceAccount token whose Role may `get`
and `patch` that one cache's `status`, nothing else."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from aimd.api import kinds
from aimd.dev.controlplane import ControlPlane
from aimd.dev.localhub import DEMO_COMMIT as COMMIT
from aimd.dev.localhub import LocalHub, serve_hub
from aimd.download.reasons import EXIT_CODES, Reason
from aimd.kube.client import KubeClient
from aimd.kube.resources import ROLE_BINDINGS, ROLES, SERVICE_ACCOUNTS
from tests.support import eventually


@pytest.fixture
async def hub(unused_tcp_port: int) -> AsyncIterator[LocalHub]:
    async with serve_hub(unused_tcp_port) as fake:
        yield fake


async def job_credentials(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, cache: str, tmp_path: Path
) -> Path:
    """A kubeconfig holding a token of a ServiceAccount that may only get and patch the status
    of the AIMModelCache ``cache``: what the controller gives the download Job."""
    account = f"download-{cache}"
    await kube.create(SERVICE_ACCOUNTS, {"metadata": {"name": account}}, namespace)
    rule = {
        "apiGroups": [kinds.GROUP],
        "resources": ["aimmodelcaches/status"],
        "resourceNames": [cache],
        "verbs": ["get", "patch"],
    }
    await kube.create(ROLES, {"metadata": {"name": account}, "rules": [rule]}, namespace)
    binding = {
        "metadata": {"name": account},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": account},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    await kube.create(ROLE_BINDINGS, binding, namespace)
    request = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}}
    issued = await kube.request(
        "POST", SERVICE_ACCOUNTS.path(namespace, account, "token"), body=request
    )
    config = json.loads(control_plane.kubeconfig.read_text())
    config["users"][0]["user"] = {"token": issued["status"]["token"]}
    path = tmp_path / "job-kubeconfig"
    await asyncio.to_thread(path.write_text, json.dumps(config))
    return path


async def create_cache(kube: KubeClient, namespace: str, uri: str) -> str:
    name = f"mc-{secrets.token_hex(3)}"
    body = {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": name},
        "spec": {"sourceUri": uri},
    }
    await kube.create(kinds.MODEL_CACHES, body, namespace)
    return name


async def aimd(
    *args: str, env: dict[str, str], hub_url: str
) -> tuple[asyncio.subprocess.Process, dict[str, str]]:
    full_env = {**os.environ, "HF_ENDPOINT": hub_url, **env}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        *args,
        "--termination-log",
        "",
        env=full_env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    return process, full_env


async def status_of(kube: KubeClient, namespace: str, name: str) -> dict[str, Any]:
    cache = await kube.get(kinds.MODEL_CACHES, name, namespace)
    status: dict[str, Any] = cache.get("status") or {}
    return status


async def test_download_reports_progress_revision_and_failure(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, hub: LocalHub, tmp_path: Path
) -> None:
    repo = hub.add_model(size_mib=8)
    total = sum(len(d) for d in repo.files.values())
    name = await create_cache(kube, namespace, "hf://org/model")
    kubeconfig = await job_credentials(kube, control_plane, namespace, name, tmp_path)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "AIMD_MODEL_CACHE_NAME": name,
        "AIMD_MODEL_CACHE_NAMESPACE": namespace,
    }
    hub.piece_delay = 0.02
    process, _ = await aimd(
        "download",
        "hf://org/model",
        "--target",
        str(tmp_path / "m"),
        "--chunk-size",
        "1",
        "--concurrency",
        "2",
        "--report-interval",
        "0.3",
        env=env,
        hub_url=hub.url,
    )

    async def midway() -> dict[str, Any] | None:
        status = await status_of(kube, namespace, name)
        progress = status.get("progress") or {}
        return status if 0 < progress.get("percentage", 0) < 100 else None

    seen = await eventually(midway, timeout=60, interval=0.1, what="progress between 0 and 100")
    assert seen["resolvedRevision"] == COMMIT
    assert seen["progress"]["totalBytes"] == total
    assert 0 < seen["progress"]["downloadedBytes"] < total
    assert seen["displayPercentage"] == f"{seen['progress']['percentage']}%"
    hub.piece_delay = 0
    out, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert json.loads(out.decode().splitlines()[-1])["result"] == "Succeeded"
    done = await status_of(kube, namespace, name)
    final = done["progress"]
    assert done["displayPercentage"] == "100%"
    assert final["percentage"] == 100
    assert final["downloadedBytes"] == total

    process, _ = await aimd(
        "download", "hf://org/missing", "--target", str(tmp_path / "x"), env=env, hub_url=hub.url
    )
    await process.communicate()
    assert process.returncode == EXIT_CODES[Reason.SOURCE_NOT_FOUND]
    failure = (await status_of(kube, namespace, name))["lastDownloadFailure"]
    assert failure["reason"] == "SourceNotFound"
    assert "org/missing" in failure["message"]
    assert failure["time"]


async def test_probe_reports_size_then_failure(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, hub: LocalHub, tmp_path: Path
) -> None:
    repo = hub.add_model()
    name = await create_cache(kube, namespace, "hf://org/model")
    kubeconfig = await job_credentials(kube, control_plane, namespace, name, tmp_path)
    env = {
        "KUBECONFIG": str(kubeconfig),
        "AIMD_MODEL_CACHE_NAME": name,
        "AIMD_MODEL_CACHE_NAMESPACE": namespace,
    }
    process, _ = await aimd("probe", "hf://org/model", env=env, hub_url=hub.url)
    await process.communicate()
    assert process.returncode == 0
    probe = (await status_of(kube, namespace, name))["probe"]
    assert probe["sizeBytes"] == sum(len(d) for d in repo.files.values())
    assert probe["revision"] == COMMIT
    assert probe["probedAt"]

    process, _ = await aimd("probe", "hf://org/gone", env=env, hub_url=hub.url)
    await process.communicate()
    assert process.returncode == EXIT_CODES[Reason.SOURCE_NOT_FOUND]
    probe = (await status_of(kube, namespace, name))["probe"]
    assert probe["reason"] == "SourceNotFound"
    assert "sizeBytes" not in probe
    assert "revision" not in probe


@pytest.mark.parametrize("broken", ["unreachable", "forbidden"])
async def test_reporting_failures_never_fail_the_download(
    kube: KubeClient,
    control_plane: ControlPlane,
    namespace: str,
    hub: LocalHub,
    tmp_path: Path,
    broken: str,
) -> None:
    hub.add_model()
    name = await create_cache(kube, namespace, "hf://org/model")
    if broken == "unreachable":
        config = json.loads(control_plane.kubeconfig.read_text())
        config["clusters"][0]["cluster"]["server"] = "https://127.0.0.1:9"
        kubeconfig = tmp_path / "nowhere"
        await asyncio.to_thread(kubeconfig.write_text, json.dumps(config))
        cache = name
    else:
        kubeconfig = await job_credentials(kube, control_plane, namespace, name, tmp_path)
        cache = "another-cache"
    env = {
        "KUBECONFIG": str(kubeconfig),
        "AIMD_MODEL_CACHE_NAME": cache,
        "AIMD_MODEL_CACHE_NAMESPACE": namespace,
    }
    process, _ = await aimd(
        "download", "hf://org/model", "--target", str(tmp_path / "m"), env=env, hub_url=hub.url
    )
    _, err = await process.communicate()
    assert process.returncode == 0, err.decode()
    assert "could not report" in err.decode()
