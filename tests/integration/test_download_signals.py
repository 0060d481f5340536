"""`aimd download` and `aimd probe` stop within seconds on SIGTERM (E8), as real processes against
a real S3 protocol server (moto), and leave what they fetched resumable.

In its container the command is PID 1, where a signal without a handler is ignored: a deleted
Job's pod would wait out its whole grace period. A counting proxy in front of moto slows the bytes
down (so the signal lands mid-download) and counts what it served, so the resume is proven by
the bytes that crossed the wire the second time.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from aimd.download.command import download
from aimd.download.reasons import EXIT_CODES, Reason
from tests.integration.test_download_hf import args_for, last_json, recorded_bytes
from tests.integration.test_download_s3 import CREDENTIALS, s3_client, start_moto
from tests.support import eventually

PIECE = 64 * 1024
# Generous: the promise is "within seconds", the test only that it is not the grace period.
PROMPTLY = 15.0
HOP_BY_HOP = frozenset({"host", "content-length", "transfer-encoding", "connection"})


class CountingProxy:
    """Forwards to ``upstream``; counts the object bytes it serves (GETs of a key), optionally
    slowing them down, or holding listings until ``listing_allowed`` is set."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.served = 0
        self.piece_delay = 0.0
        self.listings = 0
        self.listing_allowed = asyncio.Event()
        self.listing_allowed.set()
        self.url = ""
        self._session: aiohttp.ClientSession | None = None

    async def handle(self, request: web.Request) -> web.StreamResponse:
        assert self._session is not None
        listing = "list-type" in request.query
        if listing:
            self.listings += 1
            await self.listing_allowed.wait()
        is_object = request.method == "GET" and not listing and request.path.count("/") >= 2
        headers = {k: v for k, v in request.headers.items() if k.lower() not in HOP_BY_HOP}
        body = await request.read()
        async with self._session.request(
            request.method,
            self.upstream + request.path_qs,
            headers=headers,
            data=body or None,
            allow_redirects=False,
        ) as upstream:
            passed = {k: v for k, v in upstream.headers.items() if k.lower() not in HOP_BY_HOP}
            response = web.StreamResponse(status=upstream.status, headers=passed)
            if upstream.content_length is not None:
                response.content_length = upstream.content_length
            await response.prepare(request)
            if request.method == "HEAD":
                return response
            with contextlib.suppress(ConnectionError, aiohttp.ClientConnectionResetError):
                async for piece in upstream.content.iter_chunked(PIECE):
                    await response.write(piece)
                    if is_object and upstream.status in (200, 206):
                        self.served += len(piece)
                    if is_object and self.piece_delay:
                        await asyncio.sleep(self.piece_delay)
                await response.write_eof()
            return response

    @contextlib.asynccontextmanager
    async def running(self, port: int) -> AsyncIterator[CountingProxy]:
        app = web.Application(client_max_size=1 << 30)
        app.router.add_route("*", "/{tail:.*}", self.handle)
        runner = web.AppRunner(app, shutdown_timeout=0.5)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        self.url = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession(auto_decompress=False) as self._session:
            try:
                yield self
            finally:
                await runner.cleanup()


@pytest.fixture(scope="module")
def moto() -> Iterator[str]:
    process, endpoint = start_moto()
    yield endpoint
    process.terminate()
    process.wait(10)


@pytest.fixture
async def proxy(moto: str, unused_tcp_port: int) -> AsyncIterator[CountingProxy]:
    async with CountingProxy(moto).running(unused_tcp_port) as running:
        yield running


@pytest.fixture
def s3_env(proxy: CountingProxy, monkeypatch: pytest.MonkeyPatch) -> CountingProxy:
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.url)
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    for name, value in CREDENTIALS.items():
        monkeypatch.setenv(name, value)
    for name in ("AIMD_MODEL_CACHE_NAME", "AIMD_MODEL_CACHE_NAMESPACE", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    return proxy


def upload(endpoint: str, bucket: str) -> dict[str, bytes]:
    s3 = s3_client(endpoint)
    s3.create_bucket(Bucket=bucket)
    files = {"config.json": b'{"hidden_size": 64}', "model.safetensors": os.urandom(12 << 20)}
    for name, data in files.items():
        s3.put_object(Bucket=bucket, Key=f"m/{name}", Body=data)
    return files


async def start(*args: str, termination_log: Path) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "aimd",
        *args,
        "--termination-log",
        str(termination_log),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )


async def stop(process: asyncio.subprocess.Process) -> tuple[float, str]:
    """SIGTERM; returns how long the process took to exit, and its stderr."""
    sent = time.monotonic()
    process.send_signal(signal.SIGTERM)
    try:
        async with asyncio.timeout(PROMPTLY * 4):
            _, err = await process.communicate()
    except TimeoutError:
        process.kill()
        raise
    return time.monotonic() - sent, err.decode()


async def test_sigterm_mid_download_exits_promptly_and_the_next_run_resumes(
    s3_env: CountingProxy, moto: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    files = await asyncio.to_thread(upload, moto, "signalled")
    total = sum(len(d) for d in files.values())
    target = tmp_path / "m"
    s3_env.piece_delay = 0.01
    process = await start(
        "download",
        "s3://signalled/m",
        "--target",
        str(target),
        "--chunk-size",
        "1",
        "--concurrency",
        "4",
        termination_log=tmp_path / "termination",
    )

    async def a_third_served() -> bool:
        return s3_env.served > total // 3

    await eventually(a_third_served, timeout=60, interval=0.05, what="a third of the model")
    took, err = await stop(process)
    assert process.returncode == EXIT_CODES[Reason.TERMINATED], err
    assert took < PROMPTLY, f"took {took:.1f}s to stop"
    assert "Traceback" not in err, err
    told = json.loads((tmp_path / "termination").read_text())
    assert told["reason"] == "Terminated"
    assert "resumes" in told["message"]
    assert not (target / "model.safetensors").exists(), "only whole, verified files are in place"

    on_disk = recorded_bytes(target)
    assert 0 < on_disk < total
    s3_env.piece_delay = 0
    s3_env.served = 0
    assert await download(args_for("s3://signalled/m", target)) == 0
    assert s3_env.served == total - on_disk, "bytes the first run recorded were fetched again"
    assert last_json(capsys)["fetchedBytes"] == total - on_disk
    for name, data in files.items():
        assert (target / name).read_bytes() == data


@pytest.mark.parametrize("command", ["probe", "download"])
async def test_sigterm_while_listing_exits_promptly(
    s3_env: CountingProxy, moto: str, tmp_path: Path, command: str
) -> None:
    """Listing runs in a thread nothing can cancel (boto3 waits up to its read timeout): the
    process still ends at once, and says why."""
    await asyncio.to_thread(upload, moto, f"held-{command}")
    s3_env.listing_allowed.clear()
    extra = ["--target", str(tmp_path / "m")] if command == "download" else []
    process = await start(
        command, f"s3://held-{command}/m", *extra, termination_log=tmp_path / "termination"
    )

    async def listing() -> bool:
        return s3_env.listings > 0

    await eventually(listing, timeout=60, interval=0.05, what="the listing request")
    took, err = await stop(process)
    assert process.returncode == EXIT_CODES[Reason.TERMINATED], err
    assert took < PROMPTLY, f"took {took:.1f}s to stop"
    assert json.loads((tmp_path / "termination").read_text())["reason"] == "Terminated"
