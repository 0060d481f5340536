"""Issue 11's holes, end to end on the real API server: a person who may create AIM objects, and
nothing else, tries to reach further through a model cache.

alice is bound to a Role that may create and read AIM objects in her namespace, and is
impersonated by the admin client (``Impersonate-User``), so the API server judges every request
she makes. aimd runs in-process as its own ServiceAccount with the shipped roles, and the local
kubelet runs its Jobs' commands (resolving ``secretKeyRef`` as a kubelet would). A capture server
plays the host alice would like the namespace's Secret sent to.

Where the admission policy is not installed, the model-cache reconciler is the backstop: it calls
aimd/caching/policy.py and aimd/caching/credentials.py itself. Before that, the capture server
received the Secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from aimd.api import kinds
from aimd.api.types import ModelCache, view
from aimd.caching import builders, names
from aimd.caching import credentials as consent
from aimd.dev.controlplane import ControlPlane
from aimd.dev.kubelet import LocalKubelet
from aimd.dev.localhub import LocalHub, serve_hub
from aimd.kube.client import KubeClient
from aimd.kube.errors import Forbidden, Invalid
from aimd.kube.resources import (
    JOBS,
    NAMESPACES,
    PERSISTENT_VOLUME_CLAIMS,
    ROLE_BINDINGS,
    ROLES,
    SECRETS,
    SERVICE_ACCOUNTS,
)
from aimd.settings import DEFAULT_ALLOWED_ENDPOINTS
from tests.integration.controller_identity import controller_kubeconfig
from tests.integration.test_caching_harness import IMAGE, start_controller, status_of
from tests.integration.test_security_admission import (
    SELECTOR,
    config_map_data,
    installed_policy,
    policy_active,
)
from tests.support import eventually
from tests.unit.test_caching_policy import CONFIG

PASSWORD = f"s3cr3t-{secrets.token_hex(4)}"
Object = dict[str, Any]


class Impersonating(KubeClient):
    """The admin's client, acting as ``user`` (who must then be allowed everything it does)."""

    user = "alice"

    async def _headers(self, content_type: str | None) -> dict[str, str]:
        headers = await super()._headers(content_type)
        headers["Impersonate-User"] = self.user
        return headers


@dataclass
class Capture:
    """A host that records every Authorization header it is sent."""

    url: str = ""
    seen: list[str] = field(default_factory=list)

    def saw_secret(self) -> bool:
        return any(PASSWORD in header for header in self.seen)


@contextlib.asynccontextmanager
async def capture_server(unused_port: int) -> AsyncIterator[Capture]:
    capture = Capture()

    async def anything(request: web.Request) -> web.Response:
        capture.seen.append(request.headers.get("Authorization", ""))
        return web.json_response({"error": "not here"}, status=404)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", anything)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", unused_port).start()
    capture.url = f"http://127.0.0.1:{unused_port}"
    try:
        yield capture
    finally:
        await runner.cleanup()


