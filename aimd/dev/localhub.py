"""A local server that speaks the part of the Hugging Face hub's API that `aimd download` uses.

There is no internet in a test run or an offline demo, so `aimd dev` and the tests serve models
from here: model info with file metadata at `/api/models/{repo}/revision/{rev}` and files at
`/{repo}/resolve/{rev}/{file}`, with the hub's headers (X-Repo-Commit, ETag, X-Linked-Etag and
X-Linked-Size for LFS files, Range), redirecting LFS downloads to a token-free path as the real
hub redirects to its CDN. It counts the bytes it serves, so a test can prove what a resumed
download fetched again, and it can require a token, throttle (429), slow down, stall or corrupt.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from aimd.dev.controlplane import free_port

DEMO_COMMIT = "0123456789abcdef0123456789abcdef01234567"
PIECE = 64 * 1024


def git_blob_id(data: bytes) -> str:
    return hashlib.sha1(f"blob {len(data)}\0".encode() + data).hexdigest()


def model_files(size_mib: float = 6) -> dict[str, bytes]:
    """A small model: a config (a plain git file) and two weight files (LFS on the hub)."""
    half = int(size_mib * (1 << 20)) // 2
    return {
        "config.json": json.dumps({"hidden_size": 64}).encode(),
        "model-00001-of-00002.safetensors": os.urandom(half + 12345),
        "model-00002-of-00002.safetensors": os.urandom(half),
    }


@dataclass
class Repo:
    files: dict[str, bytes]
    lfs: set[str]
    commit: str = DEMO_COMMIT

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())


@dataclass
class LocalHub:
    """The hub's file API over `repos`, with knobs for the failure cases."""

    repos: dict[str, Repo] = field(default_factory=dict)
    token: str | None = None
    served: int = 0
    piece_delay: float = 0.0
    stall_after: int | None = None
    corrupt: set[str] = field(default_factory=set)
    throttle: int = 0
    throttle_listing: int = 0
    redirects: int = 0
    throttled: int = 0
    retry_after: str = "1"
    url: str = ""

    def add(self, repo_id: str, files: dict[str, bytes], lfs: set[str] | None = None) -> Repo:
        """Adds a repo; by default every `.safetensors` file is an LFS file."""
        if lfs is None:
            lfs = {name for name in files if name.endswith(".safetensors")}
        self.repos[repo_id] = repo = Repo(files, lfs)
        return repo

    def add_model(self, repo_id: str = "org/model", size_mib: float = 6) -> Repo:
        """A small synthetic model (see :func:`model_files`) under `repo_id`."""
        return self.add(repo_id, model_files(size_mib))

    def _authorized(self, request: web.Request) -> web.Response | None:
        if self.token is None:
            return None
        if request.headers.get("Authorization") == f"Bearer {self.token}":
            return None
        return web.Response(
            status=401, headers={"X-Error-Message": "Invalid credentials in Authorization header"}
        )

    def _repo(self, request: web.Request) -> Repo | web.Response:
        repo = self.repos.get(f"{request.match_info['org']}/{request.match_info['name']}")
        if repo is None:
            return web.json_response(
                {"error": "Repository not found"},
                status=404,
                headers={"X-Error-Code": "RepoNotFound"},
            )
        if request.match_info.get("rev", "main") not in ("main", repo.commit):
            return web.json_response(
                {"error": "Invalid rev id"},
                status=404,
                headers={"X-Error-Code": "RevisionNotFound"},
            )
        return repo

    async def info(self, request: web.Request) -> web.StreamResponse:
        if self.throttle_listing > 0:
            self.throttle_listing -= 1
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        denied = self._authorized(request)
        repo = denied or self._repo(request)
        if isinstance(repo, web.Response):
            return repo
        siblings: list[dict[str, Any]] = []
        for name, data in repo.files.items():
            sibling: dict[str, Any] = {
                "rfilename": name,
                "size": len(data),
                "blobId": git_blob_id(data),
            }
            if name in repo.lfs:
                sha = hashlib.sha256(data).hexdigest()
                sibling["lfs"] = {"sha256": sha, "size": len(data), "pointerSize": 134}
            siblings.append(sibling)
        repo_id = f"{request.match_info['org']}/{request.match_info['name']}"
        return web.json_response(
            {
                "id": repo_id,
                "modelId": repo_id,
                "sha": repo.commit,
                "private": False,
                "siblings": siblings,
            }
        )

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, from_cdn=False)

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """Where the hub redirects LFS downloads: another host in reality, no token needed."""
        return await self._serve(request, from_cdn=True)

    async def _serve(self, request: web.Request, from_cdn: bool) -> web.StreamResponse:
        denied = None if from_cdn else self._authorized(request)
        repo = denied or self._repo(request)
        if isinstance(repo, web.Response):
            return repo
        if self.throttled < self.throttle:
            self.throttled += 1
            return web.Response(status=429, headers={"Retry-After": self.retry_after})
        name = request.match_info["path"]
        data = repo.files.get(name)
        if data is None:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound"})
        if name in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        headers = {"X-Repo-Commit": repo.commit, "Accept-Ranges": "bytes"}
        if name in repo.lfs:
            sha = hashlib.sha256(repo.files[name]).hexdigest()
            headers |= {
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{sha}"',
            }
        else:
            headers["ETag"] = f'"{git_blob_id(data)}"'
        if name in repo.lfs and not from_cdn and request.method == "GET":
            self.redirects += 1
            location = "/_" + request.path.replace("/resolve/", "/cdn/", 1)
            return web.Response(status=302, headers={**headers, "Location": location})
        start, end, status = 0, len(data), 200
        if "Range" in request.headers:
            first, _, last = request.headers["Range"].removeprefix("bytes=").partition("-")
            start, end, status = int(first), min(int(last) + 1, len(data)), 206
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
        headers["Content-Length"] = str(end - start)
        response = web.StreamResponse(status=status, headers=headers)
        await response.prepare(request)
        if request.method == "HEAD":
            return response
        position = start
        while position < end:
            if self.stall_after is not None and self.served >= self.stall_after:
                await asyncio.sleep(3600)
            piece = data[position : min(end, position + PIECE)]
            await response.write(piece)
            self.served += len(piece)
            position += len(piece)
            if self.piece_delay:
                await asyncio.sleep(self.piece_delay)
        await response.write_eof()
        return response


@contextlib.asynccontextmanager
async def serve_hub(port: int = 0, sock: socket.socket | None = None) -> AsyncIterator[LocalHub]:
    """A :class:`LocalHub` on ``127.0.0.1:port`` (0: a free port) while the context lasts, or on
    `sock`, a listening socket made elsewhere (inside the real node's network namespace, say)."""
    fake = LocalHub()
    app = web.Application()
    app.router.add_get("/api/models/{org}/{name}/revision/{rev}", fake.info)
    app.router.add_get("/api/models/{org}/{name}", fake.info)
    app.router.add_route("*", "/{org}/{name}/resolve/{rev}/{path:.+}", fake.resolve)
    app.router.add_get("/_/{org}/{name}/cdn/{rev}/{path:.+}", fake.cdn)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    if sock is None:
        port = port or free_port()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        fake.url = f"http://127.0.0.1:{port}"
    else:
        await web.SockSite(runner, sock).start()
        host, bound = sock.getsockname()[:2]
        fake.url = f"http://{host}:{bound}"
    try:
        yield fake
    finally:
        await runner.cleanup()
