"""A local server that speaks the part of the Hugging Face hub's API that `aimd download` uses.

There is no internet in a test run or an offline demo, so `aimd dev` and the tests serve models
from here: model info with file metadata at `/api/models/{repo}/revision/{rev}`, the file tree
that huggingface_hub's `snapshot_download` lists (`/api/models/{repo}/tree/{rev}`), and files at
`/{repo}/resolve/{rev}/{file}`, with the hub's headers (X-Repo-Commit, ETag, X-Linked-Etag and
X-Linked-Size for LFS files, Range), redirecting LFS downloads to a token-free path as the real
hub redirects to its CDN. It counts the bytes it serves, so a test can prove what a resumed
download fetched again, and the `/resolve` requests per file, so a test can prove a download asks
the resolver once per file; it can require a token, throttle (429), slow down, stall, corrupt, and
make its redirect targets expire as the hub's signed CDN URLs do: after `redirect_ttl` seconds,
saying when in the URL (`Expires=`, as CloudFront does) or not, or silently after
`redirect_uses` requests (403 then).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import socket
import time
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

from aimd.dev.controlplane import free_port

DEMO_COMMIT = "0123456789abcdef0123456789abcdef01234567"
PIECE = 64 * 1024
FAST_PIECE = 1 << 20


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
    _digests: dict[str, tuple[bytes, str, str]] = field(default_factory=dict, repr=False)

    @property
    def size(self) -> int:
        return sum(len(data) for data in self.files.values())

    def digests(self, name: str) -> tuple[str, str]:
        """(git blob id, sha256) of a file, computed once per content: hashing a large file on
        every ranged request made the hub, not the client, the cost of a download."""
        data = self.files[name]
        known = self._digests.get(name)
        if known is None or known[0] is not data:
            known = (data, git_blob_id(data), hashlib.sha256(data).hexdigest())
            self._digests[name] = known
        return known[1], known[2]


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
    resolves: Counter[str] = field(default_factory=Counter)
    resolve_heads: Counter[str] = field(default_factory=Counter)
    redirect_ttl: float | None = None
    advertise_expiry: bool = True
    redirect_uses: int | None = None
    expired: int = 0
    _issued: Counter[str] = field(default_factory=Counter)

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
            blob, sha = repo.digests(name)
            sibling: dict[str, Any] = {"rfilename": name, "size": len(data), "blobId": blob}
            if name in repo.lfs:
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

    async def tree(self, request: web.Request) -> web.StreamResponse:
        """The file listing huggingface_hub's ``snapshot_download`` asks for (one page)."""
        denied = self._authorized(request)
        repo = denied or self._repo(request)
        if isinstance(repo, web.Response):
            return repo
        entries: list[dict[str, Any]] = []
        for name, data in repo.files.items():
            blob, sha = repo.digests(name)
            entry: dict[str, Any] = {"type": "file", "oid": blob, "size": len(data), "path": name}
            if name in repo.lfs:
                entry["lfs"] = {"oid": sha, "size": len(data), "pointerSize": 134}
            entries.append(entry)
        return web.json_response(entries)

    async def resolve(self, request: web.Request) -> web.StreamResponse:
        calls = self.resolves if request.method == "GET" else self.resolve_heads
        calls[request.match_info["path"]] += 1
        return await self._serve(request, from_cdn=False)

    async def cdn(self, request: web.Request) -> web.StreamResponse:
        """Where the hub redirects LFS downloads: another host in reality, no token needed;
        refused once its URL has expired."""
        limit = request.query.get("Expires") or request.query.get("signature")
        ticket = request.query.get("ticket")
        if ticket is not None:
            self._issued[ticket] += 1
        expired = limit is not None and time.time() > float(limit)
        if expired or (ticket is not None and self._issued[ticket] > (self.redirect_uses or 0)):
            self.expired += 1
            return web.Response(status=403, text="Request has expired")
        return await self._serve(request, from_cdn=True)

    def _cdn_location(self, path: str) -> str:
        location = "/_" + path.replace("/resolve/", "/cdn/", 1)
        query = []
        if self.redirect_ttl is not None:
            expires = time.time() + self.redirect_ttl
            query.append(f"{'Expires' if self.advertise_expiry else 'signature'}={expires:.3f}")
        if self.redirect_uses is not None:
            query.append(f"ticket={self.redirects}")
        return f"{location}?{'&'.join(query)}" if query else location

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
        blob, sha = repo.digests(name)
        if name in repo.lfs:
            headers |= {
                "X-Linked-Etag": f'"{sha}"',
                "X-Linked-Size": str(len(data)),
                "ETag": f'"{sha}"',
            }
        else:
            headers["ETag"] = f'"{blob}"'
        if name in repo.lfs and not from_cdn and request.method == "GET":
            self.redirects += 1
            location = self._cdn_location(request.path)
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
        # Small pieces only when a knob needs the granularity; else larger writes, so the hub
        # is not what a benchmark measures.
        paced = self.piece_delay or self.stall_after is not None
        piece_size = PIECE if paced else FAST_PIECE
        view = memoryview(data)
        while position < end:
            if self.stall_after is not None and self.served >= self.stall_after:
                await asyncio.sleep(3600)
            piece = view[position : min(end, position + piece_size)]
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
    app.router.add_get("/api/models/{org}/{name}/tree/{rev}", fake.tree)
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