@pytest.fixture
async def alice(kube: KubeClient, control_plane: ControlPlane, namespace: str) -> AsyncIterator[
    KubeClient
]:  # fmt: skip
    """alice may create and read the AIM kinds in ``namespace``, nothing else; the namespace
    holds a Secret she may not read."""
    role = {
        "metadata": {"name": "aim-editor"},
        "rules": [
            {
                "apiGroups": [kinds.GROUP],
                "resources": [r.plural for r in kinds.ALL_KINDS if r.namespaced],
                "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
            }
        ],
    }
    await kube.create(ROLES, role, namespace)
    await kube.create(
        ROLE_BINDINGS,
        {
            "metadata": {"name": "alice-aim-editor"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                        "name": "aim-editor"},
            "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User",
                          "name": "alice"}],
        },
        namespace,
    )  # fmt: skip
    await kube.create(
        SECRETS, {"metadata": {"name": "db"}, "stringData": {"password": PASSWORD}}, namespace
    )
    client = await Impersonating.from_kubeconfig(str(control_plane.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


def model_cache(env: list[Object], **spec: Any) -> Object:
    return {
        "apiVersion": kinds.API_VERSION,
        "kind": "AIMModelCache",
        "metadata": {"name": "mine"},
        "spec": {"sourceUri": "hf://org/model", "size": "1Gi", "env": env, **spec},
    }


def exfiltrating(endpoint: str) -> list[Object]:
    """The namespace's Secret as the hub token, and the hub where alice listens."""
    return [
        {"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}},
        {"name": "HF_ENDPOINT", "value": endpoint},
    ]


@contextlib.asynccontextmanager
async def kubelet(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, root: Path
) -> AsyncIterator[LocalKubelet]:
    node = LocalKubelet(
        kube, root, control_plane.server, ca_file=str(control_plane.ca_file), namespace=namespace
    )
    task = asyncio.create_task(node.run())
    try:
        yield node
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def condition_reason(kube: KubeClient, namespace: str, name: str) -> str | None:
    mc = await kube.get(kinds.MODEL_CACHES, name, namespace)
    for condition in (mc.get("status") or {}).get("conditions") or ():
        if condition["type"] == "Ready":
            return str(condition["reason"])
    return None


async def test_alice_cannot_read_the_secret_herself(alice: KubeClient, namespace: str) -> None:
    """What the rest is measured against: she may not get it, nor run a pod."""
    with pytest.raises(Forbidden):
        await alice.get(SECRETS, "db", namespace)
    with pytest.raises(Forbidden):
        await alice.create(JOBS, {"metadata": {"name": "x"}, "spec": {}}, namespace)
    await alice.list(kinds.MODEL_CACHES, namespace)


async def test_the_admission_policy_refuses_her_endpoint_and_her_image(
    kube: KubeClient, alice: KubeClient, namespace: str, unused_tcp_port: int
) -> None:
    run = await installed_policy(kube, config_map_data(CONFIG))
    async with capture_server(unused_tcp_port) as capture:
        await kube.patch(NAMESPACES, namespace, {"metadata": {"labels": {SELECTOR: run}}})
        await eventually(lambda: policy_active(kube, namespace), what="the policy here")
        with pytest.raises(Invalid, match=rf"spec\.env\[1\]\.value: {capture.url} is not"):
            await alice.create(
                kinds.MODEL_CACHES, model_cache(exfiltrating(capture.url)), namespace
            )
        with pytest.raises(Invalid, match=r"spec\.downloadImage: evil\.example/aimd:1 is not"):
            await alice.create(
                kinds.MODEL_CACHES, model_cache([], downloadImage="evil.example/aimd:1"), namespace
            )
        from_secret = [
            {"name": "HF_ENDPOINT", "valueFrom": {"secretKeyRef": {"name": "db", "key": "x"}}}
        ]
        with pytest.raises(Invalid, match=r"spec\.env\[0\]\.valueFrom: HF_ENDPOINT must be"):
            await alice.create(kinds.MODEL_CACHES, model_cache(from_secret), namespace)
        assert not (await kube.list(kinds.MODEL_CACHES, namespace))["items"]


async def test_without_the_admission_policy_aimd_refuses_her_endpoint_itself(
    kube: KubeClient,
    alice: KubeClient,
    control_plane: ControlPlane,
    namespace: str,
    unused_tcp_port: int,
    tmp_path: Path,
) -> None:
    """Failed with NotAllowed naming the field, and nothing created for it. Open today: the
    Job runs with the Secret mounted and sends it to alice's host."""
    running = start_controller(str(control_plane.kubeconfig))
    try:
        async with (
            capture_server(unused_tcp_port) as capture,
            kubelet(kube, control_plane, namespace, tmp_path),
        ):
            await alice.create(
                kinds.MODEL_CACHES, model_cache(exfiltrating(capture.url)), namespace
            )

            async def decided() -> bool:
                return (
                    capture.saw_secret()
                    or status_of(await kube.get(kinds.MODEL_CACHES, "mine", namespace)) == "Failed"
                )

            await eventually(decided, what="aimd to refuse the cache, or the Secret to leak")
            assert not capture.saw_secret(), "the namespace's Secret reached alice's host"
            assert await condition_reason(kube, namespace, "mine") == "NotAllowed"
            mc = await kube.get(kinds.MODEL_CACHES, "mine", namespace)
            assert "spec.env[1].value" in mc["status"]["conditions"][0]["message"]
            assert not (await kube.list(JOBS, namespace))["items"]
    finally:
        await running.stop()


async def test_without_the_admission_policy_aimd_refuses_a_foreign_image_itself(
    kube: KubeClient, alice: KubeClient, control_plane: ControlPlane, namespace: str
) -> None:
    running = start_controller(str(control_plane.kubeconfig))
    try:
        await alice.create(
            kinds.MODEL_CACHES, model_cache([], downloadImage="evil.example/aimd:1"), namespace
        )

        async def decided() -> bool:
            failed = status_of(await kube.get(kinds.MODEL_CACHES, "mine", namespace)) == "Failed"
            return failed or bool((await kube.list(JOBS, namespace))["items"])

        await eventually(decided, what="aimd to refuse the cache, or to run the image")
        assert not (await kube.list(JOBS, namespace))["items"], "aimd ran alice's image"
        assert await condition_reason(kube, namespace, "mine") == "NotAllowed"
    finally:
        await running.stop()


async def test_with_consent_required_her_cache_cannot_use_a_secret_nobody_consented_to(
    kube: KubeClient,
    alice: KubeClient,
    control_plane: ControlPlane,
    namespace: str,
    unused_tcp_port: int,
    tmp_path: Path,
) -> None:
    """The endpoint is allowed (the admin's mirror); the Secret is not one the namespace lets
    downloads read: the Job references no Secret, the download is refused it, and the cache
    says so. Open today: the kubelet mounts it and the download sends it."""
    async with capture_server(unused_tcp_port) as capture:
        running = start_controller(
            str(control_plane.kubeconfig),
            require_secret_consent=True,
            allowed_endpoints=(*DEFAULT_ALLOWED_ENDPOINTS, capture.url),
        )
        try:
            async with kubelet(kube, control_plane, namespace, tmp_path):
                body = model_cache(exfiltrating(capture.url))
                await alice.create(kinds.MODEL_CACHES, body, namespace)

                async def decided() -> bool:
                    cache = await kube.get(kinds.MODEL_CACHES, "mine", namespace)
                    return capture.saw_secret() or status_of(cache) == "Failed"

                await eventually(decided, timeout=120, what="a refusal, or the Secret to leak")
                assert not capture.saw_secret(), "the namespace's Secret reached the download"
                assert await condition_reason(kube, namespace, "mine") == "SecretNotAllowed"
                for job in (await kube.list(JOBS, namespace))["items"]:
                    assert "secretKeyRef" not in json.dumps(job["spec"])
        finally:
            await running.stop()


@pytest.fixture
async def hub(unused_tcp_port: int) -> AsyncIterator[LocalHub]:
    async with serve_hub(unused_tcp_port) as local:
        local.token = "hf_good"
        local.add_model("org/model", size_mib=1)
        yield local


async def run_download_as_aimd_builds_it(
    kube: KubeClient,
    control_plane: ControlPlane,
    namespace: str,
    root: Path,
    env: list[Object],
    hub_url: str,
) -> tuple[Object, Object]:
    """What the model-cache reconciler does with consent required, done here step by step as
    aimd's own ServiceAccount: the downloader's ServiceAccount, Role and RoleBindings, a PVC and
    the download Job from the builders; then the local kubelet runs the Job. Returns the Job as
    created and the cache's status after the attempt."""
    mc = view(await kube.create(kinds.MODEL_CACHES, model_cache(env), namespace), ModelCache)
    binding = consent.consent_role_binding(mc, require_consent=True)
    assert binding is not None
    claim = builders.persistent_volume_claim(
        mc, names.pvc_name(mc["metadata"]["name"], mc["metadata"]["uid"]), 1 << 30
    )
    async with await KubeClient.from_kubeconfig(
        await controller_kubeconfig(str(control_plane.kubeconfig))
    ) as aimd:
        for resource, body in (
            (SERVICE_ACCOUNTS, builders.service_account(mc)),
            (ROLES, builders.role(mc)),
            (ROLE_BINDINGS, builders.role_binding(mc)),
            (ROLE_BINDINGS, binding),
            (PERSISTENT_VOLUME_CLAIMS, claim),
        ):
            await aimd.create(resource, body)
        job_name = names.download_job_name(mc["metadata"]["name"], "uid", 0)
        job = await aimd.create(
            JOBS,
            builders.download_job(
                mc,
                job_name,
                claim["metadata"]["name"],
                builders.Downloads(IMAGE, require_secret_consent=True),
            ),
        )
    node = LocalKubelet(
        kube,
        root,
        control_plane.server,
        ca_file=str(control_plane.ca_file),
        namespace=namespace,
        extra_env={"HF_ENDPOINT": hub_url},
    )
    await node.bind(await kube.get(PERSISTENT_VOLUME_CLAIMS, claim["metadata"]["name"], namespace))
    await node.run_job(job)
    cache = await kube.get(kinds.MODEL_CACHES, mc["metadata"]["name"], namespace)
    return job, cache.get("status") or {}


async def consent_to(kube: KubeClient, namespace: str, *secret_names: str) -> None:
    """What a person who may read those Secrets does to let downloads use them."""
    rule = {"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"],
            "resourceNames": list(secret_names)}  # fmt: skip
    await kube.create(
        ROLES, {"metadata": {"name": consent.CONSENT_ROLE}, "rules": [rule]}, namespace
    )


async def test_a_consented_secret_reaches_the_download_and_no_job_mounts_it(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, hub: LocalHub, tmp_path: Path
) -> None:
    await kube.create(
        SECRETS, {"metadata": {"name": "hf"}, "stringData": {"token": "hf_good"}}, namespace
    )
    await consent_to(kube, namespace, "hf")
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    job, status = await run_download_as_aimd_builds_it(
        kube, control_plane, namespace, tmp_path, env, hub.url
    )
    assert "secretKeyRef" not in json.dumps(job["spec"])
    assert status.get("progress", {}).get("percentage") == 100, status
    assert "lastDownloadFailure" not in status


async def test_a_secret_nobody_consented_to_is_refused_and_reported(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, hub: LocalHub, tmp_path: Path
) -> None:
    await kube.create(
        SECRETS, {"metadata": {"name": "db"}, "stringData": {"password": PASSWORD}}, namespace
    )
    await consent_to(kube, namespace, "hf")
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "db", "key": "password"}}}]
    job, status = await run_download_as_aimd_builds_it(
        kube, control_plane, namespace, tmp_path, env, hub.url
    )
    assert "secretKeyRef" not in json.dumps(job["spec"])
    failure = status["lastDownloadFailure"]
    assert failure["reason"] == "SecretNotAllowed"
    assert (
        f"kubectl -n {namespace} create role aimd-download-credentials --verb=get "
        "--resource=secrets --resource-name=db"
    ) in failure["message"]
    assert PASSWORD not in json.dumps(status)
    stored = await kube.get(JOBS, job["metadata"]["name"], namespace)
    assert any(c["type"] == "Failed" for c in stored["status"]["conditions"])


async def test_a_consented_secret_that_is_missing_says_so(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, hub: LocalHub, tmp_path: Path
) -> None:
    await consent_to(kube, namespace, "hf")
    env = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": {"name": "hf", "key": "token"}}}]
    _, status = await run_download_as_aimd_builds_it(
        kube, control_plane, namespace, tmp_path, env, hub.url
    )
    assert status["lastDownloadFailure"]["reason"] == "SecretNotFound"
    assert "Secret hf (for HF_TOKEN) does not exist" in status["lastDownloadFailure"]["message"]
