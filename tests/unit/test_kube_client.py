"""Client behaviour that needs no API server: retries when nothing answers, URL building."""

from __future__ import annotations

import socket

import aiohttp
import pytest
from prometheus_client import REGISTRY

from aimd.kube.client import KubeClient
from aimd.kube.errors import Conflict, NotFound, ServerError, TooManyRequests
from aimd.kube.resources import CONFIG_MAPS, NAMESPACES
from tests.support import NoAuth


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


def connector_error() -> aiohttp.ClientConnectorError:
    from aiohttp.client_reqrep import ConnectionKey

    key = ConnectionKey("h", 1, False, True, None, None, None)
    return aiohttp.ClientConnectorError(key, OSError(111, "refused"))


@pytest.mark.parametrize(
    ("method", "error", "retried"),
    [
        ("POST", TooManyRequests(429, retry_after=3.0), 3.0),
        ("POST", TooManyRequests(429, retry_after=999.0), 30.0),  # capped
        ("PATCH", TooManyRequests(429), "backoff"),
        ("GET", ServerError(503), "backoff"),
        ("PUT", ServerError(504), "backoff"),
        ("DELETE", ServerError(500), "backoff"),
        ("POST", ServerError(503), None),  # may have run: never twice
        ("PATCH", ServerError(500), None),
        ("GET", ServerError(501), None),  # not transient
        ("GET", NotFound(404), None),
        ("GET", Conflict(409), None),
        ("POST", "connect", "backoff"),  # nothing was sent
        ("GET", aiohttp.ServerDisconnectedError(), "backoff"),
        ("POST", aiohttp.ServerDisconnectedError(), None),
        ("GET", TimeoutError(), "backoff"),
        ("PATCH", TimeoutError(), None),
    ],
)
def test_retry_policy(method: str, error: BaseException | str, retried: float | str | None) -> None:
    client = KubeClient(NoAuth("http://127.0.0.1:1"), retry_base=0.1, retry_cap=5)
    failure = connector_error() if error == "connect" else error
    assert isinstance(failure, BaseException)
    delay = client.retry_delay(method, failure, attempt=1)
    if retried == "backoff":
        assert delay is not None
        assert 0 <= delay <= 0.2
    else:
        assert delay == retried
    assert client.retry_delay(method, failure, attempt=client.max_attempts) is None


def test_backoff_grows_and_is_capped() -> None:
    client = KubeClient(NoAuth("http://127.0.0.1:1"), retry_base=0.1, retry_cap=5, max_attempts=99)
    assert max(client.retry_delay("GET", ServerError(503), 4) or 0 for _ in range(200)) > 0.8
    assert all((client.retry_delay("GET", ServerError(503), 30) or 0) <= 5 for _ in range(200))
