"""/metrics behind the API server's authentication (kubebuilder v4): a Manager run as aimd's own
ServiceAccount with the shipped roles serves HTTPS; the real API server's TokenReview and
SubjectAccessReview decide who gets the metrics: nobody without a token (401), a valid token
without the shipped aimd-metrics-reader role (403), a token with it (200).
"""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import ssl
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from aimd.dev.controlplane import ControlPlane
from aimd.kube.client import KubeClient
from aimd.kube.errors import NotFound
from aimd.kube.resources import SERVICE_ACCOUNTS
from aimd.runtime import Manager
from aimd.runtime.metrics_auth import self_signed
from aimd.settings import Settings
from tests.integration import controller_identity as identity
from tests.support import RecordingClient, eventually

READER_ROLE = "metrics_reader_role.yaml"
UNVERIFIED = False  # aimd's certificate is self-signed: these clients check who answers elsewhere


class CountingClient(RecordingClient):
    """Counts the reviews the metrics server asks the API server for."""

    @property
    def reviews(self) -> int:
        return self.sent_to("/tokenreviews")


async def token_of(kube: KubeClient, namespace: str, account: str) -> str:
    await kube.create(SERVICE_ACCOUNTS, {"metadata": {"name": account}}, namespace)
    issued = await kube.request(
        "POST",
        SERVICE_ACCOUNTS.path(namespace, account, "token"),
        body={"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest", "spec": {}},
    )
    token: str = issued["status"]["token"]
    return token


@contextlib.asynccontextmanager
async def reader_bound_to(kube: KubeClient, namespace: str, account: str) -> AsyncIterator[None]:
    """The shipped aimd-metrics-reader ClusterRole (under this run's name), bound to one
    ServiceAccount, as an admin binds it to Prometheus."""
    role = identity.shipped_role(READER_ROLE)
    name = f"{role['metadata']['name']}-{secrets.token_hex(3)}"
    await kube.create(identity.CLUSTER_ROLES, {**role, "metadata": {"name": name}})
    binding = {
        "metadata": {"name": name},
        "roleRef": {"apiGroup": identity.RBAC, "kind": "ClusterRole", "name": name},
        "subjects": [{"kind": "ServiceAccount", "name": account, "namespace": namespace}],
    }
    await kube.create(identity.CLUSTER_ROLE_BINDINGS, binding)
    try:
        yield
    finally:
        for resource in (identity.CLUSTER_ROLE_BINDINGS, identity.CLUSTER_ROLES):
            with contextlib.suppress(NotFound):
                await kube.delete(resource, name)


@contextlib.asynccontextmanager
async def manager_as_aimd(
    control_plane: ControlPlane, **overrides: Any
) -> AsyncIterator[tuple[Manager, CountingClient]]:
    """A Manager with leader election and the metrics server, as aimd's ServiceAccount."""
    kubeconfig = await identity.controller_kubeconfig(str(control_plane.kubeconfig))
    settings = Settings(
        kubeconfig=kubeconfig,
        metrics_bind_address="127.0.0.1:0",
        health_probe_bind_address="127.0.0.1:0",
        leader_elect=True,
        leader_election_namespace=identity.NAMESPACE,
        leader_election_id=f"metrics-{secrets.token_hex(3)}",
        **overrides,
    )
    client = await CountingClient.from_kubeconfig(kubeconfig)
    manager = Manager(client, settings, handle_signals=False)
    task = asyncio.create_task(manager.run())

    async def listening() -> bool:
        return manager.metrics_port is not None

    try:
        await eventually(listening, what="the metrics server")
        yield manager, client
    finally:
        manager.stop()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 30)
        await client.close()


async def scrape(
    port: int | None,
    token: str | None,
    tls: ssl.SSLContext | bool = UNVERIFIED,
    scheme: str = "https",
    host: str = "127.0.0.1",
) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    async with (
        aiohttp.ClientSession() as http,
        http.get(f"{scheme}://{host}:{port}/metrics", headers=headers, ssl=tls) as response,
    ):
        return response.status, await response.text()


async def test_only_callers_allowed_to_get_metrics_get_them(
    kube: KubeClient, control_plane: ControlPlane, namespace: str
) -> None:
    stranger = await token_of(kube, namespace, "stranger")
    prometheus = await token_of(kube, namespace, "prometheus")
    async with (
        reader_bound_to(kube, namespace, "prometheus"),
        manager_as_aimd(control_plane) as (manager, client),
    ):

        async def leading() -> bool:
            return manager.is_leader

        # Leader election, as deployed (get, create and update its Lease) as aimd's identity.
        await eventually(leading, what="the manager to lead")
        port = manager.metrics_port
        assert (await scrape(port, None))[0] == 401
        assert (await scrape(port, "not-a-token"))[0] == 401
        assert (await scrape(port, stranger))[0] == 403
        status, body = await scrape(port, prometheus)
        assert status == 200
        assert "leader_election_master_status" in body

        reviews = client.reviews
        for _ in range(3):
            assert (await scrape(port, prometheus))[0] == 200
            assert (await scrape(port, stranger))[0] == 403
        assert client.reviews == reviews, "each caller's decision is remembered for a while"

        with pytest.raises(aiohttp.ClientError):
            await scrape(port, prometheus, scheme="http")


async def test_a_given_certificate_is_served(
    kube: KubeClient, control_plane: ControlPlane, namespace: str, tmp_path: Path
) -> None:
    cert, key = self_signed("aimd-metrics.example")
    (tmp_path / "c.pem").write_bytes(cert)
    (tmp_path / "k.pem").write_bytes(key)
    prometheus = await token_of(kube, namespace, "prometheus")
    trusting = ssl.create_default_context(cafile=str(tmp_path / "c.pem"))
    async with (
        reader_bound_to(kube, namespace, "prometheus"),
        manager_as_aimd(
            control_plane,
            metrics_cert_path=str(tmp_path),
            metrics_cert_name="c.pem",
            metrics_cert_key="k.pem",
        ) as (manager, _),
    ):
        status, _ = await scrape(manager.metrics_port, prometheus, trusting, host="localhost")
        assert status == 200
