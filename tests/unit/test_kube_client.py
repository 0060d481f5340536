"""Client behaviour that needs no API server: retries when nothing answers, URL building."""

from __future__ import annotations

import socket
from dataclasses import dataclass

import aiohttp
import pytest
from prometheus_client import REGISTRY

from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS, NAMESPACES


@dataclass
class NoAuth:
    host: str
    ssl: bool = False
    server_hostname: str | None = None
    proxy: str | None = None

    async def authorization(self) -> str | None:
        return None

    async def invalidate(self) -> None:
        return None


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def test_connection_refused_is_retried_then_raised_and_counted() -> None:
    client = KubeClient(
        NoAuth(f"http://127.0.0.1:{closed_port()}"), max_attempts=3, retry_base=0.001
    )
    labels = {"code": "<error>", "method": "POST", "host": client.host}
    before = REGISTRY.get_sample_value("rest_client_requests_total", labels) or 0.0
    async with client:
        with pytest.raises(aiohttp.ClientConnectorError):
            # Even a POST: a refused connection means nothing was sent.
            await client.create(CONFIG_MAPS, {"metadata": {"name": "x", "namespace": "ns"}})
    assert REGISTRY.get_sample_value("rest_client_requests_total", labels) == before + 3


def test_resource_paths() -> None:
    assert CONFIG_MAPS.path("ns", "x", "status") == "/api/v1/namespaces/ns/configmaps/x/status"
    assert CONFIG_MAPS.path() == "/api/v1/configmaps"
    assert NAMESPACES.path(None, "ns") == "/api/v1/namespaces/ns"
