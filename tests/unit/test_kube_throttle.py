"""The client-side rate limiter (client-go's token bucket) and the write fence, in front of every
request a KubeClient sends; time is a hand-turned clock, so the delays are exact."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from prometheus_client import REGISTRY

from aimd.kube.client import KubeClient
from aimd.kube.resources import CONFIG_MAPS
from aimd.kube.throttle import TokenBucketRateLimiter, token_bucket
from tests.support import NoAuth


class Time:
    """A clock that moves only when told; ``sleep`` records what it was asked and returns."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.slept.append(round(seconds, 6))


def test_a_burst_goes_at_once_then_requests_are_spaced_at_the_qps() -> None:
    time = Time()
    bucket = TokenBucketRateLimiter(20, 30, clock=time.clock, sleep=time.sleep)
    delays = [round(bucket.reserve(), 6) for _ in range(33)]
    assert delays[:30] == [0.0] * 30
    assert delays[30:] == [0.05, 0.1, 0.15], "each caller takes the next token, in order"
    time.now += 1.0  # 20 tokens regrow, 3 of them already promised
    assert [round(bucket.reserve(), 6) for _ in range(18)] == [0.0] * 17 + [0.05]


async def test_a_caller_cancelled_while_waiting_gives_its_token_back() -> None:
    time = Time()
    forever = asyncio.Event()

    async def sleep(seconds: float) -> None:
        await forever.wait()

    bucket = TokenBucketRateLimiter(10, 1, clock=time.clock, sleep=sleep)
    assert await bucket.wait() == 0.0
    waiter = asyncio.create_task(bucket.wait())
    await asyncio.sleep(0)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    assert round(bucket.reserve(), 6) == 0.1, "not 0.2: the cancelled reservation was returned"


def test_qps_of_zero_or_less_means_unlimited() -> None:
    assert token_bucket(0, 30) is None
    assert token_bucket(-1, 30) is None
    limiter = token_bucket(20, 30)
    assert limiter is not None
    assert (limiter.qps, limiter.burst) == (20, 30)


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, list[str]]]:
    """A plain local HTTP server that answers like the API server and logs what reached it."""
    seen: list[str] = []

    async def answer(request: web.Request) -> web.StreamResponse:
        seen.append(f"{request.method} {request.path_qs}")
        if request.query.get("watch"):
            response = web.StreamResponse()
            await response.prepare(request)
            await response.write(b'{"type":"BOOKMARK","object":{"metadata":{}}}\n')
            return response
        return web.json_response({"kind": "ConfigMap", "metadata": {"name": "x"}})

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", answer)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    try:
        yield f"http://127.0.0.1:{port}", seen
    finally:
        await runner.cleanup()


def throttled(verb: str, host: str) -> float:
    labels = {"verb": verb, "host": host}
    return REGISTRY.get_sample_value("rest_client_rate_limiter_duration_seconds_count", labels) or 0


async def test_every_request_and_watch_start_waits_for_the_bucket(
    server: tuple[str, list[str]],
) -> None:
    url, seen = server
    time = Time()
    bucket = TokenBucketRateLimiter(20, 2, clock=time.clock, sleep=time.sleep)
    async with KubeClient(NoAuth(url), rate_limiter=bucket) as client:
        before = {verb: throttled(verb, client.host) for verb in ("GET", "POST", "PATCH")}
        await client.get(CONFIG_MAPS, "x", "ns")
        await client.create(CONFIG_MAPS, {"metadata": {"name": "x"}}, "ns")
        await client.patch(CONFIG_MAPS, "x", {"data": {"a": "b"}}, "ns")
        async with client.stream(CONFIG_MAPS.path("ns"), params={"watch": "true"}) as response:
            await response.content.readline()
        await client.get(CONFIG_MAPS, "x", "ns")
        after = {verb: throttled(verb, client.host) for verb in ("GET", "POST", "PATCH")}
    assert time.slept == [0.05, 0.1, 0.15], "two at once (the burst), then one per 1/20 s"
    assert [line.split("?")[0] for line in seen] == [
        "GET /api/v1/namespaces/ns/configmaps/x",
        "POST /api/v1/namespaces/ns/configmaps",
        "PATCH /api/v1/namespaces/ns/configmaps/x",
        "GET /api/v1/namespaces/ns/configmaps",
        "GET /api/v1/namespaces/ns/configmaps/x",
    ]
    assert {verb: after[verb] - before[verb] for verb in after} == {"GET": 3, "POST": 1, "PATCH": 1}


async def test_the_fence_refuses_writes_before_they_leave(server: tuple[str, list[str]]) -> None:
    url, seen = server

    class Refused(Exception):
        pass

    def fence() -> None:
        raise Refused

    async with KubeClient(NoAuth(url)) as client:
        fenced = client.with_fence(fence)
        await fenced.get(CONFIG_MAPS, "x", "ns")
        with pytest.raises(Refused):
            await fenced.create(CONFIG_MAPS, {"metadata": {"name": "x"}}, "ns")
        with pytest.raises(Refused):
            await fenced.delete(CONFIG_MAPS, "x", "ns")
        await client.delete(CONFIG_MAPS, "x", "ns")  # the client it came from is not fenced
    assert [line.split(" ")[0] for line in seen] == ["GET", "DELETE"]
