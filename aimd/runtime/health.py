"""The manager's two small HTTP servers: ``/metrics`` on one port, ``/healthz`` and ``/readyz``
on another (kubebuilder's layout, so probes and ServiceMonitors carry over).

- ``/readyz``: 200 once every informer has synced (its first list is in the index), on leader
  and standbys alike — a standby with warm caches is ready to take over. 503 before.
- ``/healthz``: 200 unless some informer has not heard from the API server (no list, event,
  bookmark or successful watch start) for ``stall_timeout``; then 500, and the kubelet restarts
  the process. Watches reconnect on their own, so this only fires when that has kept failing.

Both answer with a line per check (``?verbose`` is implied), as kube-apiserver's probes do.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, generate_latest


class Watched(Protocol):
    """What the probes read from an informer."""

    @property
    def name(self) -> str: ...
    @property
    def synced(self) -> bool: ...
    @property
    def last_progress(self) -> float: ...


@dataclass
class Checks:
    informers: Callable[[], Sequence[Watched]]
    stall_timeout: float
    clock: Callable[[], float] = time.monotonic

    def ready(self) -> tuple[bool, list[str]]:
        lines = []
        ok = True
        for informer in self.informers():
            if informer.synced:
                lines.append(f"[+]informer {informer.name} synced")
            else:
                ok = False
                lines.append(f"[-]informer {informer.name} not synced")
        return ok, lines

    def healthy(self) -> tuple[bool, list[str]]:
        lines = ["[+]ping ok"]
        ok = True
        now = self.clock()
        for informer in self.informers():
            silent = now - informer.last_progress
            if silent > self.stall_timeout:
                ok = False
                lines.append(f"[-]watch {informer.name}: no progress for {silent:.0f}s")
            else:
                lines.append(f"[+]watch {informer.name} ok")
        return ok, lines


def _answer(ok: bool, lines: list[str], failure_status: int) -> web.Response:
    status = "ok" if ok else "failed"
    return web.Response(
        text="\n".join([*lines, f"{'healthz' if ok else 'check'} {status}"]) + "\n",
        status=200 if ok else failure_status,
    )


def health_app(checks: Checks) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return _answer(*checks.healthy(), failure_status=500)

    async def readyz(_: web.Request) -> web.Response:
        return _answer(*checks.ready(), failure_status=503)

    app = web.Application()
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readyz", readyz)
    return app


def metrics_app() -> web.Application:
    async def metrics(_: web.Request) -> web.Response:
        response = web.Response(body=generate_latest(REGISTRY))
        response.headers["Content-Type"] = CONTENT_TYPE_LATEST
        return response

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    return app


async def serve(
    app: web.Application, host: str, port: int, ssl_context: ssl.SSLContext | None = None
) -> web.AppRunner:
    """Starts ``app`` on ``host:port`` (port 0: any free port, see :func:`bound_port`), over
    TLS when given an ``ssl_context``."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, host, port, reuse_address=True, ssl_context=ssl_context)
    await site.start()
    return runner


def bound_port(runner: web.AppRunner) -> int:
    for address in runner.addresses:
        return int(address[1])
    raise RuntimeError("the server is not listening")
